"""The client line protocol, without I/O: split bytes into lines, parse requests, render replies.

Theory of operation (DESIGN.md §4, docs/api.md):

- A request is one line ending in LF or CRLF. `LineReader` turns a byte stream into lines and
  never buffers more than `max_line` bytes of one line: the rest of an overlong line is
  dropped as it arrives, and one `TooLarge` marker stands in for it.
- A line starting with `{` is a JSON request; anything else is `VERB [arguments]`, with the
  verb case-insensitive and a payload that is the rest of the line after one space, kept
  byte-exact.
- Every line gets exactly one reply line, in order: `OK [result]`, `ERR CODE [message]` or
  `REDIRECT id host:port`; a JSON request gets one JSON line instead.

This module knows nothing about Raft or sockets: the node decides what a request means, the
server moves the bytes.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections import deque
from dataclasses import dataclass
from typing import Any, Final, Protocol

import orjson

LF: Final = b"\n"


class Op(enum.Enum):
    APPLY = "apply"
    QUERY = "query"
    LOCAL = "local"
    STATUS = "status"
    PING = "ping"
    SNAPSHOT = "snapshot"
    MEMBERS = "members"
    ADD = "add"
    REMOVE = "remove"
    TRANSFER = "transfer"


PAYLOAD_OPS: Final = frozenset({Op.APPLY, Op.QUERY, Op.LOCAL})
ARITY: Final[dict[Op, int]] = {
    Op.STATUS: 0,
    Op.PING: 0,
    Op.SNAPSHOT: 0,
    Op.MEMBERS: 0,
    Op.ADD: 4,
    Op.REMOVE: 1,
    Op.TRANSFER: 1,
}
USAGE: Final[dict[Op, str]] = {
    Op.APPLY: "APPLY <payload>",
    Op.QUERY: "QUERY <payload>",
    Op.LOCAL: "LOCAL <payload>",
    Op.STATUS: "STATUS",
    Op.PING: "PING",
    Op.SNAPSHOT: "SNAPSHOT",
    Op.MEMBERS: "MEMBERS",
    Op.ADD: "ADD <id> <host> <p2p-port> <api-port>",
    Op.REMOVE: "REMOVE <id>",
    Op.TRANSFER: "TRANSFER <id>",
}
ACCEPTED_VERBS: Final = " ".join(op.name for op in Op)
_VERBS: Final[dict[bytes, Op]] = {op.name.encode(): op for op in Op}
_JSON_OPS: Final[dict[str, Op]] = {op.value: op for op in Op}
_PORT: Final = re.compile(r"[0-9]{1,5}")


class ErrCode(enum.Enum):
    """Error codes of `ERR <CODE> <message>`, each with what it says about the outcome."""

    NOLEADER = "NOLEADER"  # no leader is known right now
    BADREQUEST = "BADREQUEST"  # the line is not a valid request
    TOOLARGE = "TOOLARGE"  # the line is longer than api.max_line
    NOTLEADER = "NOTLEADER"  # leadership was lost and the entry certainly will not commit
    UNAVAILABLE = "UNAVAILABLE"  # the node is starting, stopping, or cannot serve this now
    BUSY = "BUSY"  # overloaded: too many requests pending
    REFUSED = "REFUSED"  # understood but refused, e.g. removing an unknown member
    TIMEOUT = "TIMEOUT"  # no answer in time; the request may still take effect
    INTERNAL = "INTERNAL"  # the node failed while serving the request
    FSM = "FSM"  # applied; the FSM reported an error

    @property
    def outcome(self) -> Outcome:
        return _OUTCOMES[self]


class Outcome(enum.Enum):
    """What an error reply says about whether the request took effect (§4)."""

    NOT_APPLIED = "not applied"  # certainly not applied: safe to retry anywhere
    UNKNOWN = "unknown"  # may or may not have been applied
    APPLIED = "applied"  # applied, and the FSM reported an error


_OUTCOMES: Final[dict[ErrCode, Outcome]] = {
    ErrCode.NOLEADER: Outcome.NOT_APPLIED,
    ErrCode.BADREQUEST: Outcome.NOT_APPLIED,
    ErrCode.TOOLARGE: Outcome.NOT_APPLIED,
    ErrCode.NOTLEADER: Outcome.NOT_APPLIED,
    ErrCode.UNAVAILABLE: Outcome.NOT_APPLIED,
    ErrCode.BUSY: Outcome.NOT_APPLIED,
    ErrCode.REFUSED: Outcome.NOT_APPLIED,
    ErrCode.TIMEOUT: Outcome.UNKNOWN,
    ErrCode.INTERNAL: Outcome.UNKNOWN,
    ErrCode.FSM: Outcome.APPLIED,
}


# --- requests -------------------------------------------------------------------------------


class ReplyContext(Protocol):
    """What `format_reply` needs to know about the line it answers."""

    @property
    def json(self) -> bool: ...

    @property
    def json_id(self) -> Any: ...


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 5x, and this is made per request
class Request:
    """One parsed request line; treat it as read-only.

    `payload` is the text form's rest of the line (byte-exact) or the JSON form's data;
    `args` holds the words of ADD/REMOVE/TRANSFER (ports normalised to decimal);
    `client` and `seq` come only from the JSON form and let the node apply a retried APPLY
    at most once; `json_id` is echoed back in the JSON reply.
    """

    op: Op
    payload: bytes = b""
    args: tuple[str, ...] = ()
    client: str | None = None
    seq: int | None = None
    json: bool = False
    json_id: Any = None

    def command_bytes(self) -> bytes:
        """The bytes the FSM receives on stdin for APPLY, QUERY and LOCAL.

        §3: `APPLY x` proposes `x` plus one newline, as `echo x | fsm apply` would give it;
        the JSON form proposes its data exactly.
        """
        if self.json:
            return self.payload
        return self.payload + LF


class BadRequest(Exception):
    """A line that is not a valid request; answered with `ERR BADREQUEST <message>`."""

    def __init__(self, message: str, *, json: bool = False, json_id: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.json = json
        self.json_id = json_id

    def reply(self) -> Err:
        return Err(ErrCode.BADREQUEST, self.message)


def parse_request(line: bytes) -> Request:
    """Parse one request line (without its line ending); raise BadRequest if it is invalid."""
    if line[:1] == b"{":
        return _parse_json(line)

    space = line.find(b" ")
    verb = line if space < 0 else line[:space]
    op = _VERBS.get(verb.upper())
    if op is None:
        raise BadRequest(_unknown_verb(verb, line))

    if op in PAYLOAD_OPS:
        if space < 0 or space == len(line) - 1:
            raise BadRequest(f"missing payload: usage {USAGE[op]}")
        return Request(op, payload=line[space + 1 :])

    words = line.split()[1:]
    return Request(op, args=_check_args(op, [_word(w) for w in words]))


def _unknown_verb(verb: bytes, line: bytes) -> str:
    if not line:
        return f"empty request; accepted verbs: {ACCEPTED_VERBS}"
    if not verb:
        return f"a request starts with a verb, not a space; accepted verbs: {ACCEPTED_VERBS}"
    shown = verb[:32].decode("ascii", "backslashreplace")
    return f"unknown verb {shown!r}; accepted verbs: {ACCEPTED_VERBS}"


def _word(word: bytes) -> str:
    try:
        return word.decode()
    except UnicodeDecodeError:
        raise BadRequest(f"argument {word[:32]!r} is not UTF-8") from None


def _check_args(op: Op, args: list[str]) -> tuple[str, ...]:
    if len(args) != ARITY[op]:
        raise BadRequest(f"{op.name} takes {ARITY[op]} argument(s): usage {USAGE[op]}")

    if op is Op.ADD:
        args[2] = _port(args[2], "p2p")
        args[3] = _port(args[3], "api")
    return tuple(args)


def _port(text: str, name: str) -> str:
    if _PORT.fullmatch(text) and 1 <= int(text) <= 65535:
        return str(int(text))
    raise BadRequest(f"{name} port must be an integer in 1..65535, not {text[:32]!r}")


# --- the JSON form --------------------------------------------------------------------------

_JSON_KEYS: Final[dict[Op, frozenset[str]]] = {
    Op.ADD: frozenset({"member", "host", "p2p", "api"}),
    Op.REMOVE: frozenset({"member"}),
    Op.TRANSFER: frozenset({"member"}),
}
_COMMON_KEYS: Final = frozenset({"op", "id", "client", "seq"})
_DATA_KEYS: Final = frozenset({"data", "data_b64"})


def _parse_json(line: bytes) -> Request:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON: {exc}", json=True) from None
    # A valid JSON text that starts with `{` is always an object.
    json_id = obj.get("id")
    try:
        return _json_request(obj, json_id)
    except BadRequest as exc:
        raise BadRequest(exc.message, json=True, json_id=json_id) from None


def _json_request(obj: dict[str, Any], json_id: Any) -> Request:
    op = _json_op(obj.get("op"))
    allowed = _COMMON_KEYS | (_DATA_KEYS if op in PAYLOAD_OPS else _JSON_KEYS.get(op, frozenset()))
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise BadRequest(f"unknown key(s) for {op.value}: {', '.join(unknown)}")

    client, seq = _json_client(obj)
    payload = _json_data(obj) if op in PAYLOAD_OPS else b""
    args = _json_args(op, obj) if op in _JSON_KEYS else ()
    return Request(op, payload, args, client, seq, json=True, json_id=json_id)


def _json_op(value: object) -> Op:
    op = _JSON_OPS.get(value.lower()) if isinstance(value, str) else None
    if op is None:
        accepted = ", ".join(_JSON_OPS)
        raise BadRequest(f'"op" must be one of {accepted}, not {str(value)[:32]!r}')
    return op


def _json_client(obj: dict[str, Any]) -> tuple[str | None, int | None]:
    client, seq = obj.get("client"), obj.get("seq")
    if client is None and seq is None:
        return None, None

    if not isinstance(client, str) or not client:
        raise BadRequest('"client" must be a non-empty string when "seq" is given')
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise BadRequest('"seq" must be an integer >= 0 when "client" is given')
    return client, seq


def _json_data(obj: dict[str, Any]) -> bytes:
    if ("data" in obj) == ("data_b64" in obj):
        raise BadRequest('exactly one of "data" and "data_b64" is needed')

    if "data" in obj:
        data = obj["data"]
        if not isinstance(data, str):
            raise BadRequest('"data" must be a string')
        return data.encode()

    data_b64 = obj["data_b64"]
    if not isinstance(data_b64, str):
        raise BadRequest('"data_b64" must be a string')
    try:
        return base64.b64decode(data_b64, validate=True)
    except binascii.Error as exc:
        raise BadRequest(f'"data_b64" is not valid base64: {exc}') from None


def _json_args(op: Op, obj: dict[str, Any]) -> tuple[str, ...]:
    missing = sorted(_JSON_KEYS[op] - set(obj))
    if missing:
        raise BadRequest(f"missing key(s) for {op.value}: {', '.join(missing)}")

    member, args = obj["member"], []
    if not isinstance(member, str) or not member or any(c.isspace() for c in member):
        raise BadRequest('"member" must be a non-empty string without spaces')
    args.append(member)
    if op is Op.ADD:
        host = obj["host"]
        if not isinstance(host, str) or not host or any(c.isspace() for c in host):
            raise BadRequest('"host" must be a non-empty string without spaces')
        args.append(host)
        args.extend(_json_port(obj[name], name) for name in ("p2p", "api"))
    return tuple(args)


def _json_port(value: object, name: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return str(value)
    raise BadRequest(f'"{name}" must be an integer in 1..65535')


# --- replies --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ok:
    """Success; `result` is the FSM's stdout (or the node's answer) as raw bytes."""

    result: bytes = b""


@dataclass(frozen=True, slots=True)
class Err:
    code: ErrCode
    message: str = ""
    leader: str | None = None  # the leader's id when known, for NOLEADER/NOTLEADER


@dataclass(frozen=True, slots=True)
class Redirect:
    """`api.forward: false` on a follower: the client should ask the leader itself."""

    leader_id: str
    host: str
    api_port: int


Reply = Ok | Err | Redirect

PONG: Final = Ok(b"PONG")


def escape(data: bytes) -> bytes:
    """Make `data` fit on one line: `\\` -> `\\\\`, CR -> `\\r`, LF -> `\\n` (§4)."""
    if b"\\" in data:
        data = data.replace(b"\\", b"\\\\")
    if b"\r" in data:
        data = data.replace(b"\r", b"\\r")
    if b"\n" in data:
        data = data.replace(b"\n", b"\\n")
    return data


_ESCAPE_SEQ: Final = re.compile(rb"\\([\\rn])")
_UNESCAPED: Final = {b"\\": b"\\", b"r": b"\r", b"n": b"\n"}


def unescape(data: bytes) -> bytes:
    """Undo `escape`. A backslash before any other byte is kept as it is."""
    if b"\\" not in data:
        return data
    return _ESCAPE_SEQ.sub(lambda m: _UNESCAPED[m.group(1)], data)


def format_reply(reply: Reply, request: ReplyContext) -> bytes:
    """Render `reply` as one line (LF-terminated), in the form the request was made in."""
    if request.json:
        return _format_json(reply, request.json_id)

    if isinstance(reply, Ok):
        result = reply.result[:-1] if reply.result[-1:] == LF else reply.result
        return b"OK " + escape(result) + LF if result else b"OK\n"
    if isinstance(reply, Err):
        head = b"ERR " + reply.code.value.encode()
        message = escape(reply.message.encode())
        return head + b" " + message + LF if message else head + LF
    return f"REDIRECT {reply.leader_id} {reply.host}:{reply.api_port}\n".encode()


def _format_json(reply: Reply, json_id: Any) -> bytes:
    """JSON replies carry results exactly: no newline is removed, nothing is escaped."""
    obj: dict[str, Any] = {"id": json_id}
    if isinstance(reply, Ok):
        obj["ok"] = True
        try:
            obj["result"] = reply.result.decode()
        except UnicodeDecodeError:
            obj["result_b64"] = base64.b64encode(reply.result).decode()
    elif isinstance(reply, Err):
        obj.update(ok=False, error=reply.code.value, message=reply.message)
        if reply.leader is not None:
            obj["leader"] = reply.leader
    else:
        obj.update(ok=False, error="REDIRECT", leader=reply.leader_id)
        obj.update(host=reply.host, port=reply.api_port)
    return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)


# --- the line splitter ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TooLarge:
    """Stands in for a line longer than `limit` bytes; it is answered `ERR TOOLARGE`."""

    limit: int
    json: bool = False  # the line began with `{`, so it gets a JSON reply
    json_id: None = None

    def reply(self) -> Err:
        return Err(ErrCode.TOOLARGE, f"line exceeds {self.limit} bytes")


class LineReader:
    """Split a byte stream into request lines of at most `max_line` bytes (without CRLF/LF).

    Feed bytes with `feed`, then pull lines with `next_line` until it returns None. An
    overlong line yields one `TooLarge` in its place; its bytes are dropped as they arrive,
    so memory stays bounded by `max_line` plus what one `feed` call holds.
    """

    __slots__ = ("_max", "_partial", "_ready", "_discarding")

    def __init__(self, max_line: int) -> None:
        if max_line < 1:
            raise ValueError(f"max_line must be >= 1, not {max_line}")
        self._max = max_line
        self._partial = bytearray()  # the start of a line whose LF has not arrived yet
        self._ready: deque[bytes | TooLarge] = deque()
        self._discarding = False  # inside an overlong line: drop bytes up to its LF

    def feed(self, data: bytes) -> None:
        if self._discarding:
            end = data.find(LF)
            if end < 0:
                return
            self._discarding = False
            data = data[end + 1 :]

        last = data.rfind(LF)
        if last < 0:
            self._extend_partial(data)
            return

        lines = data[:last].split(LF)
        if self._partial:
            self._partial += lines[0]
            lines[0] = bytes(self._partial)
            self._partial.clear()
        for line in lines:
            self._ready.append(self._complete(line))
        self._extend_partial(data[last + 1 :])

    def feed_eof(self) -> None:
        """The stream ended: a last line without its LF still counts as a request."""
        if self._partial:
            self._ready.append(self._complete(bytes(self._partial)))
            self._partial.clear()
        self._discarding = False

    def next_line(self) -> bytes | TooLarge | None:
        """The next complete line, a TooLarge marker, or None when more bytes are needed."""
        return self._ready.popleft() if self._ready else None

    def __len__(self) -> int:
        """How many lines (and markers) are ready to be pulled."""
        return len(self._ready)

    def _complete(self, line: bytes) -> bytes | TooLarge:
        if line[-1:] == b"\r":
            line = line[:-1]
        if len(line) > self._max:
            return TooLarge(self._max, line[:1] == b"{")
        return line

    def _extend_partial(self, data: bytes) -> None:
        # One byte more than the limit may be a CR whose LF is still on the way.
        if len(self._partial) + len(data) <= self._max + 1:
            self._partial += data
            return

        is_json = (self._partial[:1] or data[:1]) == b"{"
        self._ready.append(TooLarge(self._max, is_json))
        self._partial.clear()
        self._discarding = True
