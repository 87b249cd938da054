"""Snapshots end to end: taking them, compacting the log, and moving them between nodes.

Taking one (§7): the applier stops between two batches, the FSM's `dump` is streamed into
the storage's snapshot writer together with the session table, the file is committed
(fsync, rename, directory fsync), and only then are the core's and the storage's logs
compacted, keeping the last `snapshot.keep_log` entries so that a follower a little behind
still catches up from the log. A crash at any point leaves the previous snapshot in force.

Sending one: when the core asks for InstallSnapshot, the leader streams the stored file to
that follower in chunks, at most `WINDOW` chunks ahead of the follower's acknowledgements,
so neither side holds the state in memory. The follower writes the chunks into a snapshot
writer, verifies the checksum when the last one arrives, and only then steps InstallSnapshot
into its core. A transfer that breaks off is started again from the beginning.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from graft.raft.messages import InstallSnapshot
from graft.raft.ready import Role
from graft.raft.types import SnapshotMeta
from graft.storage import SnapshotWriter, StorageError, StoredSnapshot
from graft.transport import SnapshotAck, SnapshotChunk

if TYPE_CHECKING:
    from graft.node.runtime import Node

log = logging.getLogger("graft.node")

CHUNK = 256 << 10  # bytes of state per frame
WINDOW = 8  # chunks in flight ahead of the follower's acknowledgements


class SnapshotFailed(Exception):
    """A snapshot could not be taken now; the previous one stays in force."""


@dataclass
class _Incoming:
    """A snapshot being received from the leader."""

    peer: str
    meta: SnapshotMeta
    writer: SnapshotWriter
    received: int = 0


@dataclass
class _Outgoing:
    """A snapshot being streamed to one follower."""

    task: asyncio.Task[None]
    acked: int = 0
    failed: bool = False
    progress: asyncio.Event | None = None


class Snapshots:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._incoming: _Incoming | None = None
        self._outgoing: dict[str, _Outgoing] = {}
        self._failed_at = 0  # applied index of the last failed attempt, to space retries

    # -- taking a snapshot ------------------------------------------------------------------

    def due(self) -> bool:
        """Whether enough entries were applied since the newest snapshot (snapshot.every)."""
        node = self.node
        stored = node.storage.snapshot()
        since = max(stored.meta.index if stored else 0, self._failed_at)
        return node.applier.applied - since >= node.config.snapshot_every

    async def take(self) -> StoredSnapshot:
        """Snapshot the applied state; the applier must be paused (it calls this itself)."""
        node = self.node
        index = node.applier.applied
        stored = node.storage.snapshot()
        if stored is not None and stored.meta.index >= index:
            return stored
        if index == 0:
            raise SnapshotFailed("nothing has been applied yet")

        meta = node.core.snapshot_meta(index)
        writer = node.storage.create_snapshot(meta, node.applier.sessions.encode())
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            chunks = node.fsm.dump()
            try:
                async for chunk in chunks:
                    writer.write(chunk)
            finally:
                # Stopping early must end the dump process at once (an async generator).
                close = getattr(chunks, "aclose", None)
                if close is not None:
                    await close()
            dumped = loop.time()
            stored = await node.on_disk(writer.commit)
        except BaseException as exc:
            writer.abort()
            self._failed_at = index
            if isinstance(exc, Exception):
                raise SnapshotFailed(f"snapshot at index {index} abandoned: {exc}") from exc
            raise

        # The dump's duration is how long this node's applies and reads were paused.
        log.info(
            "node %s took snapshot at index %d term %d (%d bytes; dump %.0f ms, fsync %.0f ms)",
            node.id,
            meta.index,
            meta.term,
            stored.size,
            (dumped - started) * 1000,
            (loop.time() - dumped) * 1000,
        )
        await self._compact(meta)
        return stored

    async def _compact(self, meta: SnapshotMeta) -> None:
        """Drop the log the snapshot covers, except the tail kept for lagging followers."""
        node = self.node
        keep = node.config.snapshot_keep_log
        node.core.compact(meta, keep=keep)
        node.poke()
        if meta.index - keep > 0:
            await node.on_disk(node.storage.compact, meta.index - keep)

    # -- sending (leader) -------------------------------------------------------------------

    def send(self, message: InstallSnapshot) -> None:
        """The core wants `message.dst` to get the snapshot: stream it, once at a time."""
        peer = message.dst
        current = self._outgoing.get(peer)
        if current is not None and not current.task.done():
            return

        stored = self.node.storage.snapshot()
        if stored is None:
            self.node.core.report_snapshot(peer, False)
            return
        task = asyncio.get_running_loop().create_task(self._stream(peer, message.term, stored))
        self._outgoing[peer] = _Outgoing(task)

    async def _stream(self, peer: str, term: int, stored: StoredSnapshot) -> None:
        node = self.node
        outgoing = self._outgoing[peer]
        log.info(
            "node %s sends snapshot at index %d (%d bytes) to %s at term %d",
            node.id,
            stored.meta.index,
            stored.size,
            peer,
            term,
        )
        try:
            sent = await self._send_chunks(peer, term, stored, outgoing)
        except (OSError, StorageError, TimeoutError, ValueError) as exc:
            # A TimeoutError (no acknowledgement in time) has an empty message.
            reason = str(exc) or type(exc).__name__
            log.warning("node %s: snapshot to %s broke off: %s", node.id, peer, reason)
            sent = False
        if not sent:
            node.core.report_snapshot(peer, False)
            node.poke()

    async def _send_chunks(
        self, peer: str, term: int, stored: StoredSnapshot, outgoing: _Outgoing
    ) -> bool:
        node = self.node
        ack_within = 10 * node.config.election_ms / 1000
        offset = 0
        with node.storage.open_snapshot(stored) as source:
            while True:
                if node.observed.role is not Role.LEADER or node.observed.term != term:
                    return False
                data = source.read(CHUNK)
                done = offset + len(data) >= stored.size
                chunk = SnapshotChunk(
                    term,
                    stored.meta,
                    stored.size,
                    stored.checksum,
                    stored.app_meta,
                    offset,
                    data,
                    done,
                )
                if not node.transport.send(peer, chunk):
                    return False
                offset += len(data)
                limit = offset if done else offset - WINDOW * CHUNK
                if not await self._acked(outgoing, limit, ack_within):
                    return False
                if done:
                    return True

    async def _acked(self, outgoing: _Outgoing, offset: int, within: float) -> bool:
        """Wait until the follower acknowledged `offset` bytes (back-pressure)."""
        async with asyncio.timeout(within):
            while outgoing.acked < offset and not outgoing.failed:
                outgoing.progress = asyncio.Event()
                await outgoing.progress.wait()
        return not outgoing.failed

    def on_ack(self, peer: str, ack: SnapshotAck) -> None:
        outgoing = self._outgoing.get(peer)
        if outgoing is None:
            return
        if ack.ok:
            outgoing.acked = max(outgoing.acked, ack.offset)
        else:
            outgoing.failed = True
        if outgoing.progress is not None:
            outgoing.progress.set()

    def stop_sending(self) -> None:
        for outgoing in self._outgoing.values():
            outgoing.task.cancel()

    # -- receiving (follower) ---------------------------------------------------------------

    def on_chunk(self, peer: str, chunk: SnapshotChunk) -> None:
        node = self.node
        if chunk.term < node.observed.term:
            return  # from a deposed leader; its transfer will fail and it will step down

        incoming = self._incoming
        if chunk.offset == 0:
            incoming = self._begin(peer, chunk)
        if (
            incoming is None
            or incoming.peer != peer
            or incoming.meta != chunk.meta
            or incoming.received != chunk.offset
        ):
            self._refuse(peer, chunk)
            return

        incoming.writer.write(chunk.data)
        incoming.received += len(chunk.data)
        if chunk.done:
            self._incoming = None
            task = asyncio.get_running_loop().create_task(self._finish(peer, chunk, incoming))
            node.track(task)
        else:
            node.transport.send(peer, SnapshotAck(chunk.meta.index, incoming.received, True))

    def _begin(self, peer: str, chunk: SnapshotChunk) -> _Incoming | None:
        self._abort_incoming()
        try:
            writer = self.node.storage.create_snapshot(chunk.meta, chunk.app_meta)
        except (StorageError, ValueError) as exc:
            log.warning("node %s refuses snapshot from %s: %s", self.node.id, peer, exc)
            return None
        self._incoming = _Incoming(peer, chunk.meta, writer)
        return self._incoming

    def _refuse(self, peer: str, chunk: SnapshotChunk) -> None:
        self.node.transport.send(peer, SnapshotAck(chunk.meta.index, 0, False))

    async def _finish(self, peer: str, chunk: SnapshotChunk, incoming: _Incoming) -> None:
        node = self.node
        try:
            await node.on_disk(incoming.writer.commit, chunk.checksum)
        except (StorageError, OSError) as exc:
            incoming.writer.abort()
            log.warning("node %s: snapshot from %s is unusable: %s", node.id, peer, exc)
            self._refuse(peer, chunk)
            return

        node.transport.send(peer, SnapshotAck(chunk.meta.index, incoming.received, True))
        node.core.step(InstallSnapshot(chunk.term, peer, node.id, chunk.meta))
        node.poke()

    def _abort_incoming(self) -> None:
        if self._incoming is not None:
            self._incoming.writer.abort()
            self._incoming = None
