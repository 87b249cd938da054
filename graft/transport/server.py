"""The listening side: inbound peer connections, used only to receive.

A caller's first frame must be a Hello that the listener admits (same cluster, a known node
id, a certificate naming that id under TLS); the listener answers Welcome and from then on
hands every frame to the node with the id the handshake established. Anything else (a refused
Hello, a malformed frame, a Raft message claiming another sender) closes this connection only.
"""

from __future__ import annotations

import asyncio
import socket
from contextlib import suppress
from typing import Protocol, cast

from graft.transport._log import logger
from graft.transport.codec import Frame, Hello, PeerFrame, Refused, Welcome, decode, encode
from graft.transport.framing import FrameDecoder, FrameError, encode_frame
from graft.transport.tls import peer_identity

# A Hello is a few dozen bytes. Until one has been accepted, a connection may not announce a
# larger frame: otherwise a stranger's first four bytes could make us wait for (and buffer)
# up to max_frame bytes of a frame that will never be a valid Hello.
MAX_HELLO = 4096


class Gate(Protocol):
    """What an inbound connection asks of the transport that owns it."""

    node_id: str

    def admit(self, hello: Hello, certificate_names: set[str] | None) -> str | None:
        """None to accept the caller, or the reason it is refused."""

    def refused(self, hello: Hello | None, label: str, reason: str) -> None:
        """Log a refused handshake (warn-once)."""

    def dropped(self, peer: str | None, label: str, reason: str) -> None:
        """Log a connection closed for a protocol violation (warn-once)."""

    def opened(self, connection: InboundConnection) -> None:
        """The handshake of `connection` succeeded."""

    def closed(self, connection: InboundConnection) -> None:
        """`connection` is gone (after `opened` or not)."""

    def deliver(self, peer: str, frame: PeerFrame) -> None:
        """Hand a received frame to the node."""


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Disable Nagle: Raft messages are small and latency-bound, and writes are batched."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with suppress(OSError):  # the socket may already be closing; nothing to tune then
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def describe_address(transport: asyncio.BaseTransport) -> str:
    address = transport.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


class InboundConnection(asyncio.Protocol):
    """One accepted connection: handshake, then frames to the node."""

    def __init__(self, gate: Gate, max_frame: int, handshake_timeout: float) -> None:
        self._gate = gate
        self._decoder = FrameDecoder(max_frame)
        self._handshake_timeout = handshake_timeout
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.peer: str | None = None  # set by a successful handshake
        self.label = "?"  # the remote address, for logs

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self.label = describe_address(transport)
        set_nodelay(transport)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._handshake_timeout, self._handshake_expired)

    def data_received(self, data: bytes) -> None:
        try:
            self._decoder.feed(data)
            for body in self._decoder:
                if self._closed:
                    return
                self._receive(decode(body))
        except FrameError as exc:
            self._drop("malformed frame", str(exc))
            return

        if self.peer is None and not self._closed and self._decoder.pending > MAX_HELLO:
            self._drop("oversized handshake", f"declared length {self._decoder.pending}")

    def _receive(self, frame: Frame) -> None:
        peer = self.peer
        if peer is None:
            self._handshake(frame)
            return

        if isinstance(frame, Hello | Welcome | Refused):
            self._drop("handshake frame after the handshake", type(frame).__name__)
            return
        # Identity is the handshake's: a Raft message may not claim another sender.
        src = getattr(frame, "src", peer)
        if src != peer:
            self._drop("message from another sender", f"src {src!r}")
            return
        self._gate.deliver(peer, frame)

    def _handshake(self, frame: Frame) -> None:
        if not isinstance(frame, Hello):
            self._refuse(None, f"expected Hello, got {type(frame).__name__}")
            return

        names = None
        ssl_object = self._transport.get_extra_info("ssl_object") if self._transport else None
        if ssl_object is not None:
            names = peer_identity(ssl_object)
        reason = self._gate.admit(frame, names)
        if reason is not None:
            self._refuse(frame, reason)
            return

        self._cancel_timer()
        self.peer = frame.node_id
        self._write(Welcome(self._gate.node_id))
        self._gate.opened(self)

    def _refuse(self, hello: Hello | None, reason: str) -> None:
        self._gate.refused(hello, self.label, reason)
        self._write(Refused(reason))
        self.close()

    def _drop(self, what: str, detail: str) -> None:
        self._gate.dropped(self.peer, self.label, f"{what}: {detail}")
        self.abort()

    def _handshake_expired(self) -> None:
        self._timer = None
        logger.warning(
            "closing inbound connection from %s: no Hello within %.1f s",
            self.label,
            self._handshake_timeout,
        )
        self.abort()

    def _write(self, frame: Frame) -> None:
        if self._transport is not None and not self._closed:
            self._transport.write(encode_frame(encode(frame)))

    def close(self) -> None:
        """Close after what was written (a Refused) is flushed."""
        self._closed = True
        self._cancel_timer()
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Close at once, discarding buffered data."""
        self._closed = True
        self._cancel_timer()
        if self._transport is not None:
            self._transport.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._cancel_timer()
        if self.peer is not None:
            logger.debug("inbound connection from peer %s closed: %s", self.peer, exc)
        self._gate.closed(self)
