"""The runtime: one asyncio loop that drives the Raft core and everything around it.

The loop owns the core. Inputs reach it from three places: the ticker (one tick per
heartbeat interval), the transport (peer messages) and the client service (proposals and
reads). Each input marks the core dirty; the drive task then takes the core's Ready and acts
on it in the order graft/raft/ready.py prescribes:

    leader:     send, persist (one fsync), hand committed entries to the applier, advance
    otherwise:  persist (one fsync), send, hand committed entries to the applier, advance

Persisting runs on a dedicated disk thread so the loop keeps accepting messages, ticks and
client requests while an fsync is in flight; everything that arrives meanwhile goes out in
the next Ready, one fsync for all of it (group commit). The FSM runs in the applier task, so
a slow command never holds up the Raft loop either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from graft.api.server import ApiServer
from graft.config import Config
from graft.fsm import RetryingStateMachine, StateMachine, open_state_machine
from graft.node.addresses import address_of, parse_address
from graft.node.applier import Applier
from graft.node.service import Service
from graft.node.sessions import Sessions
from graft.node.snapshots import SnapshotFailed, Snapshots
from graft.node.tls import contexts
from graft.raft.core import CoreConfig, RaftCore
from graft.raft.messages import InstallSnapshot, Message
from graft.raft.ready import InvariantViolation, Ready, Role
from graft.raft.types import HardState, Member, Membership
from graft.storage import Storage, StorageError, StoredSnapshot
from graft.transport import (
    ForwardReply,
    ForwardRequest,
    PeerFrame,
    SnapshotAck,
    SnapshotChunk,
    Transport,
)

log = logging.getLogger("graft.node")


T = TypeVar("T")


class NodeStartError(Exception):
    """The node cannot start; the message says why and what to do."""


@dataclass(slots=True)
class Observed:
    """What the node last saw of the core's soft state, to notice changes."""

    role: Role = Role.FOLLOWER
    term: int = 0
    leader: str | None = None
    leader_changed: asyncio.Event = field(default_factory=asyncio.Event)


class Node:
    def __init__(self, config: Config, node_id: str) -> None:
        self.config = config
        self.id = node_id
        self.peer = config.peer(node_id)
        self.data_dir: Path = config.data_dir_for(node_id)
        self.observed = Observed()
        self.membership = self._bootstrap_membership()

        self._dirty = asyncio.Event()
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"graft-disk-{node_id}")
        self._tasks: list[asyncio.Task[None]] = []
        self._forwards: dict[int, asyncio.Future[bytes]] = {}
        self._next_forward = 0
        self._stopping = False
        # Resolves with the error if a task of the node dies: the node must not run on.
        self.failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

        # Set by start(); the service reads them.
        self.storage: Storage
        self.core: RaftCore
        self.applier: Applier
        self.fsm: RetryingStateMachine
        self.transport: Transport
        self.service = Service(self)
        self.snapshots = Snapshots(self)
        self._background: set[asyncio.Task[None]] = set()
        self._persisting_term: int | None = None  # a leader's Ready being persisted

    # -- start and stop ---------------------------------------------------------------------

    def _bootstrap_membership(self) -> Membership:
        voters = tuple(
            Member(p.id, address_of(p.host, p.p2p_port, p.api_port))
            for p in self.config.peers.values()
        )
        return Membership(voters=voters)

    async def start(self) -> None:
        try:
            self.storage = Storage.open(self.data_dir)
        except StorageError as exc:
            raise NodeStartError(str(exc)) from None

        try:
            await self._restore()
            await self._open_network()
        except BaseException:
            self.storage.close()
            raise

        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._drive(), name="graft-drive"),
            loop.create_task(self._tick(), name="graft-tick"),
            loop.create_task(self.applier.run(), name="graft-apply"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._task_done)
        log.info(
            "node %s started at term %d (data in %s)",
            self.id,
            self.core.term,
            self.data_dir,
        )

    async def _restore(self) -> None:
        """DESIGN §3: load the newest snapshot (or reset), then replay the committed log."""
        assert self.config.fsm is not None
        state_dir = self.data_dir / "fsm"
        machine: StateMachine = open_state_machine(
            self.config.fsm, node_id=self.id, state_dir=state_dir
        )
        self.fsm = RetryingStateMachine(machine)

        stored = self.storage.snapshot()
        sessions = Sessions()
        applied = 0
        if stored is None:
            await self.fsm.load(None)
        else:
            await self.fsm.load(SnapshotChunks(self.storage, stored))
            sessions = Sessions.decode(stored.app_meta)
            applied = stored.meta.index

        self._saved_hard_state = self.storage.hard_state
        self._unsaved_hard_state: HardState | None = None
        entries = self.storage.entries(self.storage.first_index(), self.storage.last_index() + 1)
        self.core = RaftCore(
            self._core_config(),
            hard_state=self.storage.hard_state,
            membership=self.membership,
            snapshot=stored.meta if stored else None,
            entries=entries,
            jitter=random.Random(),
            applied=applied,
            logger=logging.getLogger("graft.raft"),
        )
        self.membership = self.core.status().membership
        self.applier = Applier(
            self.fsm,
            sessions,
            applied=applied,
            on_membership=self._on_membership,
            after_batch=self._after_batch,
        )

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.failed.done():
            return
        error = task.exception()
        if error is not None:
            log.error("node %s: task %s failed", self.id, task.get_name(), exc_info=error)
            self.failed.set_result(error)

    def _core_config(self) -> CoreConfig:
        election_ticks = max(2, round(self.config.election_ms / self.config.heartbeat_ms))
        return CoreConfig(id=self.id, election_ticks=election_ticks, heartbeat_ticks=1)

    async def _open_network(self) -> None:
        ssl_server, ssl_client = contexts(self.config)
        self.transport = Transport(
            node_id=self.id,
            cluster=self.config.cluster,
            listen=(self.peer.host, self.peer.p2p_port),
            peers=self._peer_addresses(self.membership),
            on_frame=self._on_frame,
            ssl_server=ssl_server,
            ssl_client=ssl_client,
        )
        self.api = ApiServer(
            host=self.peer.host,
            port=self.peer.api_port,
            handler=self.service,
            max_line=self.config.api_max_line,
        )
        try:
            await self.transport.start()
            await self.api.start()
        except OSError as exc:
            with contextlib.suppress(Exception):
                await self.transport.close()
            raise NodeStartError(
                f"cannot listen on {self.peer.host} ports p2p {self.peer.p2p_port} / api "
                f"{self.peer.api_port} (peers.{self.id}.ports): {exc.strerror or exc}; "
                "is another node running with the same ports?"
            ) from None

    def _peer_addresses(self, membership: Membership) -> dict[str, tuple[str, int]]:
        """Where to dial each other member.

        DESIGN §2: a node dials a peer at the address in its own copy of graft.yaml; only
        members added later, absent from the file, are dialled at their replicated address.
        """
        addresses: dict[str, tuple[str, int]] = {}
        for member in (*membership.voters, *membership.learners):
            if member.id == self.id:
                continue
            known = self.config.peers.get(member.id)
            if known is not None:
                addresses[member.id] = (known.host, known.p2p_port)
            else:
                host, p2p, _ = parse_address(member.address)
                addresses[member.id] = (host, p2p)
        return addresses

    async def stop(self) -> None:
        """Stop cleanly: nothing half-written stays behind (the disk thread finishes)."""
        if self._stopping:
            return
        self._stopping = True

        self.snapshots.stop_sending()
        for task in self._tasks:
            task.cancel()
        # A task that failed already reported its error through `failed`.
        await asyncio.gather(*self._tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            await self.api.close()
        with contextlib.suppress(Exception):
            await self.transport.close()
        self._disk.shutdown(wait=True)
        with contextlib.suppress(Exception):
            await self.fsm.close()
        self.storage.close()
        log.info("node %s stopped", self.id)

    # -- inputs -----------------------------------------------------------------------------

    def poke(self) -> None:
        """The core has new input: let the drive task look at its Ready."""
        if not self._dirty.is_set():
            self._dirty.set()

    async def _tick(self) -> None:
        interval = self.config.heartbeat_ms / 1000
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            deadline += interval
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            self.core.tick()
            if self._persisting_term is not None:
                # The Ready loop waits for an fsync; a leader's heartbeats need not.
                self._send(self.core.leader_messages(self._persisting_term))
            self.poke()

    def _on_frame(self, peer: str, frame: PeerFrame) -> None:
        if isinstance(frame, ForwardRequest):
            self.service.serve_forwarded(peer, frame)
        elif isinstance(frame, ForwardReply):
            future = self._forwards.pop(frame.request_id, None)
            if future is not None and not future.done():
                future.set_result(frame.body)
        elif isinstance(frame, SnapshotChunk):
            self.snapshots.on_chunk(peer, frame)
        elif isinstance(frame, SnapshotAck):
            self.snapshots.on_ack(peer, frame)
        elif frame.dst == self.id:
            self.core.step(frame)
            self.poke()

    def forward(self, leader: str, body: bytes) -> asyncio.Future[bytes] | None:
        """Send a client request to the leader; the future gets its reply body."""
        self._next_forward += 1
        request_id = self._next_forward
        if not self.transport.send(leader, ForwardRequest(request_id, body)):
            return None

        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._forwards[request_id] = future
        future.add_done_callback(lambda _: self._forwards.pop(request_id, None))
        return future

    # -- the Ready loop ---------------------------------------------------------------------

    async def _drive(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            while self.core.has_ready():
                await self._handle(self.core.ready())

    async def _handle(self, ready: Ready) -> None:
        if ready.snapshot is not None:
            await self._install(ready)

        if ready.send_first:
            self._send(ready.messages)
        await self._persist(ready)
        if not ready.send_first:
            self._send(ready.messages)

        if ready.committed:
            self.applier.push_entries(ready.committed)
        for read in ready.reads:
            self.service.read_ready(read.context, read.index)
        for context in ready.dropped_reads:
            self.service.read_dropped(context)
        self._observe(ready)
        self.core.advance(ready)

    async def _persist(self, ready: Ready) -> None:
        """Make the Ready's entries and hard state durable, with one fsync.

        A hard state that differs from the stored one only in its commit index is not worth
        an fsync of its own: the commit index is a hint (a restarted node learns the real
        one from the leader), so it is held back and written with the next entries or vote.

        Only a leader writes on the disk thread: it goes on heartbeating while the write
        runs (`leader_messages`). Any other role has nothing to send until the write is
        done (§5.1: acknowledgements and votes wait for it), so it writes here, on the loop.
        The hop to a thread and back cost about 15% of a write's latency on two cores; the
        price is that a follower's API waits for its fsync too (docs/limitations.md).
        """
        hard_state = ready.hard_state or self._unsaved_hard_state
        if hard_state is not None and not ready.entries:
            stored = self._saved_hard_state
            if (hard_state.term, hard_state.vote) == (stored.term, stored.vote):
                self._unsaved_hard_state = hard_state
                return
        if hard_state is None and not ready.entries:
            return

        if ready.send_first:
            self._persisting_term = ready.term
            try:
                await self.on_disk(self.storage.save, hard_state, ready.entries)
            finally:
                self._persisting_term = None
        else:
            self.storage.save(hard_state, ready.entries)
        self._unsaved_hard_state = None
        if hard_state is not None:
            self._saved_hard_state = hard_state

    async def _install(self, ready: Ready) -> None:
        """The core accepted a snapshot from the leader: the FSM and the log jump to it (§7).

        The snapshot was stored (and its checksum verified) before the core saw it, so the
        newest stored snapshot is the one the core accepted.
        """
        meta = ready.snapshot
        stored = self.storage.snapshot()
        if meta is None or stored is None or stored.meta != meta:
            raise InvariantViolation(f"the core installed {meta}, but storage holds {stored}")

        async def restore() -> None:
            await self.fsm.load(SnapshotChunks(self.storage, stored))
            self.applier.restored(meta.index, Sessions.decode(stored.app_meta))

        await self.applier.exclusive(restore)
        await self.on_disk(self.storage.install_snapshot, stored)
        log.info("node %s restored snapshot at index %d term %d", self.id, meta.index, meta.term)

    async def _after_batch(self) -> None:
        """Take a snapshot when `snapshot.every` entries were applied since the last one."""
        if not self.snapshots.due():
            return
        try:
            await self.snapshots.take()
        except SnapshotFailed as exc:
            log.warning("node %s: %s; retrying after more entries", self.id, exc)

    async def on_disk(self, call: Callable[..., T], *args: object) -> T:
        """Run a storage call on the disk thread, in order with the log writes."""
        return await asyncio.get_running_loop().run_in_executor(self._disk, call, *args)

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep a background task alive until it ends."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _send(self, messages: Iterable[Message]) -> None:
        for message in messages:
            if isinstance(message, InstallSnapshot):
                self.snapshots.send(message)
            elif not self.transport.send(message.dst, message):
                self.core.report_unreachable(message.dst)

    def _observe(self, ready: Ready) -> None:
        seen = self.observed
        if ready.leader != seen.leader:
            seen.leader = ready.leader
            seen.leader_changed.set()
            seen.leader_changed = asyncio.Event()
        if ready.role is not seen.role or ready.term != seen.term:
            seen.role, seen.term = ready.role, ready.term
            self.service.role_changed(ready.role)

    def _on_membership(self, membership: Membership) -> None:
        self.membership = membership
        self.transport.set_peers(self._peer_addresses(membership))
        log.info(
            "node %s applied membership voters=%s learners=%s at term %d",
            self.id,
            sorted(membership.voter_ids()),
            sorted(membership.learner_ids()),
            self.observed.term,
        )
        if self.id not in membership.ids():
            log.warning(
                "node %s is no longer a member of the cluster; stop it (graft stop %s)",
                self.id,
                self.id,
            )


class SnapshotChunks:
    """A stored snapshot as chunks; iterating again re-reads it, so a failed load can retry."""

    def __init__(self, storage: Storage, stored: StoredSnapshot, size: int = 1 << 20) -> None:
        self._storage = storage
        self._stored = stored
        self._size = size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with self._storage.open_snapshot(self._stored) as source:
            while chunk := source.read(self._size):
                yield chunk
