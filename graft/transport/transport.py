"""`Transport`: the node's single handle on peer sockets.

Each node dials every other peer once and uses that outbound connection for everything it
sends to it (peer.py); connections accepted by the listener are used only to receive
(server.py). Two one-way connections per pair keep each side simple: no connection races to
resolve, and a sender never waits on a reader.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Callable, Mapping

from graft.transport._log import WarnOnce, logger
from graft.transport.codec import PROTOCOL_VERSION, Frame, Hello, PeerFrame, encode
from graft.transport.framing import HEADER, FrameError
from graft.transport.peer import LinkConfig, PeerLink
from graft.transport.server import InboundConnection

DEFAULT_MAX_FRAME = 64 << 20
DEFAULT_MAX_QUEUED_BYTES = 64 << 20


class Transport:
    """Peer connections of one node. Every method must be called on the event loop thread."""

    def __init__(
        self,
        *,
        node_id: str,
        cluster: str | None,
        listen: tuple[str, int],
        peers: Mapping[str, tuple[str, int]],
        on_frame: Callable[[str, PeerFrame], None],
        ssl_server: ssl.SSLContext | None = None,
        ssl_client: ssl.SSLContext | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
        handshake_timeout: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        if (ssl_server is None) != (ssl_client is None):
            raise ValueError("mutual TLS needs both ssl_server and ssl_client, or neither")
        self.node_id = node_id
        self._cluster = cluster or ""
        self._listen = listen
        self._on_frame = on_frame
        self._ssl_server = ssl_server
        self._max_frame = max_frame
        self._handshake_timeout = handshake_timeout
        self._config = LinkConfig(
            node_id=node_id,
            cluster=self._cluster,
            ssl_client=ssl_client,
            max_frame=max_frame,
            max_queued_bytes=max_queued_bytes,
            handshake_timeout=handshake_timeout,
        )
        self._rng = rng or random.Random()
        self._warn = WarnOnce()
        self._peers: dict[str, tuple[str, int]] = {}
        self._links: dict[str, PeerLink] = {}
        self._inbound: set[InboundConnection] = set()
        self._inbound_by_peer: dict[str, InboundConnection] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._started = False
        self._closing = False
        self._apply_peers(peers)

    # -- the interface the node uses ---------------------------------------------------------

    async def start(self) -> None:
        """Listen on `listen` and start dialling every peer."""
        loop = asyncio.get_running_loop()
        host, port = self._listen
        self._server = await loop.create_server(
            self._accept,
            host,
            port,
            ssl=self._ssl_server,
            reuse_address=True,
            ssl_handshake_timeout=self._handshake_timeout if self._ssl_server else None,
        )
        self._started = True
        for link in self._links.values():
            link.start()
        logger.info("node %s listening for peers on %s:%d", self.node_id, *self.listen_address)

    @property
    def listen_address(self) -> tuple[str, int]:
        """The address actually bound (useful when `listen` asked for port 0)."""
        if self._server is None or not self._server.sockets:
            return self._listen
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def close(self) -> None:
        """Stop listening, close every connection and stop dialling; logs nothing alarming."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        tasks = [task for link in self._links.values() if (task := link.close()) is not None]
        self._links.clear()
        for connection in list(self._inbound):
            connection.abort()

        # Not Server.wait_closed(): on Python 3.11 it also waits for connections still in their
        # TLS handshake, which this transport cannot reach (the protocol sees them only once
        # the handshake is done); they end by ssl_handshake_timeout. The listening socket
        # itself is closed by Server.close() at once.
        await asyncio.gather(*tasks, *self._retiring, return_exceptions=True)

    def send(self, peer: str, frame: Frame) -> bool:
        """Queue `frame` for `peer`; False when it was dropped (unknown peer, queue full).

        Never blocks. Raises FrameError if the frame cannot be encoded or exceeds max_frame:
        that is a bug of the caller (batches must be kept under the limit), not a network event.
        """
        link = self._links.get(peer)
        if link is None:
            return False
        body = encode(frame)
        if len(body) > self._max_frame:
            raise FrameError(
                f"{type(frame).__name__} of {len(body)} bytes exceeds max_frame {self._max_frame}"
            )
        return link.send(HEADER.pack(len(body)), body)

    def set_peers(self, peers: Mapping[str, tuple[str, int]]) -> None:
        """Membership change: dial new peers, close removed ones, redial moved ones."""
        before = dict(self._peers)
        self._apply_peers(peers)
        if self._peers != before:
            logger.info("node %s peers now %s", self.node_id, sorted(self._peers))

    def connected(self, peer: str) -> bool:
        """Whether the outbound connection to `peer` is up (handshake done)."""
        link = self._links.get(peer)
        return link is not None and link.connected

    async def wait_connected(self, peer: str) -> bool:
        """Until the outbound connection to `peer` is up (True), or `peer` is unknown or removed
        or the transport closes (False). Callers bound it with asyncio.timeout."""
        link = self._links.get(peer)
        return link is not None and await link.wait_connected()

    async def drain(self, peer: str) -> None:
        """Wait until everything queued for `peer` has been handed to its socket (or dropped
        because the connection failed: check `connected` or wait for the peer's reply)."""
        link = self._links.get(peer)
        if link is not None:
            await link.drain()

    # -- membership ---------------------------------------------------------------------------

    def _apply_peers(self, peers: Mapping[str, tuple[str, int]]) -> None:
        wanted = {pid: (host, int(port)) for pid, (host, port) in peers.items()}
        wanted.pop(self.node_id, None)  # we neither dial nor admit ourselves

        for pid, link in list(self._links.items()):
            if wanted.get(pid) != link.address:
                self._retire(pid)
        for pid in set(self._inbound_by_peer) - set(wanted):
            self._inbound_by_peer[pid].abort()

        self._peers = wanted
        for pid, address in wanted.items():
            if pid not in self._links:
                link = PeerLink(self._config, pid, address, self._warn, self._rng)
                self._links[pid] = link
                if self._started and not self._closing:
                    link.start()

    def _retire(self, pid: str) -> None:
        task = self._links.pop(pid).close()
        if task is not None:
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    # -- the listener (the Gate of server.py) -------------------------------------------------

    def _accept(self) -> InboundConnection:
        connection = InboundConnection(self, self._max_frame, self._handshake_timeout)
        self._inbound.add(connection)  # tracked from the start so close() reaches it
        return connection

    def admit(self, hello: Hello, certificate_names: set[str] | None) -> str | None:
        if self._closing:
            return "shutting down"
        if hello.version != PROTOCOL_VERSION:
            return f"protocol version {hello.version} is not {PROTOCOL_VERSION}"
        if hello.cluster != self._cluster:
            return f"cluster {hello.cluster!r} is not {self._cluster!r}"
        if hello.node_id not in self._peers:
            return f"unknown node id {hello.node_id!r}"
        if self._ssl_server is not None:
            names = certificate_names or set()
            if hello.node_id not in names:
                return f"certificate names {sorted(names)}, not {hello.node_id!r}"
        return None

    def dropped(self, peer: str | None, label: str, reason: str) -> None:
        # Keyed by the remote host rather than host:port, so a misconfigured peer that redials
        # (say, TLS on one side only) is reported once, not at every attempt.
        host = label.rsplit(":", 1)[0]
        self._warn.warning(
            ("dropped", peer or host, reason),
            "closing inbound connection from %s (peer %s): %s",
            label,
            peer or "not identified",
            reason,
        )

    def refused(self, hello: Hello | None, label: str, reason: str) -> None:
        claimed = hello.node_id if hello is not None else "?"
        self._warn.warning(
            ("refused", claimed, reason),
            "refused peer connection from %s claiming %r: %s",
            label,
            claimed,
            reason,
        )

    def opened(self, connection: InboundConnection) -> None:
        assert connection.peer is not None
        # A peer that redialled has left its former connection behind; keep only the newest.
        former = self._inbound_by_peer.get(connection.peer)
        self._inbound_by_peer[connection.peer] = connection
        if former is not None and former is not connection:
            former.abort()

    def closed(self, connection: InboundConnection) -> None:
        self._inbound.discard(connection)
        if connection.peer is not None and self._inbound_by_peer.get(connection.peer) is connection:
            del self._inbound_by_peer[connection.peer]

    def deliver(self, peer: str, frame: PeerFrame) -> None:
        self._on_frame(peer, frame)
