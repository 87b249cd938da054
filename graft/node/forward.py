"""The bodies of forwarded client requests and their replies (DESIGN §4, client redirection).

A follower hands an APPLY or QUERY to the leader inside a transport ForwardRequest frame and
relays the leader's answer from a ForwardReply frame. Both bodies are a small JSON header
followed by raw bytes, so a payload is carried exactly as the client sent it:

    u32 header length, header (JSON), raw bytes
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import orjson

from graft.api.protocol import Err, ErrCode, Ok, Op, Reply

_LENGTH = struct.Struct("!I")


class ForwardError(ValueError):
    """A forwarded body that does not decode; the frame is answered with BADREQUEST."""


def _pack(header: dict[str, Any], raw: bytes) -> bytes:
    head = orjson.dumps(header)
    return _LENGTH.pack(len(head)) + head + raw


def _unpack(body: bytes) -> tuple[dict[str, Any], bytes]:
    try:
        (size,) = _LENGTH.unpack_from(body)
        header = orjson.loads(body[_LENGTH.size : _LENGTH.size + size])
    except (struct.error, orjson.JSONDecodeError) as exc:
        raise ForwardError(f"malformed forwarded body: {exc}") from None

    if not isinstance(header, dict):
        raise ForwardError("malformed forwarded body: header is not an object")
    return header, body[_LENGTH.size + size :]


@dataclass(frozen=True, slots=True)
class Call:
    """A client operation as the node handles it: `data` is exactly what the FSM receives."""

    op: Op
    data: bytes = b""
    client: str | None = None
    seq: int | None = None


def encode_call(call: Call) -> bytes:
    header = {"op": call.op.name, "client": call.client, "seq": call.seq}
    return _pack(header, call.data)


def decode_call(body: bytes) -> Call:
    header, data = _unpack(body)
    try:
        op = Op[header["op"]]
    except (KeyError, TypeError) as exc:
        raise ForwardError(f"malformed forwarded request: {exc}") from None

    client = header.get("client")
    seq = header.get("seq")
    if not (client is None or isinstance(client, str)) or not (seq is None or isinstance(seq, int)):
        raise ForwardError("malformed forwarded request: bad client or seq")
    return Call(op, data, client, seq)


def encode_reply(reply: Reply) -> bytes:
    if isinstance(reply, Ok):
        return _pack({"ok": True}, reply.result)
    if isinstance(reply, Err):
        header = {
            "ok": False,
            "code": reply.code.name,
            "message": reply.message,
            "leader": reply.leader,
        }
        return _pack(header, b"")
    raise TypeError(f"a leader never answers a forwarded request with {reply!r}")


def decode_reply(body: bytes) -> Reply:
    header, raw = _unpack(body)
    if header.get("ok"):
        return Ok(raw)
    try:
        return Err(ErrCode[header["code"]], str(header["message"]), header.get("leader"))
    except KeyError as exc:
        raise ForwardError(f"malformed forwarded reply: {exc}") from None
