"""The TCP server of the client line API: moves bytes, keeps replies in order, stays bounded.

Each connection reads request lines, runs one handler task per request so that pipelined
requests are served concurrently, and writes the replies strictly in request order. What a
request means (Raft, the FSM) is the node's business, behind the `Handler` protocol.

Back-pressure: at most `max_in_flight` requests of one connection are pending (running or
waiting for an earlier reply); past that, and while the socket's send buffer is full, the
connection stops reading, so a client that sends without reading cannot grow our memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Final, Protocol, cast

from graft.api.protocol import (
    PONG,
    BadRequest,
    Err,
    ErrCode,
    LineReader,
    Op,
    Reply,
    Request,
    TooLarge,
    format_reply,
    parse_request,
)

log = logging.getLogger("graft.api")

MAX_IN_FLIGHT: Final = 1024
_PONG_LINE: Final = b"OK PONG\n"
_CANCELLED_LINE: Final = b"ERR INTERNAL request cancelled\n"


class Handler(Protocol):
    """What the node provides: the meaning of every request except PING.

    The task running `handle` is cancelled when the client disconnects; the client then
    treats the outcome as unknown. Exceptions other than cancellation are logged and
    answered `ERR INTERNAL`.
    """

    async def handle(self, request: Request) -> Reply: ...


class ApiServer:
    """Serves the line API on host:port until `close`."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        handler: Handler,
        max_line: int,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, not {max_in_flight}")
        self._host = host
        self._port = port
        self.handler = handler
        self.max_line = max_line
        self.max_in_flight = max_in_flight
        self._server: asyncio.Server | None = None
        self._bound_port = port
        self.connections: set[_Connection] = set()

    async def start(self) -> None:
        """Bind and listen. asyncio's accept loop already backs off on EMFILE/ENFILE."""
        if self._server is not None:
            raise RuntimeError("ApiServer already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self._host, self._port, reuse_address=True
        )
        self._bound_port = self.port
        log.info("api listening on %s:%d", self._host, self._bound_port)

    @property
    def port(self) -> int:
        """The bound port (useful when started with port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("ApiServer is not listening")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        """Stop listening, drop every connection and cancel its pending requests."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = [task for c in list(self.connections) for task in c.abort()]
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        log.info("api stopped listening on %s:%d", self._host, self._bound_port)


class _Connection(asyncio.Protocol):
    """One client. `_pending` holds one entry per request not yet answered, in order:
    the reply bytes when known at once, else the handler's task."""

    def __init__(self, server: ApiServer) -> None:
        self._server = server
        self._handler = server.handler
        self._limit = server.max_in_flight
        self._reader = LineReader(server.max_line)
        self._pending: deque[bytes | asyncio.Task[bytes]] = deque()
        self._transport: asyncio.Transport | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._eof = False
        self._loop = asyncio.get_running_loop()
        self._on_done_callback = self._on_done  # bound once: the hot path runs per request

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._server.connections.add(self)
        log.debug("api client %s connected", transport.get_extra_info("peername"))

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        self._pump()

    def eof_received(self) -> bool:
        # The client half-closed (e.g. `nc -N`): answer what it sent, then close.
        self._eof = True
        self._reader.feed_eof()
        self._pump()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._transport = None
        self._cancel_pending()
        log.debug("api client disconnected: %s", exc or "closed")

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._pump()

    def abort(self) -> list[asyncio.Task[bytes]]:
        """Drop the connection at once; return the cancelled handler tasks to await."""
        if self._transport is not None:
            self._transport.abort()
        return self._cancel_pending()

    def _cancel_pending(self) -> list[asyncio.Task[bytes]]:
        tasks = [item for item in self._pending if not isinstance(item, bytes)]
        for task in tasks:
            task.cancel()
        self._pending.clear()
        return tasks

    # request flow

    def _pump(self) -> None:
        """Write the replies that are ready, start the buffered requests the bounds allow,
        and repeat while that frees room (replies known at once, such as PING); then pause
        reading if requests are left waiting, else resume it."""
        reader, pending, limit = self._reader, self._pending, self._limit
        while True:
            self._flush()
            if len(pending) >= limit or self._writing_paused or not len(reader):
                break
            while len(pending) < limit and (line := reader.next_line()) is not None:
                self._dispatch(line)

        if len(reader) or len(pending) >= limit or self._writing_paused:
            self._pause_reading()
        else:
            self._resume_reading()

    def _dispatch(self, line: bytes | TooLarge) -> None:
        if isinstance(line, TooLarge):
            self._pending.append(format_reply(line.reply(), line))
            return
        if line == b"PING" or line == b"ping":
            self._pending.append(_PONG_LINE)
            return

        try:
            request = parse_request(line)
        except BadRequest as exc:
            self._pending.append(format_reply(exc.reply(), exc))
            return
        if request.op is Op.PING:
            self._pending.append(format_reply(PONG, request))
            return

        task = self._loop.create_task(self._serve(request))
        task.add_done_callback(self._on_done_callback)
        self._pending.append(task)

    async def _serve(self, request: Request) -> bytes:
        try:
            reply = await self._handler.handle(request)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # cancelled by us: the client is gone
            log.error("api handler cancelled itself on %s", request.op.name)
            reply = Err(ErrCode.INTERNAL, "request cancelled")
        except Exception as exc:
            log.error("api handler failed on %s", request.op.name, exc_info=True)
            reply = Err(ErrCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        return format_reply(reply, request)

    def _on_done(self, task: asyncio.Task[bytes]) -> None:
        if self._pending and self._pending[0] is task:
            self._pump()

    def _flush(self) -> None:
        """Write every reply at the head of the queue that is ready, in request order."""
        pending, out = self._pending, []
        while pending:
            head = pending[0]
            if not isinstance(head, bytes):
                if not head.done():
                    break
                # A task cancelled by someone else than us (we drop the queue when we cancel)
                # still owes its client a line; the form of the request is not at hand here.
                head = _CANCELLED_LINE if head.cancelled() else head.result()
            out.append(head)
            pending.popleft()

        if out and self._transport is not None:
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))
        self._close_if_done()

    def _close_if_done(self) -> None:
        if self._eof and not self._pending and not len(self._reader) and self._transport:
            self._transport.close()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self._transport is not None and not self._eof:
            self._reading_paused = False
            self._transport.resume_reading()
