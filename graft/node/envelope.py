"""How the node wraps a client's command in a log entry.

The FSM must receive exactly the bytes the client proposed (DESIGN §3), but the node also
needs to replicate the client id and sequence number of a retried APPLY so that every node
deduplicates it the same way. A COMMAND entry's data is therefore an envelope:

    0x00 payload                                  a plain command
    0x01 u16 len(client) client u64 seq payload   a command with a client session

Only the payload reaches the FSM.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_PLAIN = 0
_SESSION = 1
_SESSION_HEADER = struct.Struct("!BH")
_SEQ = struct.Struct("!Q")


class EnvelopeError(ValueError):
    """A COMMAND entry that this version of Graft cannot read."""


@dataclass(frozen=True, slots=True)
class Command:
    payload: bytes
    client: str | None = None
    seq: int | None = None


def wrap(payload: bytes, client: str | None = None, seq: int | None = None) -> bytes:
    if client is None or seq is None:
        return b"\x00" + payload

    name = client.encode()
    return _SESSION_HEADER.pack(_SESSION, len(name)) + name + _SEQ.pack(seq) + payload


def unwrap(data: bytes) -> Command:
    if not data:
        raise EnvelopeError("empty command entry")

    if data[0] == _PLAIN:
        return Command(data[1:])

    if data[0] != _SESSION or len(data) < _SESSION_HEADER.size:
        raise EnvelopeError(f"unknown command envelope {data[0]}")

    _, size = _SESSION_HEADER.unpack_from(data)
    start = _SESSION_HEADER.size
    end = start + size
    if len(data) < end + _SEQ.size:
        raise EnvelopeError("truncated session envelope")

    (seq,) = _SEQ.unpack_from(data, end)
    return Command(data[end + _SEQ.size :], data[start:end].decode(), seq)
