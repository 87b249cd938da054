"""Peer codec speed: microseconds to encode and to decode one message, medians of runs.

Run: .venv/bin/python bench/codec_bench.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from graft.raft.messages import AppendEntries, AppendEntriesResponse, RequestVote
from graft.raft.types import Entry, EntryKind, Member, Membership, SnapshotMeta
from graft.transport.codec import Frame, SnapshotChunk, decode, encode
from graft.transport.framing import FrameDecoder, encode_frame

RUNS = 11


def per_call_us(fn: Callable[[], object], target_seconds: float = 0.1) -> tuple[float, float]:
    """Median and best over RUNS of the mean time of one call, in microseconds.

    The best run is printed too because a shared machine inflates medians; it is the
    figure closest to what the code costs when it has a core to itself.
    """
    number = 1
    while True:  # calibrate so that one run lasts about target_seconds
        start = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed > target_seconds / 10:
            break
        number *= 2
    number = max(1, int(number * target_seconds / elapsed))

    results = []
    for _ in range(RUNS):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        results.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(results), min(results)


def append_entries(count: int, size: int) -> AppendEntries:
    entries = tuple(Entry(1000 + i, 7, EntryKind.COMMAND, bytes(size)) for i in range(count))
    return AppendEntries(7, "turing", "ritchie", 999, 7, entries, 998, 0)


def main() -> None:
    membership = Membership((Member("turing", "h:1"), Member("ritchie", "h:2")), ())
    cases: list[tuple[str, Frame]] = [
        ("AppendEntries 64 x 100 B", append_entries(64, 100)),
        ("AppendEntries 1 x 100 B", append_entries(1, 100)),
        ("AppendEntries heartbeat", append_entries(0, 0)),
        ("AppendEntriesResponse", AppendEntriesResponse(7, "ritchie", "turing", True, 1063)),
        ("RequestVote", RequestVote(8, "turing", "ritchie", 1063, 7)),
        (
            "SnapshotChunk 64 KiB",
            SnapshotChunk(
                7,
                SnapshotMeta(5000, 7, membership),
                1 << 20,
                "ab" * 32,
                b"{}",
                0,
                bytes(65536),
                False,
            ),
        ),
    ]
    print(f"median (best) of {RUNS} runs, microseconds per message")
    print(f"{'frame':26} {'bytes':>6} {'encode':>14} {'decode':>14} {'both':>14}")
    for name, frame in cases:
        body = encode(frame)
        assert decode(body) == frame
        enc = per_call_us(lambda f=frame: encode(f))  # type: ignore[misc]
        dec = per_call_us(lambda b=body: decode(b))  # type: ignore[misc]
        both = (enc[0] + dec[0], enc[1] + dec[1])
        cells = " ".join(f"{m:7.2f} ({b:5.1f})" for m, b in (enc, dec, both))
        print(f"{name:26} {len(body):6d} {cells}")

    stream = encode_frame(encode(append_entries(64, 100))) * 100
    decoder = FrameDecoder(64 << 20)

    def split() -> None:
        for i in range(0, len(stream), 65536):  # as socket reads of 64 KiB would arrive
            decoder.feed(stream[i : i + 65536])
            for _ in decoder:
                pass

    median, best = per_call_us(split)
    print(
        f"framing, 64 KiB reads into 7.8 KB frames: {median / 100:.2f} ({best / 100:.2f}) us/frame"
    )


if __name__ == "__main__":
    main()
