"""Kill a writer process with SIGKILL at random moments; every acknowledged save survives.

The writer (crash_writer.py) reports a save before calling it and again once it returned.
After each kill the store is reopened and must hold every acknowledged save intact, plus
either all of the save in flight or none of it. Every third round also simulates the
power-failure case that SIGKILL alone cannot produce: the bytes written after the last
acknowledged save (not yet covered by an fdatasync) are partly lost.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from graft.raft.types import HardState
from graft.storage import Storage

from .helpers import payload

ROOT = Path(__file__).resolve().parents[2]
WRITER = Path(__file__).resolve().parent / "crash_writer.py"
ROUNDS = 36


@dataclass
class Model:
    """What the writer was told is durable: terms of entries 1..last, and the hard state."""

    terms: list[int] = field(default_factory=list)
    hard_state: HardState = field(default_factory=HardState)
    compacted: int = 0  # the highest compaction point that may have happened

    def with_save(self, lo: int, hi: int, term: int) -> list[int]:
        return self.terms[: lo - 1] + [term] * (hi - lo)


@dataclass
class Round:
    inflight: tuple[int, int, int, int] | None = None  # lo, hi, term, commit
    acked_segment: str = ""
    acked_size: int = 0
    acks: int = 0
    # a compaction fsyncs its record before deleting segments; while one is in flight we
    # cannot tell which of its bytes are durable, so no bytes are "lost" that round
    compacting: bool = False


def run_writer(path: Path, seed: int, model: Model, rng: random.Random) -> Round:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-S", str(WRITER), str(path), str(seed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    state = Round()
    wanted = rng.choice((1, 3, 10, 40))
    try:
        for line in proc.stdout:
            handle(line.decode().split(), model, state)
            if state.acks >= wanted and proc.returncode is None:
                time.sleep(rng.uniform(0, 0.004))  # land the kill anywhere in the next save
                proc.send_signal(signal.SIGKILL)
                proc.returncode = -9
        # lines already in the pipe when the kill landed are acknowledgements too
    finally:
        proc.kill()
        proc.wait()
    assert state.acks >= wanted, "the writer died by itself"
    return state


def handle(words: list[str], model: Model, state: Round) -> None:
    if words[0] == "B":
        lo, hi, term, commit = map(int, words[1:])
        state.inflight = (lo, hi, term, commit)
    elif words[0] == "A":
        assert state.inflight is not None
        lo, hi, term, commit = state.inflight
        model.terms = model.with_save(lo, hi, term)
        model.hard_state = HardState(term, "w", commit)
        state.inflight = None
        state.acked_segment, state.acked_size = words[1], int(words[2])
        state.acks += 1
    elif words[0] == "S":
        model.compacted = max(model.compacted, int(words[1]) - 20)
        state.compacting = True
    elif words[0] == "C":
        state.acked_segment, state.acked_size = words[2], int(words[3])
        state.compacting = False


def lose_unsynced_bytes(path: Path, state: Round, rng: random.Random) -> None:
    """Cut the newest segment somewhere after the last acknowledged byte."""
    newest = sorted((path / "wal").glob("*.wal"))[-1]
    size = newest.stat().st_size
    floor = state.acked_size if newest.name == state.acked_segment else 0
    if size > floor:
        with newest.open("r+b") as f:
            f.truncate(rng.randint(floor, size - 1))


def check(path: Path, model: Model, state: Round) -> None:
    """The store holds the model, or the model plus the whole save in flight; adopt it."""
    candidates = [(model.terms, model.hard_state)]
    if state.inflight is not None:
        lo, hi, term, commit = state.inflight
        candidates.append((model.with_save(lo, hi, term), HardState(term, "w", commit)))

    with Storage.open(path, segment_bytes=64 << 10) as store:
        first, last = store.first_index(), store.last_index()
        assert first - 1 <= model.compacted
        got = store.entries(first, last + 1)
        assert [e.index for e in got] == list(range(first, last + 1))
        assert all(e.data == payload(e.index, e.term) for e in got), "an entry's bytes changed"
        found = [
            (terms, hs)
            for terms, hs in candidates
            if len(terms) == last
            and [e.term for e in got] == terms[first - 1 :]
            and store.hard_state == hs
        ]
        assert found, f"store {first}..{last} {store.hard_state} matches no durable state"
    model.terms, model.hard_state = found[-1]


def test_sigkill_never_loses_an_acknowledged_save(tmp_path: Path) -> None:
    rng = random.Random(20240611)
    model = Model()
    total = 0
    for round_no in range(ROUNDS):
        state = run_writer(tmp_path, rng.randrange(1 << 30), model, rng)
        total += state.acks
        if round_no % 3 == 2 and not state.compacting:
            lose_unsynced_bytes(tmp_path, state, rng)
        check(tmp_path, model, state)
    assert total >= ROUNDS and len(model.terms) > 500
