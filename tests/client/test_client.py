"""graft.client against real ApiServers (each on its own loop thread) with fake handlers."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from graft.api.protocol import Err, ErrCode, Ok, Op, Outcome, Redirect, Reply, Request
from graft.api.server import ApiServer
from graft.client import (
    DISCONNECTED,
    REDIRECT,
    TIMEOUT,
    UNREACHABLE,
    AsyncClient,
    Client,
    ClientError,
    parse_reply,
)

pytestmark = pytest.mark.timeout(30)

Answer = Callable[[Request], Awaitable[Reply]]


class Node:
    """An ApiServer on a private event loop thread; `answer` plays the node's part."""

    def __init__(self, answer: Answer, role: str = "leader", term: int = 1) -> None:
        self.answer = answer
        self.role, self.term = role, term
        self.seen: list[Request] = []
        self.loop = asyncio.new_event_loop()
        self.server = ApiServer(host="127.0.0.1", port=0, handler=self, max_line=4096)
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(5)
        self.endpoint = ("127.0.0.1", self.server.port)

    async def handle(self, request: Request) -> Reply:
        self.seen.append(request)
        if request.op is Op.STATUS:
            return Ok(f'{{"id":"n","role":"{self.role}","term":{self.term}}}'.encode())
        return await self.answer(request)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.start())
        ready.set()
        self.loop.run_forever()

    def drop_connections(self) -> None:
        def drop() -> None:
            for connection in list(self.server.connections):
                connection.abort()

        self.loop.call_soon_threadsafe(drop)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


async def echo(request: Request) -> Reply:
    if request.op in (Op.APPLY, Op.QUERY, Op.LOCAL):
        return Ok(request.command_bytes())
    if request.op is Op.SNAPSHOT:
        return Ok(b"42\n")
    if request.op is Op.MEMBERS:
        return Ok(b'{"voters":["a","b"]}')
    return Ok(" ".join((request.op.name, *request.args)).encode())


@pytest.fixture
def nodes() -> Iterator[Callable[..., Node]]:
    started: list[Node] = []

    def start(answer: Answer = echo, **kwargs: Any) -> Node:
        node = Node(answer, **kwargs)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


def dead_endpoint() -> tuple[str, int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return ("127.0.0.1", sock.getsockname()[1])  # closed at once: connection refused


def test_every_verb_sends_its_line_and_parses_its_result(nodes: Callable[..., Node]) -> None:
    node = nodes()
    with Client([node.endpoint], timeout=2) as client:
        assert client.apply("SET a 1") == "SET a 1"
        assert client.query(b"GET a") == "GET a"
        assert client.local("GET a") == "GET a"
        assert client.ping() == "PONG"
        assert client.status() == {"id": "n", "role": "leader", "term": 1}
        assert client.snapshot() == 42
        assert client.members() == {"voters": ["a", "b"]}
        assert client.add("hopper", "10.0.0.4", 8883, 8083) == "ADD hopper 10.0.0.4 8883 8083"
        assert client.remove("hopper") == "REMOVE hopper"
        assert client.transfer("turing") == "TRANSFER turing"
        assert client.request("apply x") == "OK x"
    assert [r.command_bytes() for r in node.seen[:3]] == [b"SET a 1\n", b"GET a\n", b"GET a\n"]


def test_results_come_back_unescaped(nodes: Callable[..., Node]) -> None:
    async def multiline(request: Request) -> Reply:
        return Ok(b"line 1\r\nback\\slash\nline 3\n")

    with Client([nodes(multiline).endpoint], timeout=2) as client:
        assert client.query("x") == "line 1\r\nback\\slash\nline 3"


def test_payloads_that_do_not_fit_a_line_are_refused_before_sending(
    nodes: Callable[..., Node],
) -> None:
    node = nodes()
    with Client([node.endpoint], timeout=2) as client:
        for bad in ("a\nb", "a\r", ""):
            with pytest.raises(ValueError):
                client.apply(bad)
        with pytest.raises(ValueError):
            client.remove("two words")
    assert node.seen == []


def test_err_raises_clienterror_with_code_message_and_outcome(nodes: Callable[..., Node]) -> None:
    async def refuse(request: Request) -> Reply:
        if request.payload == b"fsm":
            return Err(ErrCode.FSM, "exit 3\nstderr")
        if request.payload == b"slow":
            return Err(ErrCode.TIMEOUT, "entry 9 was not applied in time")
        return Err(ErrCode.NOLEADER, "no leader")

    with Client([nodes(refuse).endpoint], timeout=2) as client:
        with pytest.raises(ClientError) as info:
            client.apply("fsm")
        assert (info.value.code, info.value.message) == ("FSM", "exit 3\nstderr")
        assert info.value.outcome is Outcome.APPLIED
        with pytest.raises(ClientError) as info:
            client.apply("slow")
        assert info.value.outcome is Outcome.UNKNOWN
        with pytest.raises(ClientError) as info:
            client.apply("x")
        assert info.value.code == "NOLEADER" and info.value.outcome is Outcome.NOT_APPLIED
        assert client.ping() == "PONG"  # the connection survives errors


def test_redirect_is_followed_to_the_leader(nodes: Callable[..., Node]) -> None:
    leader = nodes()

    async def redirect(request: Request) -> Reply:
        return Redirect("leader", *leader.endpoint)

    follower = nodes(redirect, role="follower")
    with Client([follower.endpoint], timeout=2) as client:
        assert client.apply("SET a 1") == "SET a 1"
        assert client.endpoint == leader.endpoint
        assert client.apply("SET b 2") == "SET b 2"
    assert len(leader.seen) == 2 and len(follower.seen) == 1


def test_redirect_loops_end(nodes: Callable[..., Node]) -> None:
    async def to_self(request: Request) -> Reply:
        return Redirect("self", *node.endpoint)

    node = nodes(to_self)
    client = Client([node.endpoint], timeout=2, max_redirects=2)
    with client, pytest.raises(ClientError) as info:
        client.apply("x")
    assert info.value.code == REDIRECT
    assert info.value.outcome is Outcome.NOT_APPLIED
    assert len(node.seen) == 3


def test_refused_endpoints_are_skipped(nodes: Callable[..., Node]) -> None:
    node = nodes()
    with Client([dead_endpoint(), node.endpoint], timeout=2) as client:
        assert client.apply("x") == "x"
        assert client.endpoint == node.endpoint

    client = Client([dead_endpoint(), dead_endpoint()], timeout=2)
    with client, pytest.raises(ClientError) as info:
        client.ping()
    assert info.value.code == UNREACHABLE and info.value.outcome is Outcome.NOT_APPLIED


def test_find_leader_asks_status_everywhere(nodes: Callable[..., Node]) -> None:
    stale = nodes(role="leader", term=3)  # a partitioned old leader
    follower = nodes(role="follower", term=4)
    leader = nodes(role="leader", term=4 + 1)
    endpoints = [dead_endpoint(), stale.endpoint, follower.endpoint, leader.endpoint]
    with Client(endpoints, timeout=2) as client:
        assert client.find_leader() == leader.endpoint
        assert client.apply("x") == "x"
    assert [r.op for r in leader.seen] == [Op.STATUS, Op.APPLY]

    client = Client([follower.endpoint], timeout=2)
    with client, pytest.raises(ClientError, match="NOLEADER"):
        client.find_leader()


def test_a_silent_node_times_out_and_the_next_request_is_not_confused(
    nodes: Callable[..., Node],
) -> None:
    release = threading.Event()

    async def stall(request: Request) -> Reply:
        if request.payload == b"stall":
            await asyncio.get_running_loop().run_in_executor(None, release.wait, 5)
        return Ok(request.payload)

    with Client([nodes(stall).endpoint], timeout=0.2) as client:
        with pytest.raises(ClientError) as info:
            client.apply("stall")
        assert info.value.code == TIMEOUT and info.value.outcome is Outcome.UNKNOWN
        release.set()
        assert client.apply("after") == "after"


def test_a_dropped_mutation_is_unknown_but_a_dropped_read_is_retried(
    nodes: Callable[..., Node],
) -> None:
    hold = threading.Event()

    async def hang(request: Request) -> Reply:
        node_a.drop_connections()
        await asyncio.get_running_loop().run_in_executor(None, hold.wait, 5)
        return Ok(b"late")

    node_a = nodes(hang)
    node_b = nodes()
    with Client([node_a.endpoint, node_b.endpoint], timeout=2) as client:
        with pytest.raises(ClientError) as info:
            client.apply("x")
        assert info.value.code == DISCONNECTED and info.value.outcome is Outcome.UNKNOWN
        assert node_b.seen == []

        client._current = 0
        assert client.query("GET a") == "GET a"  # re-sent to node_b
    hold.set()
    assert [r.op for r in node_b.seen] == [Op.QUERY]


def test_an_idle_connection_closed_by_the_server_is_reopened(nodes: Callable[..., Node]) -> None:
    node = nodes()
    with Client([node.endpoint], timeout=2) as client:
        assert client.apply("one") == "one"
        node.drop_connections()
        for _ in range(200):  # wait until the client's socket sees the close
            if not client._idle_and_open(client._sock):  # type: ignore[arg-type]
                break
            threading.Event().wait(0.005)
        assert client.apply("two") == "two"
    assert [r.payload for r in node.seen] == [b"one", b"two"]


def test_parse_reply() -> None:
    assert parse_reply("OK") == ""
    assert parse_reply("OK a\\nb") == "a\nb"
    with pytest.raises(ClientError) as info:
        parse_reply("REDIRECT turing 10.0.0.1:8080")
    assert (info.value.leader, info.value.endpoint) == ("turing", ("10.0.0.1", 8080))
    with pytest.raises(ClientError, match="PROTOCOL"):
        parse_reply("HELLO")
    with pytest.raises(ClientError, match="PROTOCOL"):
        parse_reply("REDIRECT turing nowhere")
    with pytest.raises(ClientError) as info:
        parse_reply("ERR WHATEVER new code")
    assert info.value.outcome is Outcome.UNKNOWN


# --- AsyncClient ----------------------------------------------------------------------------


def test_async_client_pipelines_concurrent_calls(nodes: Callable[..., Node]) -> None:
    gate = threading.Event()

    async def slow_first(request: Request) -> Reply:
        if request.payload == b"0":
            await asyncio.get_running_loop().run_in_executor(None, gate.wait, 5)
        return Ok(request.payload)

    node = nodes(slow_first)

    async def main() -> None:
        async with AsyncClient([dead_endpoint(), node.endpoint], timeout=5) as client:
            calls = [asyncio.ensure_future(client.apply(str(i))) for i in range(200)]
            for _ in range(4000):  # all are sent before the first is answered
                if len(node.seen) == 200:
                    break
                await asyncio.sleep(0.001)
            assert len(node.seen) == 200
            gate.set()
            assert await asyncio.gather(*calls) == [str(i) for i in range(200)]
            assert await client.pipeline(["PING", "BOGUS", "query q"]) == [
                "OK PONG",
                "ERR BADREQUEST unknown verb 'BOGUS'; accepted verbs: APPLY QUERY LOCAL STATUS "
                "PING SNAPSHOT MEMBERS ADD REMOVE TRANSFER",
                "OK q",
            ]
            assert (await client.status())["role"] == "leader"
            assert await client.ping() == "PONG"
            assert await client.local("l") == "l"

    asyncio.run(main())


def test_async_client_errors(nodes: Callable[..., Node]) -> None:
    async def answer(request: Request) -> Reply:
        if request.payload == b"redirect":
            return Redirect("turing", "10.0.0.1", 8080)
        if request.payload == b"drop":
            node.drop_connections()
            await asyncio.sleep(1)
        return Ok(request.payload)

    node = nodes(answer)

    async def main() -> None:
        async with AsyncClient([node.endpoint], timeout=2) as client:
            with pytest.raises(ClientError) as info:
                await client.query("redirect")
            assert info.value.code == REDIRECT
            assert info.value.endpoint == ("10.0.0.1", 8080)
            with pytest.raises(ClientError) as info:
                await client.apply("drop")
            assert info.value.code == DISCONNECTED

        with pytest.raises(ClientError) as info:
            await AsyncClient([dead_endpoint()], timeout=2).connect()
        assert info.value.code == UNREACHABLE

    asyncio.run(main())
