"""A small deterministic harness for the scenario tests: pure cores on an in-memory network.

Each node has a host that follows the ordering rules of graft/raft/ready.py against an
in-memory "disk" (hard state, entries, snapshot) and a state machine that is a list of
applied commands. Messages wait in one FIFO queue; `deliver()` runs it until it is empty.
Links can be cut (`isolate`, `cut`) and restored (`heal`). Nothing here is random except the
election jitter, which comes from a seeded `random.Random`.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from graft.raft.core import CoreConfig, RaftCore
from graft.raft.messages import Message
from graft.raft.ready import ReadState, Ready, Role
from graft.raft.types import Entry, EntryKind, HardState, Member, Membership, SnapshotMeta


def members(*ids: str) -> Membership:
    return Membership(voters=tuple(Member(i) for i in ids))


@dataclass
class Disk:
    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    snapshot: SnapshotMeta | None = None
    snapshot_data: tuple[bytes, ...] = ()

    def save(self, ready: Ready) -> None:
        if ready.hard_state is not None:
            self.hard_state = ready.hard_state
        if ready.entries:
            first = ready.entries[0].index
            self.entries = [e for e in self.entries if e.index < first]
            self.entries.extend(ready.entries)


class Host:
    """Drives one core the way the node runtime does, with an in-memory disk and FSM."""

    def __init__(
        self, node_id: str, membership: Membership, seed: int, **options: int | bool
    ) -> None:
        self.id = node_id
        self.bootstrap = membership
        self.seed = seed
        self.options = options
        self.disk = Disk()
        self.applied: list[bytes] = []
        self.applied_index = 0
        self.reads: list[ReadState] = []
        self.dropped_reads: list[int] = []
        self.core = self._boot()

    def _boot(self) -> RaftCore:
        config = CoreConfig(self.id, **self.options)  # type: ignore[arg-type]
        self.applied = list(self.disk.snapshot_data)
        self.applied_index = self.disk.snapshot.index if self.disk.snapshot else 0
        return RaftCore(
            config,
            hard_state=self.disk.hard_state,
            membership=self.bootstrap,
            snapshot=self.disk.snapshot,
            entries=list(self.disk.entries),
            jitter=random.Random(self.seed),
            applied=self.applied_index,
        )

    def restart(self) -> None:
        """Crash and come back with only what was persisted."""
        self.seed += 1
        self.core = self._boot()

    def process(self, snapshot_source: Callable[[str], Host]) -> list[Message]:
        sent: list[Message] = []
        while self.core.has_ready():
            ready = self.core.ready()
            if ready.snapshot is not None:
                source = snapshot_source(ready.leader or "")
                self.disk.snapshot = ready.snapshot
                self.disk.snapshot_data = source.snapshot_payload(ready.snapshot.index)
                meta = ready.snapshot
                stored = self.disk.entries
                holds = any(e.index == meta.index and e.term == meta.term for e in stored)
                self.disk.entries = [e for e in stored if holds and e.index > meta.index]
                self.applied = list(self.disk.snapshot_data)
                self.applied_index = ready.snapshot.index
            self.disk.save(ready)
            sent.extend(ready.messages)
            for entry in ready.committed:
                assert entry.index == self.applied_index + 1
                self.applied_index = entry.index
                if entry.kind is EntryKind.COMMAND:
                    self.applied.append(entry.data)
            self.reads.extend(ready.reads)
            self.dropped_reads.extend(ready.dropped_reads)
            self.core.advance(ready)
        return sent

    def snapshot_payload(self, index: int) -> tuple[bytes, ...]:
        assert self.disk.snapshot is not None and self.disk.snapshot.index == index
        return self.disk.snapshot_data

    def take_snapshot(self, keep: int = 0) -> SnapshotMeta:
        meta = self.core.snapshot_meta(self.applied_index)
        self.disk.snapshot = meta
        self.disk.snapshot_data = tuple(self.applied)
        self.disk.entries = [e for e in self.disk.entries if e.index > meta.index - keep]
        self.core.compact(meta, keep)
        return meta


class Cluster:
    def __init__(self, *ids: str, seed: int = 1, **options: int | bool) -> None:
        self.membership = members(*ids)
        self.hosts = {
            node_id: Host(node_id, self.membership, seed * 1000 + n, **options)
            for n, node_id in enumerate(ids)
        }
        self.queue: deque[Message] = deque()
        self.cut_links: set[tuple[str, str]] = set()
        self.down: set[str] = set()
        # return None to drop a message, or the message (possibly rewritten) to deliver it
        self.rewrite: Callable[[Message], Message | None] | None = None

    def add_host(self, node_id: str, **options: int | bool) -> Host:
        host = Host(node_id, self.membership, 7777 + len(self.hosts), **options)
        self.hosts[node_id] = host
        return host

    def core(self, node_id: str) -> RaftCore:
        return self.hosts[node_id].core

    def isolate(self, node_id: str) -> None:
        for other in self.hosts:
            if other != node_id:
                self.cut(node_id, other)

    def cut(self, a: str, b: str) -> None:
        self.cut_links |= {(a, b), (b, a)}

    def heal(self) -> None:
        self.cut_links.clear()

    def _process_all(self) -> None:
        for node_id, host in self.hosts.items():
            if node_id not in self.down:
                self.queue.extend(host.process(self.hosts.__getitem__))

    def deliver(self, limit: int = 100_000) -> None:
        """Deliver messages until none is left (links that are cut lose theirs)."""
        self._process_all()
        for _ in range(limit):
            if not self.queue:
                return
            msg = self.queue.popleft()
            if (msg.src, msg.dst) in self.cut_links or msg.dst in self.down:
                continue
            if self.rewrite is not None:
                rewritten = self.rewrite(msg)
                if rewritten is None:
                    continue
                msg = rewritten
            host = self.hosts.get(msg.dst)
            if host is None:
                continue
            host.core.step(msg)
            self.queue.extend(host.process(self.hosts.__getitem__))
        raise AssertionError("messages kept flowing: the cluster did not settle")

    def tick(self, times: int = 1, nodes: Iterable[str] | None = None) -> None:
        for _ in range(times):
            for node_id in nodes if nodes is not None else list(self.hosts):
                if node_id not in self.down:
                    self.hosts[node_id].core.tick()
            self.deliver()

    def leaders(self) -> list[str]:
        return [
            node_id
            for node_id, host in self.hosts.items()
            if node_id not in self.down and host.core.role is Role.LEADER
        ]

    def elect(self, node_id: str) -> None:
        """Let `node_id` time out first and win, as if the others' leader had gone quiet.

        A first attempt may only teach it a newer term (a refused pre-vote); then it retries.
        """
        for _ in range(3):
            for other, host in self.hosts.items():
                if other != node_id and host.core.role is not Role.LEADER:
                    host.core.election_elapsed = max(host.core.election_elapsed, 10**3)
            self.hosts[node_id].core.election_elapsed = 10**6
            self.tick(1, [node_id])
            if self.core(node_id).role is Role.LEADER:
                return
        raise AssertionError(f"{node_id} did not win: {self.core(node_id).role}")

    def run_until_leader(self, max_ticks: int = 500) -> str:
        for _ in range(max_ticks):
            found = self.leaders()
            if len(found) == 1:
                return found[0]
            self.tick()
        raise AssertionError(f"no single leader after {max_ticks} ticks: {self.leaders()}")
