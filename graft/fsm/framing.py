"""The frames of stream mode, both ways over the FSM's stdin and stdout (docs/fsm.md).

A frame is one ASCII header line of space-separated fields, then raw bytes whose lengths the
header gives. Text headers keep the protocol easy to speak from any language, a shell
included; length-prefixed bodies let a payload hold any bytes, newlines too.

    request  (graft -> FSM):  VERB INDEX TERM LENGTH\\n  + LENGTH bytes
    reply    (FSM -> graft):  STATUS OUTLEN ERRLEN\\n    + OUTLEN bytes of stdout + ERRLEN of stderr

VERB is apply, query, dump, load, data or end; INDEX and TERM are 0 except for apply.
STATUS is 0..125 as an exit status would be, or `data` for one chunk of a dump.
`load` is followed by any number of `data` frames and one `end`, then the FSM replies once.
`dump` is answered by any number of `data` replies, then one final STATUS reply.

This module is sans-IO: it builds and parses bytes, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_HEADER = 128  # bytes of a reply header line, newline included
MAX_BODY = 1 << 30  # bytes of one reply body: a bound against a garbled length
REQUEST_VERBS = frozenset({"apply", "query", "dump", "load", "data", "end"})


class FramingError(Exception):
    """The FSM broke the framing: the stream cannot be trusted any more."""


@dataclass(frozen=True, slots=True)
class ReplyHeader:
    status: int | None  # None: a `data` chunk of a dump
    out_len: int
    err_len: int

    @property
    def body_len(self) -> int:
        return self.out_len + self.err_len


def encode_request(verb: str, payload: bytes = b"", index: int = 0, term: int = 0) -> bytes:
    if verb not in REQUEST_VERBS:
        raise ValueError(f"unknown stream verb {verb!r}")
    return b"%s %d %d %d\n%s" % (verb.encode(), index, term, len(payload), payload)


def parse_reply_header(line: bytes) -> ReplyHeader:
    """Parse `STATUS OUTLEN ERRLEN\\n`; anything else is a FramingError."""
    fields = line.rstrip(b"\n").split(b" ")
    if len(line) > MAX_HEADER or not line.endswith(b"\n") or len(fields) != 3:
        raise FramingError(f"bad reply header {line[:MAX_HEADER]!r}")

    kind, out_len, err_len = fields
    status = None if kind == b"data" else _number(kind, 125)
    header = ReplyHeader(status, _number(out_len, MAX_BODY), _number(err_len, MAX_BODY))
    if header.body_len > MAX_BODY:
        raise FramingError(f"reply body of {header.body_len} bytes is over {MAX_BODY}")
    return header


def _number(field: bytes, maximum: int) -> int:
    if not field.isdigit() or len(field) > 12 or int(field) > maximum:
        raise FramingError(f"bad number {field!r} in reply header (0..{maximum})")
    return int(field)
