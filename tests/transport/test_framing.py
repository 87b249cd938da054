"""The sans-IO framer: lengths, partial input byte by byte, and the size limit."""

import pytest

from graft.transport.framing import HEADER, FrameDecoder, FrameError, encode_frame


def feed_all(decoder: FrameDecoder, data: bytes) -> list[bytes]:
    decoder.feed(data)
    return list(decoder)


def test_encode_frame_prefixes_a_big_endian_length() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"") == b"\x00\x00\x00\x00"


def test_decoder_yields_frames_fed_byte_by_byte() -> None:
    bodies = [b"", b"x", b"hello world", bytes(range(256)) * 3]
    stream = b"".join(encode_frame(body) for body in bodies)
    decoder = FrameDecoder(max_frame=1 << 20)

    seen: list[bytes] = []
    for i in range(len(stream)):
        seen += feed_all(decoder, stream[i : i + 1])

    assert seen == bodies
    assert decoder.buffered == 0


def test_decoder_splits_many_frames_from_one_chunk_and_keeps_the_partial_tail() -> None:
    stream = encode_frame(b"one") + encode_frame(b"two") + encode_frame(b"three")[:5]
    decoder = FrameDecoder(max_frame=100)

    assert feed_all(decoder, stream) == [b"one", b"two"]
    assert decoder.buffered == 1
    assert feed_all(decoder, b"hree") == [b"three"]


def test_a_frame_of_exactly_max_frame_is_accepted() -> None:
    decoder = FrameDecoder(max_frame=8)
    assert feed_all(decoder, encode_frame(b"12345678")) == [b"12345678"]


def test_an_oversized_length_is_refused_as_soon_as_the_header_is_complete() -> None:
    decoder = FrameDecoder(max_frame=8)
    header = HEADER.pack(9)

    decoder.feed(header[:3])
    with pytest.raises(FrameError, match="exceeds"):
        decoder.feed(header[3:])  # no body byte was sent: refused on the header alone

    assert decoder.buffered == 0


def test_a_decoder_stays_poisoned_after_an_error() -> None:
    decoder = FrameDecoder(max_frame=4)
    with pytest.raises(FrameError):
        decoder.feed(HEADER.pack(1 << 31))

    with pytest.raises(FrameError):
        decoder.feed(encode_frame(b"ok"))


def test_frames_complete_before_a_bad_header_are_still_delivered() -> None:
    decoder = FrameDecoder(max_frame=4)
    with pytest.raises(FrameError):
        decoder.feed(encode_frame(b"good") + HEADER.pack(5))

    assert list(decoder) == [b"good"]


def test_max_frame_must_fit_four_bytes() -> None:
    with pytest.raises(ValueError):
        FrameDecoder(max_frame=1 << 32)
