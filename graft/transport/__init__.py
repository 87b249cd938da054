"""Peer connections: length-prefixed frames over TCP, optionally mutual TLS. Owns peer sockets.

The node uses `Transport` (transport.py) and the frame classes of codec.py; docs/protocol-peer.md
describes the wire format.
"""

from graft.transport.codec import (
    PROTOCOL_VERSION,
    ForwardReply,
    ForwardRequest,
    Frame,
    Hello,
    PeerFrame,
    Refused,
    SnapshotAck,
    SnapshotChunk,
    Welcome,
    decode,
    encode,
)
from graft.transport.framing import FrameDecoder, FrameError, encode_frame
from graft.transport.tls import client_context, peer_identity, server_context
from graft.transport.transport import Transport

__all__ = [
    "PROTOCOL_VERSION",
    "ForwardReply",
    "ForwardRequest",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "Hello",
    "PeerFrame",
    "Refused",
    "SnapshotAck",
    "SnapshotChunk",
    "Transport",
    "Welcome",
    "client_context",
    "decode",
    "encode",
    "encode_frame",
    "peer_identity",
    "server_context",
]
