"""The calling side: one outbound connection per peer, used for everything sent to it.

A `PeerLink` owns a task that dials the peer, says Hello, waits for Welcome, then keeps the
connection until it drops, and dials again with capped exponential back-off. Sending never
blocks: frames go to a bounded queue, and one callback per loop iteration hands everything
queued to the socket in a single `writelines` (batching). While the socket's buffer is full
(`pause_writing`) frames accumulate in the queue until its byte limit, then are dropped:
Raft tolerates lost messages and retries on its own.

Frames queued while the peer is unreachable are dropped at each failed dial, and frames still
queued when a connection drops are dropped with it, so a peer that comes back is not flooded
with stale messages.
"""

from __future__ import annotations

import asyncio
import errno
import random
import ssl
import time
from dataclasses import dataclass
from typing import cast

from graft.transport._log import WarnOnce, logger
from graft.transport.codec import Frame, Hello, Refused, Welcome, decode, encode
from graft.transport.framing import FrameDecoder, FrameError, encode_frame
from graft.transport.server import set_nodelay
from graft.transport.tls import peer_identity

BACKOFF_FIRST = 0.005  # seconds before the first redial
BACKOFF_CAP = 1.0  # the back-off doubles up to this
BACKOFF_JITTER = 0.25  # each delay is stretched by a random 0..25% so peers do not dial in step

# Errors that say this process (not the peer) is out of resources: worth an ERROR.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def backoff_delay(failures: int, rng: random.Random) -> float:
    """Delay before redial number `failures` (1 for the first): 5 ms doubling to 1 s, jittered."""
    base: float = min(BACKOFF_CAP, BACKOFF_FIRST * 2.0 ** min(failures - 1, 30))
    return base * (1.0 + BACKOFF_JITTER * rng.random())


class PeerUnavailable(Exception):
    """A dial or handshake failed; `reason` says why. The link backs off and retries."""

    def __init__(self, reason: str, *, refused: bool = False, resource: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.refused = refused  # the peer refused us: a configuration problem
        self.resource = resource  # we ran out of file descriptors or memory


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """What every link of one transport shares."""

    node_id: str
    cluster: str
    ssl_client: ssl.SSLContext | None
    max_frame: int
    max_queued_bytes: int
    handshake_timeout: float


class OutboundConnection(asyncio.Protocol):
    """The protocol of a dialled connection: it only ever receives the handshake reply."""

    def __init__(self, link: PeerLink, max_frame: int) -> None:
        loop = asyncio.get_running_loop()
        self._link = link
        self._decoder = FrameDecoder(max_frame)
        self.transport: asyncio.Transport | None = None
        self.reply: asyncio.Future[Frame | None] = loop.create_future()  # None: closed first
        self.closed: asyncio.Future[str] = loop.create_future()  # why the connection ended

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._decoder.feed(data)
            for body in self._decoder:
                self._receive(decode(body))
        except FrameError as exc:
            self._violation(f"malformed frame: {exc}")

    def _receive(self, frame: Frame) -> None:
        if not self.reply.done():
            self.reply.set_result(frame)
        else:
            # Inbound connections carry everything the peer sends us; after Welcome this
            # connection must stay silent.
            self._violation(f"unexpected {type(frame).__name__} after the handshake")

    def _violation(self, reason: str) -> None:
        logger.warning("closing connection to peer %s: %s", self._link.peer, reason)
        self._finish(reason)
        if self.transport is not None:
            self.transport.abort()

    def _finish(self, reason: str) -> None:
        if not self.reply.done():
            self.reply.set_result(None)
        if not self.closed.done():
            self.closed.set_result(reason)

    def pause_writing(self) -> None:
        self._link.pause(self)

    def resume_writing(self) -> None:
        self._link.resume(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(str(exc) if exc else "closed by peer")


class PeerLink:
    """The outbound half of one peer: a dial loop, a send queue and its flush callback."""

    def __init__(
        self,
        config: LinkConfig,
        peer: str,
        address: tuple[str, int],
        warn: WarnOnce,
        rng: random.Random,
    ) -> None:
        self.peer = peer
        self.address = address
        self._config = config
        self._warn = warn
        self._rng = rng
        self._queue: list[bytes] = []
        self._queued_bytes = 0
        self._connection: OutboundConnection | None = None  # set while handshaken
        self._paused = False
        self._flush_scheduled = False
        self._drained = asyncio.Event()
        self._drained.set()
        self._settled = asyncio.Event()  # set while connected, and once the link is closed
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def connected(self) -> bool:
        return self._connection is not None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"graft.transport link to {self.peer}"
        )
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        # The dial loop only ends by cancellation; anything else is a bug worth a traceback.
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("link to peer %s stopped", self.peer, exc_info=exc)

    # -- sending ------------------------------------------------------------------------------

    def send(self, header: bytes, body: bytes) -> bool:
        size = len(header) + len(body)
        backlog = self._queued_bytes
        connection = self._connection
        if connection is not None and connection.transport is not None:
            backlog += connection.transport.get_write_buffer_size()
        if backlog + size > self._config.max_queued_bytes or self._closing:
            return False

        self._queue.append(header)
        self._queue.append(body)
        self._queued_bytes += size
        self._drained.clear()
        if connection is not None and not self._paused:
            self._schedule_flush()
        return True

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        connection = self._connection
        if connection is None or connection.transport is None or self._paused:
            return

        if self._queue:
            frames, self._queue, self._queued_bytes = self._queue, [], 0
            connection.transport.writelines(frames)
        if not self._paused:  # writelines may have paused us when the buffer filled up
            self._drained.set()

    def pause(self, connection: OutboundConnection) -> None:
        if connection is self._connection:
            self._paused = True

    def resume(self, connection: OutboundConnection) -> None:
        if connection is self._connection:
            self._paused = False
            self._schedule_flush()

    def _drop_queue(self) -> None:
        if self._queue:
            logger.debug("dropped %d queued bytes for peer %s", self._queued_bytes, self.peer)
        self._queue, self._queued_bytes = [], 0
        self._drained.set()

    async def drain(self) -> None:
        """Until the queue is handed to the socket and its buffer is below the high-water mark,
        or the queue was dropped because the connection failed or the link closed.
        """
        await self._drained.wait()

    # -- the dial loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while not self._closing:  # close() also cancels; this guards a lost cancellation
            try:
                connection = await self._dial()
            except PeerUnavailable as exc:
                self._drop_queue()
                failures += 1
                await asyncio.sleep(self._failed(exc, failures))
                continue

            started = time.monotonic()
            self._attach(connection)
            reason = await connection.closed
            self._detach(reason)

            # A connection that dies right after the handshake counts as a failure, so a
            # peer that accepts and then drops us is not redialled in a tight loop.
            failures = 0 if time.monotonic() - started >= BACKOFF_CAP else failures + 1
            await asyncio.sleep(backoff_delay(max(failures, 1), self._rng))

    def _failed(self, exc: PeerUnavailable, failures: int) -> float:
        host, port = self.address
        if exc.resource:
            logger.error(
                "cannot dial peer %s at %s:%d: %s",
                self.peer,
                host,
                port,
                exc.reason,
                exc_info=exc.__cause__,
            )
            return backoff_delay(64, self._rng)
        if exc.refused:
            self._warn.warning(
                ("refused-by", self.peer, exc.reason),
                "peer %s at %s:%d refused us: %s",
                self.peer,
                host,
                port,
                exc.reason,
            )
            return backoff_delay(64, self._rng)
        logger.debug("cannot reach peer %s at %s:%d: %s", self.peer, host, port, exc.reason)
        return backoff_delay(failures, self._rng)

    async def wait_connected(self) -> bool:
        """Until the handshake is done (True) or the link is closed (False)."""
        await self._settled.wait()
        return self.connected

    def _attach(self, connection: OutboundConnection) -> None:
        self._connection = connection
        self._settled.set()
        self._paused = False
        host, port = self.address
        logger.info("connected to peer %s at %s:%d", self.peer, host, port)
        if self._queue:
            self._schedule_flush()

    def _detach(self, reason: str) -> None:
        self._connection = None
        if not self._closing:
            self._settled.clear()
        self._paused = False
        self._drop_queue()
        if not self._closing:
            logger.info("lost connection to peer %s: %s", self.peer, reason)

    async def _dial(self) -> OutboundConnection:
        """Connect and shake hands. Every OSError of the dial is translated here, once."""
        connection = OutboundConnection(self, self._config.max_frame)
        try:
            # asyncio.timeout rather than wait_for: on Python 3.11, wait_for can swallow a
            # cancellation that races with the dial's own result, and close() would then wait
            # on a dial loop that never stops.
            async with asyncio.timeout(self._config.handshake_timeout):
                await self._open(connection)
                reply = await connection.reply
            self._check_reply(connection, reply)
        except OSError as exc:  # includes TimeoutError and ssl.SSLError
            self._abort(connection)
            resource = exc.errno in RESOURCE_ERRNOS
            raise PeerUnavailable(_describe(exc), resource=resource) from exc
        except BaseException:
            self._abort(connection)
            raise
        return connection

    async def _open(self, connection: OutboundConnection) -> None:
        host, port = self.address
        loop = asyncio.get_running_loop()
        ssl_client = self._config.ssl_client
        await loop.create_connection(
            lambda: connection,
            host,
            port,
            ssl=ssl_client,
            ssl_handshake_timeout=self._config.handshake_timeout if ssl_client else None,
        )
        transport = connection.transport
        assert transport is not None
        # The peer (or a proxy in front of it) may close the connection the moment it is
        # accepted; uvloop then refuses writes with RuntimeError rather than an OSError.
        if transport.is_closing():
            raise ConnectionResetError("the connection closed as soon as it opened")
        hello = Hello(self._config.cluster, self._config.node_id)
        try:
            transport.write(encode_frame(encode(hello)))
        except RuntimeError as exc:
            raise ConnectionResetError(f"the connection closed before the hello: {exc}") from exc

    def _check_reply(self, connection: OutboundConnection, reply: Frame | None) -> None:
        if reply is None:
            reason = connection.closed.result() if connection.closed.done() else "closed"
            raise PeerUnavailable(f"connection closed during the handshake: {reason}")
        if isinstance(reply, Refused):
            raise PeerUnavailable(reply.reason, refused=True)
        if not isinstance(reply, Welcome):
            raise PeerUnavailable(f"expected Welcome, got {type(reply).__name__}", refused=True)
        if reply.node_id != self.peer:
            raise PeerUnavailable(f"the listener is {reply.node_id!r}", refused=True)

        assert connection.transport is not None
        if self._config.ssl_client is not None:
            names = peer_identity(connection.transport.get_extra_info("ssl_object"))
            if self.peer not in names:
                raise PeerUnavailable(
                    f"its certificate names {sorted(names)}, not {self.peer!r}", refused=True
                )
        self._warn.forget_prefix(("refused-by", self.peer))

    @staticmethod
    def _abort(connection: OutboundConnection) -> None:
        if connection.transport is not None:
            connection.transport.abort()

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> asyncio.Task[None] | None:
        """Stop dialling and drop the connection; returns the task to await, if any."""
        self._closing = True
        self._settled.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        connection = self._connection
        self._connection = None
        if connection is not None:
            self._abort(connection)
        self._drop_queue()
        return task


def _describe(exc: OSError) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        return "timed out"
    return text
