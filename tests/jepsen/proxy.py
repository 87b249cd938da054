"""A fault-injecting TCP proxy for the peer links of a local cluster (asyncio, 127.0.0.1).

Every directed link A->B (the connections node A dials to node B) gets its own listening
port that forwards to B's real p2p port; A's copy of graft.yaml names that port as B's p2p
address. The proxy is controlled in-process:

- ``block(src, dst)`` stops bytes from src reaching dst. New connections on link src->dst
  are refused (closed at once: the dialer's handshake could never arrive); on link dst->src
  a connection is closed as soon as src tries to send on it, so dst's requests still reach
  src but src's replies do not. Blocking closes every open connection on both links.
- partitions built from that: ``isolate``, ``split`` (majority/minority), ``one_way``;
- ``set_delay`` holds every chunk of one direction for a while (order kept);
- ``flap`` toggles a partition on and off; ``heal`` removes every block and delay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

log = logging.getLogger("graft.jepsen.proxy")
CHUNK = 65536


@dataclass(eq=False)
class _Link:
    src: str
    dst: str
    target_port: int
    server: asyncio.Server | None = None
    port: int = 0
    connections: set[_Connection] = field(default_factory=set)


@dataclass(eq=False)
class _Connection:
    link: _Link
    writers: list[asyncio.StreamWriter]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        for task in self.tasks:
            task.cancel()
        self.link.connections.discard(self)


class FaultProxy:
    """One listening port per directed link; faults are switched on and off by method calls."""

    def __init__(self, p2p_ports: dict[str, int], reserved: set[int] | None = None) -> None:
        self.p2p_ports = dict(p2p_ports)
        # Ports planned for the nodes but maybe not bound yet: a link must not take one.
        self.reserved = set(reserved or ()) | set(p2p_ports.values())
        self.links: dict[tuple[str, str], _Link] = {}
        self.blocked: set[tuple[str, str]] = set()
        self.delays: dict[tuple[str, str], float] = {}
        self._flappers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for src in self.p2p_ports:
            for dst, target in self.p2p_ports.items():
                if src == dst:
                    continue
                link = _Link(src, dst, target)
                link.server, link.port = await self._listen(link)
                self.links[(src, dst)] = link

    async def _listen(self, link: _Link) -> tuple[asyncio.Server, int]:
        """A free port for `link` that is none of the nodes' planned ports."""
        refused: list[asyncio.Server] = []
        try:
            while True:
                server = await asyncio.start_server(
                    lambda r, w: self._accept(link, r, w), "127.0.0.1", 0
                )
                port = int(server.sockets[0].getsockname()[1])
                if port not in self.reserved:
                    return server, port
                refused.append(server)  # held until a good one is found, so not drawn again
        finally:
            for server in refused:
                server.close()

    def port(self, src: str, dst: str) -> int:
        """The port node src must dial to reach node dst."""
        return self.links[(src, dst)].port

    async def stop(self) -> None:
        self.stop_flapping()
        for link in self.links.values():
            for connection in list(link.connections):
                connection.close()
            if link.server is not None:
                link.server.close()
        for link in self.links.values():
            if link.server is not None:
                await link.server.wait_closed()

    # -- faults -------------------------------------------------------------------------

    def block(self, src: str, dst: str) -> None:
        """Bytes from src no longer reach dst."""
        self.blocked.add((src, dst))
        self._drop_connections({(src, dst), (dst, src)})

    def block_pairs(self, pairs: Iterable[tuple[str, str]]) -> None:
        for src, dst in pairs:
            self.block(src, dst)

    def isolate(self, node: str) -> None:
        others = [peer for peer in self.p2p_ports if peer != node]
        self.block_pairs([(node, other) for other in others])
        self.block_pairs([(other, node) for other in others])

    def split(self, side: Iterable[str]) -> None:
        """Cut every link between side and the rest (e.g. a minority from the majority)."""
        one = set(side)
        rest = [peer for peer in self.p2p_ports if peer not in one]
        for a in one:
            for b in rest:
                self.block(a, b)
                self.block(b, a)

    def one_way(self, src: str, dsts: Iterable[str]) -> None:
        """src can hear from dsts but nothing it sends reaches them."""
        self.block_pairs([(src, dst) for dst in dsts])

    def set_delay(self, seconds: float, pairs: Iterable[tuple[str, str]] | None = None) -> None:
        """Hold the bytes from src to dst for seconds (every directed pair by default)."""
        chosen = list(pairs) if pairs is not None else list(self.links)
        for pair in chosen:
            self.delays[pair] = seconds

    def flap(self, node: str, period: float) -> None:
        """Isolate node and heal it again every period seconds until heal()."""

        async def toggle() -> None:
            while True:
                self.isolate(node)
                await asyncio.sleep(period)
                self._unblock_node(node)
                await asyncio.sleep(period)

        self._flappers.append(asyncio.get_running_loop().create_task(toggle()))

    def stop_flapping(self) -> None:
        for task in self._flappers:
            task.cancel()
        self._flappers.clear()

    def heal(self) -> None:
        self.stop_flapping()
        self.blocked.clear()
        self.delays.clear()

    def _unblock_node(self, node: str) -> None:
        self.blocked = {pair for pair in self.blocked if node not in pair}

    def _drop_connections(self, links: set[tuple[str, str]]) -> None:
        for key in links:
            link = self.links.get(key)
            if link is None:
                continue
            for connection in list(link.connections):
                connection.close()

    # -- forwarding -----------------------------------------------------------------------

    async def _accept(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if (link.src, link.dst) in self.blocked:
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", link.target_port
            )
        except OSError:
            writer.close()  # the target is down (killed): the dialer sees a dropped link
            return
        connection = _Connection(link, [writer, upstream_writer])
        link.connections.add(connection)
        loop = asyncio.get_running_loop()
        connection.tasks = [
            loop.create_task(self._pump(connection, reader, upstream_writer, link.src, link.dst)),
            loop.create_task(self._pump(connection, upstream_reader, writer, link.dst, link.src)),
        ]

    async def _pump(
        self,
        connection: _Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        src: str,
        dst: str,
    ) -> None:
        """Copy src's bytes to dst, applying the current block and delay for src->dst.

        Chunks are stamped when read and written once their delay has passed, so a delay
        adds latency without limiting throughput, and order is kept.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = loop.create_task(self._send(queue, writer, src, dst))
        try:
            while True:
                chunk = await reader.read(CHUNK)
                if not chunk or (src, dst) in self.blocked:
                    break
                queue.put_nowait((loop.time() + self.delays.get((src, dst), 0.0), chunk))
        except (ConnectionError, OSError) as error:
            log.debug("link %s->%s closed: %s", src, dst, error)
        finally:
            sender.cancel()
            connection.close()

    async def _send(
        self,
        queue: asyncio.Queue[tuple[float, bytes]],
        writer: asyncio.StreamWriter,
        src: str,
        dst: str,
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                due, chunk = await queue.get()
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                if (src, dst) in self.blocked:
                    break
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError) as error:
            log.debug("link %s->%s closed: %s", src, dst, error)
        finally:
            writer.close()
