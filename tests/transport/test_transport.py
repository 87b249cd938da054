"""Transports on 127.0.0.1 talking over real sockets, on the default loop and on uvloop."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import trustme

from graft.raft.messages import AppendEntries, RequestVote, TimeoutNow
from graft.raft.types import Entry, EntryKind
from graft.transport import (
    ForwardRequest,
    Frame,
    FrameError,
    Hello,
    Refused,
    Welcome,
    client_context,
    decode,
    encode,
    encode_frame,
    server_context,
)
from graft.transport.framing import HEADER
from graft.transport.peer import BACKOFF_CAP, BACKOFF_FIRST, backoff_delay
from graft.transport.server import MAX_HELLO

from .conftest import Node, all_connected, eventually, free_port, mesh

Run = Callable[[Coroutine[Any, Any, None]], None]


def append(src: str, dst: str, first: int, count: int = 3) -> AppendEntries:
    entries = tuple(
        Entry(first + i, 1, EntryKind.COMMAND, b"cmd %d\x00\xff" % (first + i))
        for i in range(count)
    )
    return AppendEntries(1, src, dst, first - 1, 1, entries, first - 1)


def warnings_matching(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and text in r.getMessage()
    ]


class RawPeer:
    """A hand-driven client of a node's p2p port, for handshakes and garbage."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, node: Node) -> RawPeer:
        return cls(*await asyncio.open_connection(*node.address))

    def send(self, frame: Frame) -> None:
        self.writer.write(encode_frame(encode(frame)))

    async def receive(self) -> Frame:
        (size,) = HEADER.unpack(await asyncio.wait_for(self.reader.readexactly(4), 5))
        return decode(await asyncio.wait_for(self.reader.readexactly(size), 5))

    async def closed_by_peer(self) -> bool:
        rest = await asyncio.wait_for(self.reader.read(), 5)
        return rest == b""

    def close(self) -> None:
        self.writer.close()


async def check_exchange(a: Node, b: Node, term: int) -> None:
    assert a.transport.send(b.id, TimeoutNow(term, a.id, b.id))
    assert await b.receive() == (a.id, TimeoutNow(term, a.id, b.id))


def test_three_nodes_exchange_frames_in_order(run: Run) -> None:
    async def scenario() -> None:
        nodes = [await Node(name).start() for name in ("a", "b", "c")]
        mesh(nodes)
        await all_connected(nodes)

        for src in nodes:
            for dst in nodes:
                if src is not dst:
                    for i in range(1, 50, 3):
                        assert src.transport.send(dst.id, append(src.id, dst.id, i))

        for dst in nodes:
            received: dict[str, list[Frame]] = {}
            for _ in range(2 * 17):
                peer, frame = await dst.receive()
                received.setdefault(peer, []).append(frame)
            for src in nodes:
                if src is not dst:
                    expected = [append(src.id, dst.id, i) for i in range(1, 50, 3)]
                    assert received[src.id] == expected

        for node in nodes:
            await node.transport.close()

    run(scenario())


def test_frames_sent_before_the_connection_is_up_are_delivered(run: Run) -> None:
    async def scenario() -> None:
        a, b = await Node("a").start(), await Node("b").start()
        mesh([a, b])

        assert a.transport.send("b", RequestVote(4, "a", "b", 10, 3, pre_vote=True))

        assert await b.receive() == ("a", RequestVote(4, "a", "b", 10, 3, pre_vote=True))
        await a.transport.close()
        await b.transport.close()

    run(scenario())


def test_reconnects_after_a_peer_restarts(run: Run) -> None:
    async def scenario() -> None:
        a, b = await Node("a").start(), await Node("b").start()
        mesh([a, b])
        await check_exchange(a, b, 1)

        await b.transport.close()
        await eventually(lambda: not a.transport.connected("b"))
        b = await Node("b", port=b.port, peers={"a": a.address}).start()

        await eventually(lambda: a.transport.connected("b"))
        await check_exchange(a, b, 2)
        await check_exchange(b, a, 3)
        await a.transport.close()
        await b.transport.close()

    run(scenario())


def test_a_caller_from_another_cluster_is_refused_and_warned_once(
    run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="graft.transport")

    async def scenario() -> None:
        a = await Node("a", peers={"b": ("127.0.0.1", 9)}).start()

        replies = []
        for _ in range(3):
            raw = await RawPeer.connect(a)
            raw.send(Hello("other", "b"))
            replies.append(await raw.receive())
            assert await raw.closed_by_peer()
            raw.close()

        assert replies == [Refused("cluster 'other' is not 'test'")] * 3
        assert len(warnings_matching(caplog, "cluster 'other' is not 'test'")) == 1
        await a.transport.close()

    run(scenario())


def test_transports_of_different_clusters_never_connect(
    run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="graft.transport")

    async def scenario() -> None:
        a, b = await Node("a", cluster="blue").start(), await Node("b", cluster=None).start()
        mesh([a, b])

        await eventually(lambda: len(warnings_matching(caplog, "refused us")) == 2)
        assert not a.transport.connected("b") and not b.transport.connected("a")
        assert warnings_matching(caplog, "cluster '' is not 'blue'")
        await a.transport.close()
        await b.transport.close()

    run(scenario())


def test_an_unknown_id_is_refused_until_set_peers_adds_it(
    run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="graft.transport")

    async def scenario() -> None:
        a = await Node("a").start()
        raw = await RawPeer.connect(a)
        raw.send(Hello("test", "mallory"))
        assert await raw.receive() == Refused("unknown node id 'mallory'")
        assert await raw.closed_by_peer()
        assert warnings_matching(caplog, "unknown node id 'mallory'")

        a.transport.set_peers({"mallory": ("127.0.0.1", 9)})
        raw = await RawPeer.connect(a)
        raw.send(Hello("test", "mallory"))
        assert await raw.receive() == Welcome("a")
        raw.send(TimeoutNow(5, "mallory", "a"))
        assert await a.receive() == ("mallory", TimeoutNow(5, "mallory", "a"))
        raw.close()
        await a.transport.close()

    run(scenario())


@pytest.mark.parametrize(
    "garbage",
    [
        "random-bytes",
        "oversized-before-hello",
        "unknown-tag",
        "no-hello-first",
        "bad-frame-after-hello",
        "oversized-after-hello",
        "spoofed-sender",
        "second-hello",
    ],
)
def test_a_bad_connection_is_closed_and_the_others_keep_working(
    run: Run, caplog: pytest.LogCaptureFixture, garbage: str
) -> None:
    caplog.set_level(logging.INFO, logger="graft.transport")

    async def scenario() -> None:
        a = await Node("a", max_frame=1 << 20).start()
        b = await Node("b", max_frame=1 << 20).start()
        mesh([a, b])
        await check_exchange(b, a, 1)

        raw = await RawPeer.connect(a)
        expected_warning = await send_garbage(raw, garbage)

        assert await raw.closed_by_peer()
        assert warnings_matching(caplog, expected_warning)
        await check_exchange(b, a, 2)
        await check_exchange(a, b, 3)
        assert a.inbox.empty()
        raw.close()
        await a.transport.close()
        await b.transport.close()

    run(scenario())


async def send_garbage(raw: RawPeer, kind: str) -> str:
    """Send one kind of bad input; returns the text the node's warning must contain."""
    if kind == "random-bytes":
        data = bytearray(random.Random(7).randbytes(4096))
        data[0] |= 0x01  # the first length then states at least 16 MiB, over max_frame
        raw.writer.write(bytes(data))
        return "exceeds the limit"
    if kind == "oversized-before-hello":
        # Within max_frame, but no Hello is that long: closed without waiting for the body.
        raw.writer.write(HEADER.pack(MAX_HELLO + 1) + b"\x00" * 100)
        return "oversized handshake"
    if kind == "unknown-tag":
        raw.writer.write(encode_frame(b"\xee garbage"))
        return "unknown frame tag 0xee"
    if kind == "no-hello-first":
        raw.send(TimeoutNow(1, "b", "a"))
        assert await raw.receive() == Refused("expected Hello, got TimeoutNow")
        return "expected Hello"

    raw.send(Hello("test", "b"))
    assert await raw.receive() == Welcome("a")
    if kind == "bad-frame-after-hello":
        raw.writer.write(encode_frame(bytes([0x12]) + b"\x00" * 10))
        return "malformed frame"
    if kind == "oversized-after-hello":
        raw.writer.write(HEADER.pack((1 << 20) + 1))  # only the header: no body is waited for
        return "exceeds the limit"
    if kind == "second-hello":
        raw.send(Hello("test", "b"))
        return "handshake frame after the handshake"
    raw.send(TimeoutNow(1, "c", "a"))
    return "message from another sender"


def test_an_idle_caller_is_closed_after_the_handshake_timeout(
    run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="graft.transport")

    async def scenario() -> None:
        a = await Node("a", handshake_timeout=0.1).start()
        raw = await RawPeer.connect(a)
        assert await raw.closed_by_peer()
        assert warnings_matching(caplog, "no Hello within")
        raw.close()
        await a.transport.close()

    run(scenario())


def test_removing_a_peer_closes_its_connections(run: Run) -> None:
    async def scenario() -> None:
        a, b = await Node("a").start(), await Node("b").start()
        mesh([a, b])
        await all_connected([a, b])

        a.transport.set_peers({})

        assert not a.transport.connected("b")
        assert not a.transport.send("b", TimeoutNow(1, "a", "b"))
        await eventually(lambda: not b.transport.connected("a"))  # a closed b's inbound too
        await a.transport.close()
        await b.transport.close()

    run(scenario())


def test_send_is_bounded_and_drain_waits_for_the_queue(run: Run) -> None:
    async def scenario() -> None:
        unreachable = free_port()
        a = await Node("a", peers={"b": ("127.0.0.1", unreachable)}, max_queued_bytes=1000).start()
        frame = ForwardRequest(1, bytes(300))
        accepted = [a.transport.send("b", frame) for _ in range(5)]
        assert accepted == [True, True, True, False, False]
        assert not a.transport.send("nobody", frame)
        await a.transport.close()

        c, d = await Node("c").start(), await Node("d").start()
        mesh([c, d])
        await all_connected([c, d])
        for i in range(200):
            assert c.transport.send("d", ForwardRequest(i, bytes(50_000)))
        await c.transport.drain("d")
        received = [(await d.receive())[1] for _ in range(200)]
        assert [f.request_id for f in received if isinstance(f, ForwardRequest)] == list(range(200))
        await c.transport.close()
        await d.transport.close()

    run(scenario())


def test_a_frame_over_max_frame_is_refused_at_send(run: Run) -> None:
    async def scenario() -> None:
        a = await Node("a", peers={"b": ("127.0.0.1", free_port())}, max_frame=100).start()
        with pytest.raises(FrameError):
            a.transport.send("b", ForwardRequest(1, bytes(100)))
        await a.transport.close()

    run(scenario())


def test_close_is_quiet(run: Run, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        nodes = [await Node(name).start() for name in ("a", "b", "c")]
        mesh(nodes)
        await all_connected(nodes)
        for node in nodes:
            for other in nodes:
                if other is not node:
                    node.transport.send(other.id, append(node.id, other.id, 1, 100))

        for node in nodes:
            await node.transport.close()

    run(scenario())
    # Peers that are still open may log INFO "lost connection"; nothing louder may appear,
    # neither from graft nor from asyncio (unretrieved task errors, fatal transport errors).
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == []


def test_backoff_doubles_from_5_ms_to_a_jittered_cap() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, rng) for n in range(1, 12)]

    assert BACKOFF_FIRST <= delays[0] <= BACKOFF_FIRST * 1.25
    assert all(BACKOFF_FIRST * 2 ** (n - 1) <= d for n, d in enumerate(delays[:8], 1))
    assert all(BACKOFF_CAP <= d <= BACKOFF_CAP * 1.25 for d in delays[8:])


# -- mutual TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """TLS contexts per name: certificates for a and b, and one for "x" (nobody's id)."""
    ca = trustme.CA()
    directory: Path = tmp_path_factory.mktemp("pki")
    ca_path = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    result: dict[str, dict[str, Any]] = {}
    for name in ("a", "b", "x"):
        cert = ca.issue_cert(name)
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_path))
        cert.private_key_pem.write_to_path(str(key_path))
        result[name] = {
            "ssl_server": server_context(cert_path, key_path, ca_path),
            "ssl_client": client_context(cert_path, key_path, ca_path),
        }
    return result


def test_mutual_tls_exchange(run: Run, pki: dict[str, dict[str, Any]]) -> None:
    async def scenario() -> None:
        a, b = await Node("a", **pki["a"]).start(), await Node("b", **pki["b"]).start()
        mesh([a, b])
        await all_connected([a, b])

        await check_exchange(a, b, 1)
        await check_exchange(b, a, 2)
        await a.transport.close()
        await b.transport.close()

    run(scenario())


def test_a_certificate_naming_another_id_is_refused(
    run: Run, pki: dict[str, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="graft.transport")

    async def scenario() -> None:
        a, b = await Node("a", **pki["a"]).start(), await Node("b", **pki["x"]).start()
        mesh([a, b])

        # a refuses b's Hello (b's certificate names x), and a's own link refuses b because
        # the certificate b's listener presents does not name b either.
        await eventually(lambda: len(warnings_matching(caplog, "certificate names ['x']")) >= 2)
        assert not a.transport.connected("b") and not b.transport.connected("a")
        await a.transport.close()
        await b.transport.close()

    run(scenario())


def test_a_plain_caller_cannot_reach_a_tls_listener(
    run: Run, pki: dict[str, dict[str, Any]]
) -> None:
    async def scenario() -> None:
        a, b = await Node("a", **pki["a"]).start(), await Node("b").start()
        mesh([a, b])
        await asyncio.sleep(0.2)  # several dial attempts at the 5 ms back-off
        assert not b.transport.connected("a") and not a.transport.connected("b")
        await a.transport.close()
        await b.transport.close()

    run(scenario())


def test_wait_connected_ends_when_the_link_is_up_or_gone(run: Run) -> None:
    async def scenario() -> None:
        a = await Node("a", peers={"b": ("127.0.0.1", free_port())}).start()
        assert not await a.transport.wait_connected("nobody")

        waiter = asyncio.create_task(a.transport.wait_connected("b"))
        await asyncio.sleep(0.05)  # b is down: the waiter must still be waiting
        assert not waiter.done()
        a.transport.set_peers({})
        assert await asyncio.wait_for(waiter, 5) is False
        await a.transport.close()

    run(scenario())


def test_a_peer_that_drops_every_connection_at_once_is_redialled_forever(
    run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    """A listener that closes each connection the moment it accepts it (a peer going down,
    a proxy cutting the link) must not end the dial loop; once a real peer listens on that
    port, the link comes up."""

    async def scenario() -> None:
        dropped = 0

        def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal dropped
            dropped += 1
            writer.transport.abort()

        rude = await asyncio.start_server(drop, "127.0.0.1", 0)
        port = rude.sockets[0].getsockname()[1]
        a = await Node("a", peers={"b": ("127.0.0.1", port)}).start()
        a.transport.send("b", TimeoutNow(1, "a", "b"))
        await eventually(lambda: dropped >= 3)
        rude.close()
        await rude.wait_closed()

        b = await Node("b", port=port, peers={"a": a.address}).start()
        await eventually(lambda: a.transport.connected("b"))
        await check_exchange(a, b, 1)
        await a.transport.close()
        await b.transport.close()

    with caplog.at_level(logging.ERROR, logger="graft.transport"):
        run(scenario())
    assert not [r for r in caplog.records if "stopped" in r.getMessage()]
