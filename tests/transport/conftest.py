"""Helpers for transport tests: run a coroutine on the default loop or uvloop, and a node."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any

import pytest
import uvloop

from graft.transport import PeerFrame, Transport

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture(params=list(LOOPS))
def run(request: pytest.FixtureRequest) -> Iterator[Callable[[Coroutine[Any, Any, None]], None]]:
    """Run a test coroutine to completion on one event loop implementation."""
    factory = LOOPS[request.param]

    def runner(coro: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=factory) as r:
            r.run(asyncio.wait_for(coro, 20))

    yield runner


class Node:
    """A Transport plus the frames it received, in order."""

    def __init__(self, node_id: str, cluster: str | None = "test", **options: Any) -> None:
        self.id = node_id
        self.inbox: asyncio.Queue[tuple[str, PeerFrame]] = asyncio.Queue()
        self.port = options.pop("port", 0)
        self.transport = Transport(
            node_id=node_id,
            cluster=cluster,
            listen=("127.0.0.1", self.port),
            peers=options.pop("peers", {}),
            on_frame=lambda peer, frame: self.inbox.put_nowait((peer, frame)),
            **options,
        )

    async def start(self) -> Node:
        await self.transport.start()
        self.port = self.transport.listen_address[1]
        return self

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    async def receive(self, within: float = 5.0) -> tuple[str, PeerFrame]:
        return await asyncio.wait_for(self.inbox.get(), within)


def mesh(nodes: list[Node]) -> None:
    """Tell every node the addresses of all the others."""
    addresses: Mapping[str, tuple[str, int]] = {n.id: n.address for n in nodes}
    for node in nodes:
        node.transport.set_peers(addresses)


async def eventually(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll a condition on real sockets; fails the test when it stays false."""
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def all_connected(nodes: list[Node]) -> None:
    async with asyncio.timeout(5):
        for a in nodes:
            for b in nodes:
                if a is not b:
                    assert await a.transport.wait_connected(b.id)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
