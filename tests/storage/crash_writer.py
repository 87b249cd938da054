"""The writer that test_crash.py kills: appends batches forever and reports each one.

Run as `python -S crash_writer.py DIR SEED` with the repository on PYTHONPATH. Protocol on
stdout, one line per event, written with os.write so nothing waits in a buffer:

    B lo hi term commit        about to save entries [lo, hi) of `term`, hard state commit
    A segment size             that save() returned; the newest segment now has `size` bytes
    S index                    about to snapshot at `index` and compact below it
    C index segment size       compact(index) returned; the newest segment's size after it
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

from graft.raft.types import HardState, SnapshotMeta
from graft.storage import Storage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import make  # noqa: E402


def say(line: str) -> None:
    os.write(1, line.encode() + b"\n")


def main(path: Path, seed: int) -> None:
    rng = random.Random(seed)
    store = Storage.open(path, segment_bytes=64 << 10, cache_entries=64)
    term = max(store.hard_state.term, 1)
    while True:
        first, last = store.first_index(), store.last_index()
        if last - first > 30 and rng.random() < 0.15:
            lo, term = rng.randint(last - 20, last), term + 1  # a truncating save
        else:
            lo = last + 1
        hi = lo + rng.choice((1, 2, 10, 50, 200))
        commit = max(0, first - 1, lo - 6)
        say(f"B {lo} {hi} {term} {commit}")
        store.save(HardState(term, "w", commit), make(lo, hi, term))
        say(f"A {newest_segment(store)}")

        newest = store.snapshot()
        index = hi - 100
        if rng.random() < 0.04 and index > (newest.meta.index if newest else 100):
            say(f"S {index}")
            with store.create_snapshot(SnapshotMeta(index, store.term(index))) as writer:
                writer.write(b"state %d" % index)
                writer.commit()
            store.compact(index - 20)
            say(f"C {index - 20} {newest_segment(store)}")


def newest_segment(store: Storage) -> str:
    """'name size' of the newest segment: everything up to there is durable."""
    seg = store._log._segments[next(reversed(store._log._segments))]
    return f"{seg.path.name} {seg.size}"


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
