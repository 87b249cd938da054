"""Sans-IO length-prefixed framing: a 4-byte big-endian body length, then the body.

The decoder never touches a socket: the connection feeds it whatever bytes arrived and then
takes the complete bodies out. A declared length above `max_frame` is refused as soon as the
4-byte header is complete, before any of the body is waited for, so a peer cannot make us
buffer an arbitrary amount of memory by announcing a huge frame.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterator

HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size
MAX_FRAME_LIMIT = (1 << 32) - 1  # the largest length 4 bytes can state


class FrameError(ValueError):
    """A frame that cannot be accepted: too long, truncated, unknown tag or a malformed body.

    This is the only exception the framing and codec layers raise for bad input, so a
    connection needs exactly one `except` to drop a misbehaving peer.
    """


def encode_frame(body: bytes) -> bytes:
    """Prefix `body` with its length. Raises FrameError if 4 bytes cannot state that length."""
    if len(body) > MAX_FRAME_LIMIT:
        raise FrameError(f"frame body of {len(body)} bytes does not fit a 4-byte length")
    return HEADER.pack(len(body)) + body


class FrameDecoder:
    """Splits a byte stream into frame bodies.

    Usage: `decoder.feed(data)`, then `for body in decoder: ...`. After a FrameError the
    decoder is poisoned: the stream has lost its framing and every later `feed` raises again.
    """

    __slots__ = ("_buffer", "_error", "_expected", "_max_frame", "_ready")

    def __init__(self, max_frame: int) -> None:
        if not 0 <= max_frame <= MAX_FRAME_LIMIT:
            raise ValueError(f"max_frame must be within 0..{MAX_FRAME_LIMIT}, not {max_frame}")
        self._max_frame = max_frame
        self._buffer = bytearray()
        self._expected = -1  # body length of the frame being assembled; -1: header pending
        self._ready: deque[bytes] = deque()
        self._error: FrameError | None = None

    @property
    def pending(self) -> int:
        """Declared body length of the frame being assembled, or -1 while its header is."""
        return self._expected

    @property
    def buffered(self) -> int:
        """Bytes held for frames that are not complete yet."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Take in more bytes; raise FrameError at the first header that states too long a body."""
        if self._error is not None:
            raise self._error

        self._buffer += data
        try:
            self._split()
        except FrameError as exc:
            self._error = exc
            self._buffer.clear()
            raise

    def __iter__(self) -> Iterator[bytes]:
        ready = self._ready
        while ready:
            yield ready.popleft()

    def _split(self) -> None:
        buffer = self._buffer
        start = 0
        end = len(buffer)
        expected = self._expected
        while True:
            if expected < 0:
                if end - start < HEADER_SIZE:
                    break
                (expected,) = HEADER.unpack_from(buffer, start)
                if expected > self._max_frame:
                    raise FrameError(
                        f"declared frame length {expected} exceeds the limit {self._max_frame}"
                    )
                start += HEADER_SIZE
            if end - start < expected:
                break
            self._ready.append(bytes(buffer[start : start + expected]))
            start += expected
            expected = -1

        self._expected = expected
        if start:
            del buffer[:start]
