"""ApiServer over real loopback sockets, with a fake handler in place of the node."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import struct
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop

from graft.api.protocol import Err, ErrCode, Ok, Op, Redirect, Reply, Request
from graft.api.server import ApiServer

pytestmark = pytest.mark.timeout(30)

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    def runner(main: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as r:
            r.run(asyncio.wait_for(main, 5))

    return runner


class Handler:
    """Echoes what the FSM would receive; `gate` holds chosen requests until released."""

    def __init__(self) -> None:
        self.seen: list[Request] = []
        self.gates: dict[bytes, asyncio.Event] = {}
        self.running = 0
        self.most_running = 0
        self.cancelled = 0
        self.arrived = asyncio.Event()
        self.expect = 0

    async def handle(self, request: Request) -> Reply:
        self.seen.append(request)
        if len(self.seen) >= self.expect:
            self.arrived.set()
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            return await self._answer(request)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1

    async def _answer(self, request: Request) -> Reply:
        gate = self.gates.get(request.payload)
        if gate is not None:
            await gate.wait()
        if request.payload == b"boom":
            raise RuntimeError("handler bug")
        if request.payload == b"redirect":
            return Redirect("turing", "127.0.0.1", 8080)
        if request.payload == b"fail":
            return Err(ErrCode.FSM, "exit 1: bad\ncommand")
        if request.op is Op.STATUS:
            return Ok(b'{"id":"n1","role":"leader"}')
        return Ok(request.command_bytes())


async def serve(
    handler: Handler,
    body: Callable[[ApiServer], Awaitable[None]],
    max_line: int = 64,
    **kwargs: Any,
) -> None:
    server = ApiServer(host="127.0.0.1", port=0, handler=handler, max_line=max_line, **kwargs)
    await server.start()
    try:
        await body(server)
    finally:
        await server.close()


async def until(condition: Callable[[], bool]) -> None:
    """Poll a condition the server exposes no event for (the state of a peer socket)."""
    for _ in range(4000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached in 4 s")


async def exchange(port: int, data: bytes, replies: int) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    lines = [await reader.readline() for _ in range(replies)]
    writer.close()
    await writer.wait_closed()
    return lines


def test_replies_keep_request_order_when_handlers_finish_out_of_order(run: Any) -> None:
    handler = Handler()
    count = 50
    payloads = [str(i).encode() for i in range(count)]
    handler.gates = {p: asyncio.Event() for p in payloads}
    handler.expect = count

    async def body(server: ApiServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"".join(b"APPLY " + p + b"\n" for p in payloads))
        await handler.arrived.wait()  # all of them run at once, none answered yet
        for p in reversed(payloads):
            handler.gates[p].set()
            await asyncio.sleep(0)
        lines = [await reader.readline() for _ in payloads]
        assert lines == [b"OK " + p + b"\n" for p in payloads]
        assert handler.most_running == count
        writer.close()

    run(serve(handler, body))


def test_in_flight_requests_are_bounded_per_connection(run: Any) -> None:
    handler = Handler()
    handler.gates = {b"x": asyncio.Event()}
    handler.expect = 4

    async def body(server: ApiServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"APPLY x\n" * 100 + b"APPLY done\n")
        await handler.arrived.wait()
        for _ in range(10):
            await asyncio.sleep(0)
        assert handler.running == 4  # the rest waits in the socket, not in our memory

        handler.gates[b"x"].set()
        lines = [await reader.readline() for _ in range(101)]
        assert lines == [b"OK x\n"] * 100 + [b"OK done\n"]
        assert handler.most_running == 4
        writer.close()

    run(serve(handler, body, max_in_flight=4))


def test_bad_requests_leave_the_connection_usable(run: Any) -> None:
    async def body(server: ApiServer) -> None:
        lines = await exchange(
            server.port, b"BOGUS x\n\nAPPLY\nADD a b 0 1\nping\r\nAPPLY a\n", replies=6
        )
        assert lines[0].startswith(b"ERR BADREQUEST unknown verb 'BOGUS'; accepted verbs: APPLY")
        assert lines[1].startswith(b"ERR BADREQUEST empty request")
        assert lines[2].startswith(b"ERR BADREQUEST missing payload: usage APPLY <payload>")
        assert lines[3].startswith(b"ERR BADREQUEST p2p port must be")
        assert lines[4:] == [b"OK PONG\n", b"OK a\n"]

    run(serve(Handler(), body))


def test_an_overlong_line_gets_toolarge_and_the_next_line_is_served(run: Any) -> None:
    async def body(server: ApiServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"APPLY " + b"a" * 50)
        for _ in range(20):
            writer.write(b"b" * 1000)
            await writer.drain()
        assert await reader.readline() == b"ERR TOOLARGE line exceeds 64 bytes\n"
        writer.write(b"c\r\nAPPLY " + b"d" * 58 + b"\r\n")  # exactly 64 bytes: accepted
        assert await reader.readline() == b"OK " + b"d" * 58 + b"\n"
        writer.close()

    run(serve(Handler(), body))


def test_results_and_messages_are_escaped_onto_one_line(run: Any) -> None:
    handler = Handler()

    async def body(server: ApiServer) -> None:
        lines = await exchange(server.port, b"APPLY a\\b\rc\nAPPLY fail\n", replies=2)
        assert lines == [b"OK a\\\\b\\rc\n", b"ERR FSM exit 1: bad\\ncommand\n"]

    run(serve(handler, body))


def test_json_requests_get_json_replies(run: Any) -> None:
    handler = Handler()

    async def body(server: ApiServer) -> None:
        requests = [
            {"op": "apply", "data": "SET a 1\n", "client": "c-1", "seq": 7, "id": 42},
            {"op": "apply", "data": "redirect", "id": "r"},
            {"op": "frobnicate", "id": [1, 2]},
            {"op": "ping", "id": 0},
        ]
        data = b"".join(json.dumps(r).encode() + b"\n" for r in requests) + b"{oops\n"
        replies = [json.loads(line) for line in await exchange(server.port, data, 5)]
        assert replies[0] == {"id": 42, "ok": True, "result": "SET a 1\n"}
        assert replies[1]["error"] == "REDIRECT" and replies[1]["port"] == 8080
        assert replies[2]["id"] == [1, 2] and replies[2]["error"] == "BADREQUEST"
        assert replies[3] == {"id": 0, "ok": True, "result": "PONG"}
        assert replies[4]["id"] is None and replies[4]["error"] == "BADREQUEST"
        assert (handler.seen[0].client, handler.seen[0].seq) == ("c-1", 7)

    run(serve(handler, body, max_line=1024))


def test_ping_is_answered_without_the_handler(run: Any) -> None:
    handler = Handler()

    async def body(server: ApiServer) -> None:
        assert await exchange(server.port, b"PING\nping\nPing\n", 3) == [b"OK PONG\n"] * 3
        assert handler.seen == []

    run(serve(handler, body))


def test_a_failing_handler_is_logged_and_answered_internal(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(server: ApiServer) -> None:
        lines = await exchange(server.port, b"APPLY boom\nAPPLY ok\n", 2)
        assert lines == [b"ERR INTERNAL RuntimeError: handler bug\n", b"OK ok\n"]

    with caplog.at_level(logging.ERROR, logger="graft.api"):
        run(serve(Handler(), body))
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None


def test_a_half_closed_client_gets_every_reply_then_eof(run: Any) -> None:
    async def body(server: ApiServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"APPLY 1\nAPPLY 2\nSTATUS")  # the last line has no LF
        writer.write_eof()
        assert await reader.read() == b'OK 1\nOK 2\nOK {"id":"n1","role":"leader"}\n'
        writer.close()

    run(serve(Handler(), body))


def test_a_reset_connection_cancels_its_pending_requests(run: Any) -> None:
    handler = Handler()
    handler.gates = {b"wait": asyncio.Event()}
    handler.expect = 2

    async def body(server: ApiServer) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"APPLY wait\nAPPLY wait\n")
        await handler.arrived.wait()
        linger = struct.pack("ii", 1, 0)  # close with RST: the client is gone, not half-closed
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        writer.close()
        await writer.wait_closed()
        await until(lambda: handler.cancelled == 2)
        assert handler.running == 0
        assert server.connections == set()

    run(serve(handler, body))


def test_close_with_pending_requests_is_quiet(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    handler = Handler()
    handler.gates = {b"wait": asyncio.Event()}
    handler.expect = 1

    async def main() -> None:
        server = ApiServer(host="127.0.0.1", port=0, handler=handler, max_line=64)
        await server.start()
        port = server.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"APPLY wait\n")
        await handler.arrived.wait()
        await server.close()
        assert handler.cancelled == 1
        assert await reader.read() == b""
        writer.close()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)

    with caplog.at_level(logging.WARNING):
        run(main())
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_port_zero_reports_the_bound_port(run: Any) -> None:
    async def main() -> None:
        server = ApiServer(host="127.0.0.1", port=0, handler=Handler(), max_line=8)
        with pytest.raises(RuntimeError, match="not listening"):
            _ = server.port
        await server.start()
        assert server.port > 0
        await server.close()
        await server.close()  # twice is harmless

    run(main())


NC = shutil.which("nc")


def test_a_real_nc_session() -> None:
    """nc is installed by install.sh; its absence is a setup failure, not a skip."""
    assert NC is not None, "nc is missing: run ./install.sh (it installs netcat-openbsd)"
    handler = Handler()

    async def body(server: ApiServer) -> None:
        script = b"PING\nAPPLY SET a 1\r\nquery GET a\nNOPE\nSTATUS\n"
        proc = await asyncio.create_subprocess_exec(
            NC, "-N", "127.0.0.1", str(server.port),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate(script)
        assert proc.returncode == 0
        lines = out.decode().splitlines()
        assert lines[:3] == ["OK PONG", "OK SET a 1", "OK GET a"]
        assert lines[3].startswith("ERR BADREQUEST unknown verb 'NOPE'")
        assert lines[4:] == ['OK {"id":"n1","role":"leader"}']
        assert [r.command_bytes() for r in handler.seen[:2]] == [b"SET a 1\n", b"GET a\n"]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(serve(handler, body), 20))


def test_a_client_that_does_not_read_stops_being_read(run: Any) -> None:
    """Write-side back-pressure: replies pile up in the kernel and the transport only up to
    its high-water mark, then the server stops reading requests."""
    count = 100_000

    async def body(server: ApiServer) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # keep the kernel's share small
        sock.connect(("127.0.0.1", server.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        await until(lambda: bool(server.connections))
        (connection,) = server.connections
        accepted = connection._transport.get_extra_info("socket")  # type: ignore[union-attr]
        accepted.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

        writer.write(b"PING\n" * count)  # 500 kB of requests, 800 kB of replies
        await until(lambda: connection._reading_paused)
        await asyncio.sleep(0.05)  # the server has every chance to read more than it should
        transport = connection._transport
        assert transport is not None and transport.get_write_buffer_size() < 1 << 20

        received = bytearray()
        while len(received) < count * 8:
            chunk = await reader.read(1 << 16)
            assert chunk, "the server closed the connection"
            received += chunk
        assert received == b"OK PONG\n" * count
        writer.close()

    run(serve(Handler(), body))
