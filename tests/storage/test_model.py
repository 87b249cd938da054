"""Property test: the store and a plain in-memory model, driven by the same random operations
(save with and without truncation, snapshot, compact, install_snapshot, reopen), agree on
everything the core can observe."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from graft.raft.types import Entry, EntryKind, HardState, SnapshotMeta
from graft.storage import Storage

OPTIONS = {"segment_bytes": 4096, "cache_entries": 5, "keep_snapshots": 2}


@dataclass
class ModelLog:
    """The obvious implementation: a dict of entries above a base, and a list of snapshots."""

    entries: dict[int, Entry] = field(default_factory=dict)
    base: tuple[int, int] = (0, 0)
    hard_state: HardState = field(default_factory=HardState)
    snapshots: list[tuple[SnapshotMeta, bytes]] = field(default_factory=list)  # newest last

    @property
    def first(self) -> int:
        return self.base[0] + 1

    @property
    def last(self) -> int:
        return max(self.entries, default=self.base[0])

    def term(self, index: int) -> int:
        return self.base[1] if index == self.base[0] else self.entries[index].term

    def save(self, hs: HardState | None, new: list[Entry]) -> None:
        if hs is not None:
            self.hard_state = hs
        if new:
            self.entries = {i: e for i, e in self.entries.items() if i < new[0].index}
            self.entries.update((e.index, e) for e in new)

    def compact(self, index: int) -> None:
        if index > self.base[0]:
            self.base = (index, self.term(index))
            self.entries = {i: e for i, e in self.entries.items() if i > index}

    def add_snapshot(self, meta: SnapshotMeta, state: bytes) -> None:
        self.snapshots = [s for s in self.snapshots if s[0] != meta] + [(meta, state)]
        self.snapshots = self.snapshots[-2:]

    def install(self, meta: SnapshotMeta) -> None:
        if meta.index <= self.base[0]:
            return
        if meta.index <= self.last and self.term(meta.index) == meta.term:
            self.compact(meta.index)
        else:
            self.entries, self.base = {}, (meta.index, meta.term)


class StoreMatchesModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory(prefix="graft-model-")
        self.path = Path(self.tmp.name)
        self.store = Storage.open(self.path, **OPTIONS)
        self.model = ModelLog()
        self.term = 1

    def teardown(self) -> None:
        self.store.close()
        self.tmp.cleanup()

    @rule(
        back=st.integers(0, 12),
        n=st.integers(0, 40),
        bump=st.booleans(),
        size=st.integers(0, 300),
        with_hs=st.booleans(),
    )
    def save(self, back: int, n: int, bump: bool, size: int, with_hs: bool) -> None:
        # entries a snapshot covers are committed: a leader never makes us replace them (§5.4)
        newest = self.model.snapshots[-1][0].index if self.model.snapshots else 0
        lo = max(self.model.first, self.model.last + 1 - back, newest + 1)
        self.term += bump
        new = [
            Entry(i, self.term, EntryKind(i % 3), bytes([i % 251]) * ((size + i) % 301))
            for i in range(lo, lo + n)
        ]
        hs = HardState(self.term, f"n{self.term % 3}", self.model.base[0]) if with_hs else None
        self.store.save(hs, new)
        self.model.save(hs, new)

    @precondition(lambda self: self.model.last > self.model.base[0])
    @rule(data=st.data(), state=st.binary(max_size=200))
    def snapshot_and_compact(self, data: st.DataObject, state: bytes) -> None:
        newest = self.model.snapshots[-1][0].index if self.model.snapshots else 0
        lo = max(newest, self.model.first)
        if lo > self.model.last:
            return
        index = data.draw(st.integers(lo, self.model.last))
        meta = SnapshotMeta(index, self.model.term(index))
        writer = self.store.create_snapshot(meta, app_meta=b"app%d" % index)
        for i in range(0, len(state), 64):
            writer.write(state[i : i + 64])
        writer.commit()
        self.model.add_snapshot(meta, state)

        keep = data.draw(st.integers(0, index - self.model.base[0]))
        self.store.compact(index - keep)
        self.model.compact(index - keep)

    @rule(ahead=st.integers(-5, 30), term_bump=st.integers(0, 2))
    def install_snapshot(self, ahead: int, term_bump: int) -> None:
        newest = self.model.snapshots[-1][0].index if self.model.snapshots else 0
        index = max(newest, self.model.base[0], self.model.last + ahead, 1)
        in_log = self.model.first <= index <= self.model.last
        term = self.model.term(index) if in_log and term_bump == 0 else self.term + term_bump
        if index == self.model.base[0]:
            term = self.model.base[1]  # a committed index has one term only (§5.4)
        self.term = max(self.term, term)
        meta = SnapshotMeta(index, term)
        state = b"leader state %d" % index
        writer = self.store.create_snapshot(meta)
        writer.write(state)
        snap = writer.commit(expected_checksum="sha256:" + hashlib.sha256(state).hexdigest())
        self.model.add_snapshot(meta, state)
        self.store.install_snapshot(snap)
        self.model.install(meta)

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = Storage.open(self.path, **OPTIONS)

    @invariant()
    def same_log(self) -> None:
        m, s = self.model, self.store
        assert (s.first_index(), s.last_index()) == (m.first, m.last)
        assert s.hard_state == m.hard_state
        assert [s.term(i) for i in range(m.base[0], m.last + 1)] == [
            m.term(i) for i in range(m.base[0], m.last + 1)
        ]
        assert s.entries(m.first, m.last + 1) == [m.entries[i] for i in range(m.first, m.last + 1)]
        if m.last >= m.first:
            got = s.entries(m.first, m.last + 1, max_bytes=500)
            assert got and got == [m.entries[i] for i in range(m.first, m.first + len(got))]

    @invariant()
    def same_snapshot(self) -> None:
        snap = self.store.snapshot()
        if not self.model.snapshots:
            assert snap is None
            return
        meta, state = self.model.snapshots[-1]
        assert snap is not None and snap.meta == meta and snap.size == len(state)
        with self.store.open_snapshot(snap) as stream:
            assert stream.read() == state


StoreMatchesModel.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestStoreMatchesModel = StoreMatchesModel.TestCase
