"""The peer codec: every frame kind round-trips, and garbage only ever raises FrameError."""

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graft.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from graft.raft.types import Entry, EntryKind, Member, Membership, SnapshotMeta
from graft.transport import codec
from graft.transport.codec import (
    ForwardReply,
    ForwardRequest,
    Frame,
    Hello,
    Refused,
    SnapshotAck,
    SnapshotChunk,
    Welcome,
    decode,
    encode,
)
from graft.transport.framing import FrameError

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
u32 = st.integers(min_value=0, max_value=(1 << 32) - 1)
text = st.text(max_size=40)
node_id = st.text(min_size=1, max_size=20)
blob = st.binary(max_size=300)

members = st.lists(st.builds(Member, node_id, text), max_size=5).map(tuple)
memberships = st.builds(Membership, members, members)
metas = st.builds(SnapshotMeta, u64, u64, memberships)
entries = st.builds(Entry, u64, u64, st.sampled_from(EntryKind), blob)

FRAMES: dict[type, Any] = {
    Hello: st.builds(Hello, text, node_id, u32),
    Welcome: st.builds(Welcome, node_id),
    Refused: st.builds(Refused, text),
    RequestVote: st.builds(
        RequestVote, u64, node_id, node_id, u64, u64, st.booleans(), st.booleans()
    ),
    RequestVoteResponse: st.builds(
        RequestVoteResponse, u64, node_id, node_id, st.booleans(), st.booleans()
    ),
    AppendEntries: st.builds(
        AppendEntries,
        u64,
        node_id,
        node_id,
        u64,
        u64,
        st.lists(entries, max_size=8).map(tuple),
        u64,
        u64,
    ),
    AppendEntriesResponse: st.builds(
        AppendEntriesResponse, u64, node_id, node_id, st.booleans(), u64, u64, u64, u64
    ),
    InstallSnapshot: st.builds(InstallSnapshot, u64, node_id, node_id, metas),
    InstallSnapshotResponse: st.builds(
        InstallSnapshotResponse, u64, node_id, node_id, u64, st.booleans()
    ),
    TimeoutNow: st.builds(TimeoutNow, u64, node_id, node_id),
    ForwardRequest: st.builds(ForwardRequest, u64, blob),
    ForwardReply: st.builds(ForwardReply, u64, blob),
    SnapshotChunk: st.builds(SnapshotChunk, u64, metas, u64, text, blob, u64, blob, st.booleans()),
    SnapshotAck: st.builds(SnapshotAck, u64, u64, st.booleans()),
}
any_frame = st.one_of(*FRAMES.values())


def test_every_frame_class_has_a_strategy() -> None:
    assert set(FRAMES) == set(codec._ENCODERS)


@pytest.mark.parametrize("kind", list(FRAMES), ids=lambda k: k.__name__)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip(kind: type, data: st.DataObject) -> None:
    frame: Frame = data.draw(FRAMES[kind])

    body = encode(frame)

    assert decode(body) == frame


def test_entries_travel_as_their_raw_bytes() -> None:
    payload = b"SET k \x00\xff\n"
    message = AppendEntries(3, "a", "b", 0, 0, (Entry(1, 3, EntryKind.COMMAND, payload),), 0)

    body = encode(message)

    assert body.endswith(payload)
    assert decode(body) == message


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_give_a_frame_error_or_a_canonical_frame(body: bytes) -> None:
    assert_frame_error_or_canonical(body)


def assert_frame_error_or_canonical(body: bytes) -> None:
    """The fuzz oracle: bad input raises FrameError (any other exception escapes and fails),
    and whatever decodes re-encodes to the same bytes (strict decoding)."""
    try:
        frame = decode(body)
    except FrameError:
        return
    assert encode(frame) == body


def test_the_fuzz_oracle_catches_a_planted_lax_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    def lax_ack(body: bytes) -> SnapshotAck:  # forgets to refuse trailing bytes
        _, index, offset, flags = struct.unpack_from(">BQQB", body)
        return SnapshotAck(index, offset, bool(flags))

    def crashing_ack(body: bytes) -> SnapshotAck:  # lets a non-FrameError escape
        raise KeyError("planted")

    body = encode(SnapshotAck(1, 2, True)) + b"!"
    assert_frame_error_or_canonical(body)  # the real decoder refuses it

    monkeypatch.setitem(codec._DECODERS, codec.TAG_SNAPSHOT_ACK, lax_ack)
    with pytest.raises(AssertionError):
        assert_frame_error_or_canonical(body)
    monkeypatch.setitem(codec._DECODERS, codec.TAG_SNAPSHOT_ACK, crashing_ack)
    with pytest.raises(KeyError):
        assert_frame_error_or_canonical(body)


@settings(max_examples=150, deadline=None)
@given(any_frame, st.data())
def test_truncated_or_extended_frames_are_refused(frame: Frame, data: st.DataObject) -> None:
    body = encode(frame)
    cut = data.draw(st.integers(min_value=0, max_value=len(body) - 1))

    if not isinstance(frame, ForwardRequest | ForwardReply | SnapshotChunk):
        # These end in a raw payload that takes the rest of the frame; the others are exact.
        with pytest.raises(FrameError):
            decode(body[:cut])
        with pytest.raises(FrameError):
            decode(body + b"\x00")
    elif cut < _fixed_prefix(frame):
        with pytest.raises(FrameError):
            decode(body[:cut])


def _fixed_prefix(frame: Frame) -> int:
    if isinstance(frame, SnapshotChunk):
        return len(
            encode(SnapshotChunk(0, frame.meta, 0, frame.checksum, frame.app_meta, 0, b"", False))
        )
    return 9


@settings(max_examples=300, deadline=None)
@given(any_frame, st.data())
def test_mutated_frames_give_a_frame_error_or_a_canonical_frame(
    frame: Frame, data: st.DataObject
) -> None:
    body = bytearray(encode(frame))
    position = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    body[position] = data.draw(st.integers(min_value=0, max_value=255))

    assert_frame_error_or_canonical(bytes(body))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xee",
        bytes([codec.TAG_REQUEST_VOTE]) + bytes(24) + b"\x04" + bytes(4),  # undefined flag
        bytes([codec.TAG_WELCOME]) + b"\x00\x02\xff\xfe",  # invalid UTF-8
        bytes([codec.TAG_APPEND_ENTRIES]) + bytes(40) + b"\xff\xff\xff\xff" + bytes(4),
        struct.pack(">BQQQQQI", codec.TAG_APPEND_ENTRIES, 1, 0, 0, 0, 0, 1)
        + bytes(4)
        + struct.pack(">QQBI", 1, 1, 7, 0),  # entry kind 7 does not exist
    ],
    ids=["empty", "unknown-tag", "bad-flags", "bad-utf8", "huge-count", "bad-kind"],
)
def test_known_malformed_bodies(body: bytes) -> None:
    with pytest.raises(FrameError):
        decode(body)


@pytest.mark.parametrize(
    "frame",
    [
        TimeoutNow(-1, "a", "b"),
        Welcome("x" * 70000),
        ForwardRequest(1 << 64, b""),
        Refused("\udcff"),
    ],
    ids=["negative", "long-string", "too-big-int", "surrogate"],
)
def test_unencodable_values_raise_frame_error(frame: Frame) -> None:
    with pytest.raises(FrameError):
        encode(frame)


def test_encode_refuses_non_frames() -> None:
    with pytest.raises(FrameError):
        encode("hello")  # type: ignore[arg-type]


def test_heartbeat_bytes_match_the_documented_example() -> None:
    # docs/protocol-peer.md shows this body byte by byte; the wire format must not drift.
    body = encode(AppendEntries(7, "a", "b", 9, 7, (), 9))

    expected = (
        "12"
        "0000000000000007 0000000000000009 0000000000000007 0000000000000009 0000000000000000"
        "00000000 000161 000162"
    )
    assert body == bytes.fromhex(expected)
