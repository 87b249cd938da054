"""A simulated host: disk, state machine and the Ready loop of graft/raft/ready.py.

The disk keeps exactly what the host was told to persist (hard state, entries, the newest
snapshot with the state machine it captured); a crash loses everything else, including the
state machine, which a restart rebuilds from the snapshot and the committed log, as the node
runtime does (DESIGN §3). The state machine is a digest chained over the applied commands.

Fault switches plant host bugs for the tests that show the simulator catching them:
`forget_vote` persists the hard state without the vote; `apply_uncommitted` applies entries
as soon as they are persisted instead of when they are committed.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from graft.raft.core import CoreConfig, RaftCore
from graft.raft.messages import InstallSnapshot, Message
from graft.raft.ready import ReadState, Ready
from graft.raft.types import Entry, EntryKind, HardState, Membership, SnapshotMeta

from .checker import HOST_CONTRACT, Checker, Violation
from .network import Envelope

CoreFactory = Callable[..., RaftCore]


@dataclass(slots=True)
class Fsm:
    index: int = 0
    digest: int = 0
    commands: int = 0

    def apply(self, entry: Entry) -> None:
        if entry.kind is EntryKind.COMMAND:
            self.digest = zlib.crc32(entry.data, self.digest ^ entry.index)
            self.commands += 1
        self.index = entry.index

    def state(self) -> tuple[int, int, int]:
        return (self.index, self.digest, self.commands)


@dataclass
class Disk:
    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    snapshot: SnapshotMeta | None = None
    snapshot_state: tuple[int, int, int] = (0, 0, 0)

    def append(self, entries: tuple[Entry, ...]) -> None:
        stored = self.entries
        first = entries[0].index
        if stored and first <= stored[-1].index:
            cut = first - stored[0].index
            if cut < 0:
                raise Violation(HOST_CONTRACT, f"entry {first} before the stored log")
            del stored[cut:]
        elif stored and first != stored[-1].index + 1:
            raise Violation(HOST_CONTRACT, f"gap: stored up to {stored[-1].index}, got {first}")
        stored.extend(entries)


@dataclass
class HostFaults:
    forget_vote: bool = False
    apply_uncommitted: bool = False


class SimHost:
    def __init__(
        self,
        node_id: str,
        bootstrap: Membership,
        config: CoreConfig,
        rng: random.Random,
        checker: Checker,
        factory: CoreFactory = RaftCore,
        faults: HostFaults | None = None,
    ) -> None:
        self.id = node_id
        self.bootstrap = bootstrap
        self.config = config
        self.rng = rng
        self.checker = checker
        self.factory = factory
        self.faults = faults or HostFaults()
        self.disk = Disk()
        self.fsm = Fsm()
        self.stash: dict[int, tuple[int, int, int]] = {}  # snapshot payloads received
        self.core: RaftCore | None = None
        self.released: list[ReadState] = []
        # a leader's Ready that was sent but is not yet persisted (a slow disk), with the
        # term of the entry before its first entry
        self.persisting: tuple[Ready, int | None] | None = None
        self.dropped: list[int] = []
        self.restarts = 0
        self.start()

    @property
    def up(self) -> bool:
        return self.core is not None

    def start(self) -> None:
        disk = self.disk
        self.fsm = Fsm(*disk.snapshot_state)
        self.stash = {}
        self.core = self.factory(
            self.config,
            hard_state=disk.hard_state,
            membership=self.bootstrap,
            snapshot=disk.snapshot,
            entries=list(disk.entries),
            jitter=random.Random(self.rng.random()),
            applied=self.fsm.index,
        )
        self.checker.forget_commit(self.id)

    def crash(self) -> None:
        self.core = None
        self.persisting = None  # never reached the disk
        self.restarts += 1

    # -- the Ready loop ----------------------------------------------------------------------

    def process(
        self,
        send: Callable[[Envelope], None],
        crash_mid_ready: bool = False,
        slow_disk: bool = False,
    ) -> bool:
        """Drain the core's Readies. Returns False if the node crashed half-way (leader only).

        With `slow_disk`, a leader's Ready whose messages may go first stays "being
        persisted" (sent, not yet on disk or advanced) until a later call without it. Until
        then the core goes on stepping and ticking, and the host sends what
        `leader_messages` allows, as the node runtime does while its fsync runs.
        """
        core = self.core
        assert core is not None
        if self.persisting is not None:
            ready, prev_term = self.persisting
            for msg in core.leader_messages(ready.term):
                send(self._envelope(msg))
            if slow_disk:
                return True
            self.persisting = None
            self._complete(ready, prev_term, None)

        while core.has_ready():
            ready = core.ready()
            # Check before acting: a leader may send and crash before the next checkpoint.
            self.checker.check_node(self.id, core)
            if ready.snapshot is not None:
                self._install(ready.snapshot)
            if ready.send_first and crash_mid_ready:
                # thesis §10.2.1: a leader may send before its entries are durable; crash in
                # between to show that nothing depends on them yet.
                self._send(ready, send)
                self.crash()
                return False
            prev_term = core.log.term_at(ready.entries[0].index - 1) if ready.entries else None
            if ready.send_first and slow_disk:
                self._send(ready, send)
                self.persisting = (ready, prev_term)
                return True
            self._complete(ready, prev_term, send)
        return True

    def _complete(
        self, ready: Ready, prev_term: int | None, send: Callable[[Envelope], None] | None
    ) -> None:
        """Steps 2 to 6 of graft/raft/ready.py; step 3 only with `send` (None: already sent)."""
        core = self.core
        assert core is not None
        self._persist(ready, prev_term)
        if send is not None:
            self._send(ready, send)
        self._apply(ready)
        self.released.extend(ready.reads)
        self.dropped.extend(ready.dropped_reads)
        core.advance(ready)

    def _install(self, meta: SnapshotMeta) -> None:
        state = self.stash.get(meta.index)
        if state is None:
            raise Violation(HOST_CONTRACT, f"{self.id} installs snapshot {meta.index} unseen")
        disk = self.disk
        disk.snapshot = meta
        disk.snapshot_state = state
        # ready.py step 1 (§7): keep what follows the snapshot only if the stored log holds
        # the snapshot's last entry itself.
        holds = [e for e in disk.entries if e.index == meta.index and e.term == meta.term]
        disk.entries = [e for e in disk.entries if e.index > meta.index] if holds else []
        self.fsm = Fsm(*state)
        self.checker.check_digest(self.id, meta.index, self.fsm.digest)

    def _persist(self, ready: Ready, prev_term: int | None) -> None:
        disk = self.disk
        if ready.hard_state is not None:
            hard_state = ready.hard_state
            if self.faults.forget_vote:
                hard_state = HardState(hard_state.term, None, hard_state.commit)
            disk.hard_state = hard_state
        if ready.entries:
            disk.append(ready.entries)
            self.checker.on_persist(self.id, ready.entries, prev_term)

    def _send(self, ready: Ready, send: Callable[[Envelope], None]) -> None:
        for msg in ready.messages:
            send(self._envelope(msg))

    def _envelope(self, msg: Message) -> Envelope:
        if isinstance(msg, InstallSnapshot):
            if self.disk.snapshot != msg.meta:
                raise Violation(HOST_CONTRACT, f"{self.id} asked to send unknown {msg.meta}")
            return Envelope(msg, self.disk.snapshot_state)
        return Envelope(msg)

    def _apply(self, ready: Ready) -> None:
        fsm = self.fsm
        entries = ready.entries if self.faults.apply_uncommitted else ready.committed
        for entry in entries:
            if self.faults.apply_uncommitted and entry.index != fsm.index + 1:
                continue
            if entry.index != fsm.index + 1:
                raise Violation(
                    HOST_CONTRACT,
                    f"{self.id} handed entry {entry.index} with state machine at {fsm.index}",
                )
            fsm.apply(entry)
            self.checker.on_apply(self.id, entry, fsm.digest)

    # -- host actions ------------------------------------------------------------------------

    def receive(self, envelope: Envelope) -> None:
        core = self.core
        assert core is not None
        if envelope.payload is not None:
            msg = envelope.msg
            assert isinstance(msg, InstallSnapshot)
            self.stash[msg.meta.index] = envelope.payload
        core.step(envelope.msg)

    def take_snapshot(self, keep: int) -> bool:
        core = self.core
        assert core is not None
        fsm = self.fsm
        base = self.disk.snapshot.index if self.disk.snapshot else 0
        if fsm.index <= base or fsm.index != core.log.applied:
            return False
        meta = core.snapshot_meta(fsm.index)
        self.disk.snapshot = meta
        self.disk.snapshot_state = fsm.state()
        self.disk.entries = [e for e in self.disk.entries if e.index > meta.index - keep]
        core.compact(meta, keep)
        return True
