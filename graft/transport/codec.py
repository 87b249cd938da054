"""The frames peers exchange, and their binary encoding: a 1-byte type tag, then the body.

Every integer is an unsigned big-endian field of fixed width, fixed-width fields come first in
one `struct`, then the variable parts: strings as a u16 length and UTF-8, blobs as a u32
length and raw bytes, and a trailing payload (entry data, forwarded requests, snapshot data)
as the raw rest of the frame. Log entries travel as the exact bytes that were proposed, never
re-encoded. docs/protocol-peer.md gives the layout of each frame byte by byte.

Decoding is strict and canonical: flag bytes admit only their defined bits, strings must be
valid UTF-8, and every byte of the body must be consumed. Any violation raises FrameError and
nothing else, so `encode(decode(body)) == body` whenever `decode` succeeds.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from graft.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from graft.raft.types import Entry, EntryKind, Member, Membership, SnapshotMeta
from graft.transport.framing import FrameError

PROTOCOL_VERSION = 1


@dataclass(frozen=True, slots=True)
class Hello:
    """The caller's first frame: who is calling, for which cluster ("" when unnamed)."""

    cluster: str
    node_id: str
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class Welcome:
    """The listener accepted the Hello; `node_id` is the listener's own id."""

    node_id: str


@dataclass(frozen=True, slots=True)
class Refused:
    """The listener refused the Hello and closes the connection after this frame."""

    reason: str


@dataclass(frozen=True, slots=True)
class ForwardRequest:
    """A client request a follower forwards to the leader; `body` is defined by the node."""

    request_id: int
    body: bytes


@dataclass(frozen=True, slots=True)
class ForwardReply:
    """The leader's answer to the ForwardRequest with the same `request_id`."""

    request_id: int
    body: bytes


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """One piece of a snapshot streamed from leader to follower (§7).

    `size` and `checksum` describe the whole snapshot, `offset` is where `data` starts in it,
    `done` marks the last chunk. `app_meta` is opaque metadata the node stores beside it.
    """

    term: int
    meta: SnapshotMeta
    size: int
    checksum: str
    app_meta: bytes
    offset: int
    data: bytes
    done: bool


@dataclass(frozen=True, slots=True)
class SnapshotAck:
    """The follower's answer to a SnapshotChunk: the next offset it expects, or not ok."""

    index: int
    offset: int
    ok: bool


PeerFrame = Message | ForwardRequest | ForwardReply | SnapshotChunk | SnapshotAck
"""What a Transport hands to `on_frame`: handshake frames never get past the connection."""

Frame = Hello | Welcome | Refused | PeerFrame
"""Every frame of the peer protocol."""

# Type tags. Gaps leave room for new frames in each group.
TAG_HELLO = 0x01
TAG_WELCOME = 0x02
TAG_REFUSED = 0x03
TAG_REQUEST_VOTE = 0x10
TAG_REQUEST_VOTE_RESPONSE = 0x11
TAG_APPEND_ENTRIES = 0x12
TAG_APPEND_ENTRIES_RESPONSE = 0x13
TAG_INSTALL_SNAPSHOT = 0x14
TAG_INSTALL_SNAPSHOT_RESPONSE = 0x15
TAG_TIMEOUT_NOW = 0x16
TAG_FORWARD_REQUEST = 0x20
TAG_FORWARD_REPLY = 0x21
TAG_SNAPSHOT_CHUNK = 0x30
TAG_SNAPSHOT_ACK = 0x31

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_HELLO = struct.Struct(">BI")  # tag, version
_TAG = struct.Struct(">B")
_REQUEST_VOTE = struct.Struct(">BQQQB")  # tag, term, last log index/term, flags
_REQUEST_VOTE_RESPONSE = struct.Struct(">BQB")  # tag, term, flags
_APPEND_ENTRIES = struct.Struct(">BQQQQQI")  # tag, term, prev index/term, commit, ctx, count
_ENTRY = struct.Struct(">QQBI")  # index, term, kind, data length
_APPEND_RESPONSE = struct.Struct(">BQQQQQB")  # tag, term, match, conflict i/t, ctx, flags
_TERM = struct.Struct(">BQ")  # tag, term
_SNAPSHOT_RESPONSE = struct.Struct(">BQQB")  # tag, term, match index, flags
_FORWARD = struct.Struct(">BQ")  # tag, request id
_META = struct.Struct(">QQ")  # snapshot index, term
_CHUNK = struct.Struct(">BQQQB")  # tag, term, size, offset, flags
_ACK = struct.Struct(">BQQB")  # tag, index, offset, flags

_KINDS = tuple(EntryKind)  # indexed by value: EntryKind values are 0, 1, 2
assert all(kind.value == i for i, kind in enumerate(_KINDS))

# Decoding builds entries through their slot descriptors instead of the frozen dataclass
# __init__, which sets each field through object.__setattr__ and costs twice as much; entries
# dominate the decoding time of AppendEntries. This is only sound while Entry has exactly these
# fields and no __post_init__, which the assertion checks at import.
assert tuple(f.name for f in fields(Entry)) == ("index", "term", "kind", "data")
assert not hasattr(Entry, "__post_init__")


def _slot_setter(name: str) -> Callable[[Entry, Any], None]:
    setter: Callable[[Entry, Any], None] = vars(Entry)[name].__set__
    return setter


_new_entry = Entry.__new__
_set_index = _slot_setter("index")
_set_term = _slot_setter("term")
_set_kind = _slot_setter("kind")
_set_data = _slot_setter("data")


# -- encoding ---------------------------------------------------------------------------------


def _str(text: str) -> bytes:
    data = text.encode()
    if len(data) > 0xFFFF:
        raise FrameError(f"string of {len(data)} bytes exceeds 65535")
    return _U16.pack(len(data)) + data


def _blob(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def _members(members: tuple[Member, ...]) -> list[bytes]:
    parts = [_U16.pack(len(members))]
    for member in members:
        parts.append(_str(member.id))
        parts.append(_str(member.address))
    return parts


def _meta(meta: SnapshotMeta) -> bytes:
    membership = meta.membership
    parts = [_META.pack(meta.index, meta.term)]
    parts += _members(membership.voters)
    parts += _members(membership.learners)
    return b"".join(parts)


def _encode_hello(f: Hello) -> bytes:
    return _HELLO.pack(TAG_HELLO, f.version) + _str(f.cluster) + _str(f.node_id)


def _encode_welcome(f: Welcome) -> bytes:
    return _TAG.pack(TAG_WELCOME) + _str(f.node_id)


def _encode_refused(f: Refused) -> bytes:
    return _TAG.pack(TAG_REFUSED) + _str(f.reason)


def _encode_request_vote(m: RequestVote) -> bytes:
    flags = m.pre_vote | m.transfer << 1
    head = _REQUEST_VOTE.pack(TAG_REQUEST_VOTE, m.term, m.last_log_index, m.last_log_term, flags)
    return head + _str(m.src) + _str(m.dst)


def _encode_request_vote_response(m: RequestVoteResponse) -> bytes:
    flags = m.granted | m.pre_vote << 1
    head = _REQUEST_VOTE_RESPONSE.pack(TAG_REQUEST_VOTE_RESPONSE, m.term, flags)
    return head + _str(m.src) + _str(m.dst)


def _encode_append_entries(m: AppendEntries) -> bytes:
    entries = m.entries
    parts = [
        _APPEND_ENTRIES.pack(
            TAG_APPEND_ENTRIES,
            m.term,
            m.prev_log_index,
            m.prev_log_term,
            m.commit,
            m.read_context,
            len(entries),
        ),
        _str(m.src),
        _str(m.dst),
    ]
    pack = _ENTRY.pack
    append = parts.append
    for entry in entries:
        data = entry.data
        append(pack(entry.index, entry.term, entry.kind, len(data)))
        append(data)
    return b"".join(parts)


def _encode_append_response(m: AppendEntriesResponse) -> bytes:
    head = _APPEND_RESPONSE.pack(
        TAG_APPEND_ENTRIES_RESPONSE,
        m.term,
        m.match_index,
        m.conflict_index,
        m.conflict_term,
        m.read_context,
        m.success,
    )
    return head + _str(m.src) + _str(m.dst)


def _encode_install_snapshot(m: InstallSnapshot) -> bytes:
    return _TERM.pack(TAG_INSTALL_SNAPSHOT, m.term) + _str(m.src) + _str(m.dst) + _meta(m.meta)


def _encode_snapshot_response(m: InstallSnapshotResponse) -> bytes:
    head = _SNAPSHOT_RESPONSE.pack(TAG_INSTALL_SNAPSHOT_RESPONSE, m.term, m.match_index, m.success)
    return head + _str(m.src) + _str(m.dst)


def _encode_timeout_now(m: TimeoutNow) -> bytes:
    return _TERM.pack(TAG_TIMEOUT_NOW, m.term) + _str(m.src) + _str(m.dst)


def _encode_forward_request(f: ForwardRequest) -> bytes:
    return _FORWARD.pack(TAG_FORWARD_REQUEST, f.request_id) + f.body


def _encode_forward_reply(f: ForwardReply) -> bytes:
    return _FORWARD.pack(TAG_FORWARD_REPLY, f.request_id) + f.body


def _encode_snapshot_chunk(f: SnapshotChunk) -> bytes:
    head = _CHUNK.pack(TAG_SNAPSHOT_CHUNK, f.term, f.size, f.offset, f.done)
    return b"".join((head, _str(f.checksum), _meta(f.meta), _blob(f.app_meta), f.data))


def _encode_snapshot_ack(f: SnapshotAck) -> bytes:
    return _ACK.pack(TAG_SNAPSHOT_ACK, f.index, f.offset, f.ok)


_ENCODERS: dict[type, Callable[[Any], bytes]] = {}


def encode(frame: Frame) -> bytes:
    """The body of `frame` (tag included, length prefix not). Raises FrameError for values
    the format cannot carry: a negative or over-64-bit integer, or a string over 65535 bytes.
    """
    try:
        encoder = _ENCODERS[type(frame)]
    except KeyError:
        raise FrameError(f"not a frame: {type(frame).__name__}") from None
    try:
        return encoder(frame)
    except (struct.error, OverflowError, UnicodeEncodeError) as exc:
        raise FrameError(f"cannot encode {type(frame).__name__}: {exc}") from exc


# -- decoding ---------------------------------------------------------------------------------


def _read_str(body: bytes, offset: int) -> tuple[str, int]:
    (size,) = _U16.unpack_from(body, offset)
    start = offset + 2
    end = start + size
    if end > len(body):
        raise FrameError("truncated string")
    return body[start:end].decode(), end


def _read_blob(body: bytes, offset: int) -> tuple[bytes, int]:
    (size,) = _U32.unpack_from(body, offset)
    start = offset + 4
    end = start + size
    if end > len(body):
        raise FrameError("truncated blob")
    return body[start:end], end


def _read_members(body: bytes, offset: int) -> tuple[tuple[Member, ...], int]:
    (count,) = _U16.unpack_from(body, offset)
    offset += 2
    members: list[Member] = []
    for _ in range(count):
        member_id, offset = _read_str(body, offset)
        address, offset = _read_str(body, offset)
        members.append(Member(member_id, address))
    return tuple(members), offset


def _read_meta(body: bytes, offset: int) -> tuple[SnapshotMeta, int]:
    index, term = _META.unpack_from(body, offset)
    voters, offset = _read_members(body, offset + _META.size)
    learners, offset = _read_members(body, offset)
    return SnapshotMeta(index, term, Membership(voters, learners)), offset


def _read_route(body: bytes, offset: int) -> tuple[str, str, int]:
    src, offset = _read_str(body, offset)
    dst, offset = _read_str(body, offset)
    return src, dst, offset


def _flags(value: int, allowed: int) -> int:
    if value & ~allowed:
        raise FrameError(f"undefined flag bits {value:#04x}")
    return value


def _end(body: bytes, offset: int) -> None:
    if offset != len(body):
        raise FrameError(f"{len(body) - offset} trailing bytes")


def _decode_hello(body: bytes) -> Hello:
    _, version = _HELLO.unpack_from(body)
    cluster, offset = _read_str(body, _HELLO.size)
    node_id, offset = _read_str(body, offset)
    _end(body, offset)
    return Hello(cluster, node_id, version)


def _decode_welcome(body: bytes) -> Welcome:
    node_id, offset = _read_str(body, 1)
    _end(body, offset)
    return Welcome(node_id)


def _decode_refused(body: bytes) -> Refused:
    reason, offset = _read_str(body, 1)
    _end(body, offset)
    return Refused(reason)


def _decode_request_vote(body: bytes) -> RequestVote:
    _, term, last_index, last_term, flags = _REQUEST_VOTE.unpack_from(body)
    _flags(flags, 0b11)
    src, dst, offset = _read_route(body, _REQUEST_VOTE.size)
    _end(body, offset)
    return RequestVote(term, src, dst, last_index, last_term, bool(flags & 1), bool(flags & 2))


def _decode_request_vote_response(body: bytes) -> RequestVoteResponse:
    _, term, flags = _REQUEST_VOTE_RESPONSE.unpack_from(body)
    _flags(flags, 0b11)
    src, dst, offset = _read_route(body, _REQUEST_VOTE_RESPONSE.size)
    _end(body, offset)
    return RequestVoteResponse(term, src, dst, bool(flags & 1), bool(flags & 2))


def _decode_append_entries(body: bytes) -> AppendEntries:
    _, term, prev_index, prev_term, commit, context, count = _APPEND_ENTRIES.unpack_from(body)
    src, dst, offset = _read_route(body, _APPEND_ENTRIES.size)
    size = len(body)
    if count * _ENTRY.size > size - offset:
        raise FrameError(f"{count} entries cannot fit in {size - offset} bytes")

    entries: list[Entry] = []
    append = entries.append
    unpack = _ENTRY.unpack_from
    kinds = _KINDS
    entry_size = _ENTRY.size
    for _ in range(count):
        index, entry_term, kind, length = unpack(body, offset)
        offset += entry_size
        end = offset + length
        if end > size:
            raise FrameError("truncated entry data")
        entry = _new_entry(Entry)
        _set_index(entry, index)
        _set_term(entry, entry_term)
        _set_kind(entry, kinds[kind])
        _set_data(entry, body[offset:end])
        append(entry)
        offset = end
    _end(body, offset)
    return AppendEntries(term, src, dst, prev_index, prev_term, tuple(entries), commit, context)


def _decode_append_response(body: bytes) -> AppendEntriesResponse:
    _, term, match, conflict_index, conflict_term, context, flags = _APPEND_RESPONSE.unpack_from(
        body
    )
    _flags(flags, 0b1)
    src, dst, offset = _read_route(body, _APPEND_RESPONSE.size)
    _end(body, offset)
    return AppendEntriesResponse(
        term, src, dst, bool(flags), match, conflict_index, conflict_term, context
    )


def _decode_install_snapshot(body: bytes) -> InstallSnapshot:
    _, term = _TERM.unpack_from(body)
    src, dst, offset = _read_route(body, _TERM.size)
    meta, offset = _read_meta(body, offset)
    _end(body, offset)
    return InstallSnapshot(term, src, dst, meta)


def _decode_snapshot_response(body: bytes) -> InstallSnapshotResponse:
    _, term, match, flags = _SNAPSHOT_RESPONSE.unpack_from(body)
    _flags(flags, 0b1)
    src, dst, offset = _read_route(body, _SNAPSHOT_RESPONSE.size)
    _end(body, offset)
    return InstallSnapshotResponse(term, src, dst, match, bool(flags))


def _decode_timeout_now(body: bytes) -> TimeoutNow:
    _, term = _TERM.unpack_from(body)
    src, dst, offset = _read_route(body, _TERM.size)
    _end(body, offset)
    return TimeoutNow(term, src, dst)


def _decode_forward_request(body: bytes) -> ForwardRequest:
    _, request_id = _FORWARD.unpack_from(body)
    return ForwardRequest(request_id, body[_FORWARD.size :])


def _decode_forward_reply(body: bytes) -> ForwardReply:
    _, request_id = _FORWARD.unpack_from(body)
    return ForwardReply(request_id, body[_FORWARD.size :])


def _decode_snapshot_chunk(body: bytes) -> SnapshotChunk:
    _, term, size, chunk_offset, flags = _CHUNK.unpack_from(body)
    _flags(flags, 0b1)
    checksum, offset = _read_str(body, _CHUNK.size)
    meta, offset = _read_meta(body, offset)
    app_meta, offset = _read_blob(body, offset)
    data = body[offset:]
    return SnapshotChunk(term, meta, size, checksum, app_meta, chunk_offset, data, bool(flags))


def _decode_snapshot_ack(body: bytes) -> SnapshotAck:
    _, index, offset, flags = _ACK.unpack_from(body)
    _flags(flags, 0b1)
    _end(body, _ACK.size)
    return SnapshotAck(index, offset, bool(flags))


_DECODERS: dict[int, Callable[[bytes], Frame]] = {}


def _register(
    tag: int, cls: type, encoder: Callable[[Any], bytes], decoder: Callable[[bytes], Frame]
) -> None:
    # keyed by exact type: each encoder only ever sees instances of its own class
    _ENCODERS[cls] = encoder
    _DECODERS[tag] = decoder


_register(TAG_HELLO, Hello, _encode_hello, _decode_hello)
_register(TAG_WELCOME, Welcome, _encode_welcome, _decode_welcome)
_register(TAG_REFUSED, Refused, _encode_refused, _decode_refused)
_register(TAG_REQUEST_VOTE, RequestVote, _encode_request_vote, _decode_request_vote)
_register(
    TAG_REQUEST_VOTE_RESPONSE,
    RequestVoteResponse,
    _encode_request_vote_response,
    _decode_request_vote_response,
)
_register(TAG_APPEND_ENTRIES, AppendEntries, _encode_append_entries, _decode_append_entries)
_register(
    TAG_APPEND_ENTRIES_RESPONSE,
    AppendEntriesResponse,
    _encode_append_response,
    _decode_append_response,
)
_register(TAG_INSTALL_SNAPSHOT, InstallSnapshot, _encode_install_snapshot, _decode_install_snapshot)
_register(
    TAG_INSTALL_SNAPSHOT_RESPONSE,
    InstallSnapshotResponse,
    _encode_snapshot_response,
    _decode_snapshot_response,
)
_register(TAG_TIMEOUT_NOW, TimeoutNow, _encode_timeout_now, _decode_timeout_now)
_register(TAG_FORWARD_REQUEST, ForwardRequest, _encode_forward_request, _decode_forward_request)
_register(TAG_FORWARD_REPLY, ForwardReply, _encode_forward_reply, _decode_forward_reply)
_register(TAG_SNAPSHOT_CHUNK, SnapshotChunk, _encode_snapshot_chunk, _decode_snapshot_chunk)
_register(TAG_SNAPSHOT_ACK, SnapshotAck, _encode_snapshot_ack, _decode_snapshot_ack)


def decode(body: bytes) -> Frame:
    """The frame a body (tag included) encodes. Raises FrameError, and nothing else, when the
    body is empty, has an unknown tag, is truncated, has trailing bytes or a malformed field.
    """
    if not body:
        raise FrameError("empty frame")
    decoder = _DECODERS.get(body[0])
    if decoder is None:
        raise FrameError(f"unknown frame tag {body[0]:#04x}")
    try:
        return decoder(body)
    except FrameError:
        raise
    except (struct.error, UnicodeDecodeError, IndexError) as exc:
        raise FrameError(f"malformed frame {body[0]:#04x}: {exc}") from exc
