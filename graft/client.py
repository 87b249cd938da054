"""Clients of the line API (docs/api.md): a blocking `Client` and a pipelining `AsyncClient`.

Both speak the text form, one request line and one reply line at a time. `OK` results come
back unescaped; `ERR` replies raise `ClientError`, whose `outcome` tells whether the request
certainly did not take effect (safe to retry) or may have.

Retries are conservative: the blocking client moves to the next endpoint when it cannot
connect (nothing was sent), follows `REDIRECT`, and re-sends a lost request only when it
is read-only. A mutation whose connection dropped raises `ClientError("DISCONNECTED")`,
an unknown outcome, because re-sending it could apply it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
from collections import deque
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Final

from graft.api.protocol import ErrCode, Outcome, unescape

Endpoint = tuple[str, int]

# Client-side codes, next to the server's ErrCode values.
UNREACHABLE: Final = "UNREACHABLE"  # no endpoint accepted a connection: nothing was sent
DISCONNECTED: Final = "DISCONNECTED"  # the connection dropped after sending: unknown outcome
REDIRECT: Final = "REDIRECT"  # the node answered REDIRECT: not applied there
PROTOCOL: Final = "PROTOCOL"  # the reply line was not valid: unknown outcome
TIMEOUT: Final = ErrCode.TIMEOUT.value

MAX_REPLY: Final = 1 << 26  # bytes of one reply line the AsyncClient accepts
_READ_ONLY: Final = frozenset({"QUERY", "LOCAL", "STATUS", "PING", "MEMBERS"})
_CLIENT_OUTCOMES: Final = {
    UNREACHABLE: Outcome.NOT_APPLIED,
    REDIRECT: Outcome.NOT_APPLIED,
    DISCONNECTED: Outcome.UNKNOWN,
    PROTOCOL: Outcome.UNKNOWN,
}


class ClientError(Exception):
    """An `ERR <code> <message>` reply, a REDIRECT not followed, or a connection failure."""

    def __init__(
        self,
        code: str,
        message: str = "",
        *,
        leader: str | None = None,
        endpoint: Endpoint | None = None,
    ) -> None:
        super().__init__(f"{code} {message}".rstrip())
        self.code = code
        self.message = message
        self.leader = leader  # the leader's id, for REDIRECT
        self.endpoint = endpoint  # the leader's API address, for REDIRECT

    @property
    def outcome(self) -> Outcome:
        """Whether the request certainly did not take effect, may have, or did."""
        if self.code in _CLIENT_OUTCOMES:
            return _CLIENT_OUTCOMES[self.code]
        try:
            return ErrCode(self.code).outcome
        except ValueError:
            return Outcome.UNKNOWN  # a code newer than this client


def parse_reply(line: str) -> str:
    """The unescaped result of an `OK` reply line; raise ClientError for anything else."""
    if line == "OK":
        return ""
    if line.startswith("OK "):
        return _unescape(line[3:])

    verb, _, rest = line.partition(" ")
    if verb == "ERR":
        code, _, message = rest.partition(" ")
        raise ClientError(code, _unescape(message))
    if verb == "REDIRECT":
        raise _redirect(rest)
    raise ClientError(PROTOCOL, f"unexpected reply {line[:80]!r}")


def _unescape(text: str) -> str:
    raw = text.encode("utf-8", "surrogateescape")
    return unescape(raw).decode("utf-8", "replace")


def _redirect(rest: str) -> ClientError:
    leader, _, address = rest.partition(" ")
    host, _, port = address.rpartition(":")
    if not leader or not host or not port.isdigit():
        return ClientError(PROTOCOL, f"malformed REDIRECT {rest[:80]!r}")
    return ClientError(REDIRECT, f"ask {leader}", leader=leader, endpoint=(host, int(port)))


def request_line(verb: str, payload: str | bytes) -> bytes:
    """`VERB payload` as one line; the payload must fit on it (use the JSON form if not)."""
    data = payload.encode() if isinstance(payload, str) else payload
    if not data:
        raise ValueError(f"{verb} needs a non-empty payload")
    if b"\n" in data or data.endswith(b"\r"):
        raise ValueError(f"a {verb} payload cannot contain LF or end with CR: {data[:40]!r}")
    return verb.encode() + b" " + data


def _args_line(verb: str, *args: object) -> bytes:
    words = [str(a) for a in args]
    for word in words:
        if not word or any(c.isspace() for c in word):
            raise ValueError(f"{verb} argument must be one non-empty word: {word!r}")
    return " ".join([verb, *words]).encode()


class Client:
    """A blocking client on one connection at a time; not safe to share between threads."""

    def __init__(
        self, endpoints: Iterable[Endpoint], timeout: float = 5.0, *, max_redirects: int = 3
    ) -> None:
        self.endpoints: list[Endpoint] = list(endpoints)
        if not self.endpoints:
            raise ValueError("Client needs at least one endpoint")
        self.timeout = timeout
        self.max_redirects = max_redirects
        self._current = 0
        self._sock: socket.socket | None = None
        self._buffer = bytearray()

    @property
    def endpoint(self) -> Endpoint:
        """The endpoint the client talks to (or will try first)."""
        return self.endpoints[self._current]

    # verbs

    def apply(self, payload: str | bytes) -> str:
        return self._call(request_line("APPLY", payload))

    def query(self, payload: str | bytes) -> str:
        return self._call(request_line("QUERY", payload))

    def local(self, payload: str | bytes) -> str:
        return self._call(request_line("LOCAL", payload))

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = json.loads(self._call(b"STATUS"))
        return status

    def ping(self) -> str:
        return self._call(b"PING")

    def snapshot(self) -> int:
        return int(self._call(b"SNAPSHOT"))

    def members(self) -> Any:
        """The parsed JSON of MEMBERS (docs/api.md)."""
        return json.loads(self._call(b"MEMBERS"))

    def add(self, member: str, host: str, p2p: int, api: int) -> str:
        return self._call(_args_line("ADD", member, host, p2p, api))

    def remove(self, member: str) -> str:
        return self._call(_args_line("REMOVE", member))

    def transfer(self, member: str) -> str:
        return self._call(_args_line("TRANSFER", member))

    def request(self, line: str | bytes) -> str:
        """Send one raw line, return the raw reply line (without its LF), no interpretation."""
        data = line.encode() if isinstance(line, str) else line
        if b"\n" in data:
            raise ValueError("request() sends exactly one line")
        return self._exchange(data, retry=False)

    def find_leader(self) -> Endpoint:
        """Ask every endpoint for STATUS; talk to the one that leads in the highest term."""
        best: tuple[int, int] | None = None
        for i, endpoint in enumerate(self.endpoints):
            status = self._status_of(endpoint)
            if status is not None and status.get("role") == "leader":
                term = int(status.get("term", 0))
                if best is None or term > best[0]:
                    best = (term, i)
        if best is None:
            raise ClientError(ErrCode.NOLEADER.value, "no endpoint reports itself leader")

        self._switch(best[1])
        return self.endpoint

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # plumbing

    def _call(self, line: bytes) -> str:
        retry = line.split(b" ", 1)[0].decode() in _READ_ONLY
        for _ in range(self.max_redirects + 1):
            try:
                return parse_reply(self._exchange(line, retry=retry))
            except ClientError as exc:
                if exc.code != REDIRECT or exc.endpoint is None:
                    raise
                self._follow(exc.endpoint)
        raise ClientError(REDIRECT, f"more than {self.max_redirects} redirects")

    def _follow(self, endpoint: Endpoint) -> None:
        if endpoint not in self.endpoints:
            self.endpoints.append(endpoint)
        self._switch(self.endpoints.index(endpoint))

    def _switch(self, index: int) -> None:
        if index != self._current:
            self.close()
            self._current = index

    def _exchange(self, line: bytes, *, retry: bool) -> str:
        sock = self._connected()
        try:
            sock.sendall(line + b"\n")
            return self._readline(sock)
        except TimeoutError:
            self.close()  # a late reply would be taken for the next request's
            raise ClientError(
                TIMEOUT, f"no reply from {self.endpoint} in {self.timeout}s"
            ) from None
        except (OSError, EOFError) as exc:
            self.close()
            if not retry:
                raise ClientError(DISCONNECTED, f"{self.endpoint}: {exc or 'closed'}") from None
        self._current = (self._current + 1) % len(self.endpoints)
        return self._exchange(line, retry=False)

    def _connected(self) -> socket.socket:
        if self._sock is not None and not self._idle_and_open(self._sock):
            self.close()
        if self._sock is None:
            self._sock = self._dial()
        return self._sock

    def _idle_and_open(self, sock: socket.socket) -> bool:
        """False if the server closed (or wrote to) the idle connection since last time."""
        if self._buffer:
            return False
        readable, _, _ = select.select([sock], [], [], 0)
        return not readable

    def _dial(self) -> socket.socket:
        errors = []
        for step in range(len(self.endpoints)):
            index = (self._current + step) % len(self.endpoints)
            try:
                sock = socket.create_connection(self.endpoints[index], timeout=self.timeout)
            except OSError as exc:
                errors.append(f"{self.endpoints[index]}: {exc}")
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._current = index
            return sock
        raise ClientError(UNREACHABLE, "; ".join(errors))

    def _readline(self, sock: socket.socket) -> str:
        while (end := self._buffer.find(b"\n")) < 0:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed by the server")
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line.decode("utf-8", "surrogateescape")

    def _status_of(self, endpoint: Endpoint) -> dict[str, Any] | None:
        try:
            with Client([endpoint], self.timeout, max_redirects=0) as probe:
                return probe.status()
        except (ClientError, ValueError):
            return None


class AsyncClient:
    """An asyncio client on one connection. Concurrent calls are pipelined: each writes its
    line at once and the replies are matched to the calls in order. It does not follow
    REDIRECT (it raises ClientError with the leader's endpoint) nor re-send anything."""

    def __init__(self, endpoints: Iterable[Endpoint], timeout: float = 5.0) -> None:
        self.endpoints: list[Endpoint] = list(endpoints)
        if not self.endpoints:
            raise ValueError("AsyncClient needs at least one endpoint")
        self.timeout = timeout
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: deque[asyncio.Future[str]] = deque()
        self._reader_task: asyncio.Task[None] | None = None

    async def connect(self) -> Endpoint:
        """Connect to the first endpoint that accepts; return it."""
        errors = []
        for endpoint in self.endpoints:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(*endpoint, limit=MAX_REPLY), self.timeout
                )
            except (OSError, TimeoutError) as exc:
                errors.append(f"{endpoint}: {exc}")
                continue
            self._writer = writer
            self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))
            return endpoint
        raise ClientError(UNREACHABLE, "; ".join(errors))

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        self._fail_waiting("client closed")

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def apply(self, payload: str | bytes) -> str:
        return parse_reply(await self.request(request_line("APPLY", payload)))

    async def query(self, payload: str | bytes) -> str:
        return parse_reply(await self.request(request_line("QUERY", payload)))

    async def local(self, payload: str | bytes) -> str:
        return parse_reply(await self.request(request_line("LOCAL", payload)))

    async def status(self) -> dict[str, Any]:
        status: dict[str, Any] = json.loads(parse_reply(await self.request(b"STATUS")))
        return status

    async def ping(self) -> str:
        return parse_reply(await self.request(b"PING"))

    async def request(self, line: str | bytes) -> str:
        """Send one raw line, return the raw reply line; safe to call concurrently."""
        data = line.encode() if isinstance(line, str) else line
        if b"\n" in data:
            raise ValueError("request() sends exactly one line")
        if self._writer is None:
            raise ClientError(DISCONNECTED, "not connected")

        reply: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        reply.add_done_callback(_retrieve)  # a caller that timed out will not look at it
        self._waiting.append(reply)
        self._writer.write(data + b"\n")
        try:
            await self._writer.drain()
            # shield: on timeout the slot stays queued so that its late reply is skipped
            return await asyncio.wait_for(asyncio.shield(reply), self.timeout)
        except TimeoutError:
            raise ClientError(TIMEOUT, f"no reply in {self.timeout}s") from None
        except (OSError, RuntimeError) as exc:
            raise ClientError(DISCONNECTED, str(exc)) from None

    async def pipeline(self, lines: Iterable[str | bytes]) -> list[str]:
        """Send all lines before reading any reply; the raw replies, in order."""
        return list(await asyncio.gather(*(self.request(line) for line in lines)))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        reason = "connection closed by the server"
        try:
            while (line := await reader.readline()).endswith(b"\n"):
                reply = self._waiting.popleft() if self._waiting else None
                if reply is None:
                    reason = f"unexpected reply {line[:80]!r}"
                    break
                if not reply.done():
                    reply.set_result(line[:-1].decode("utf-8", "surrogateescape"))
        except (OSError, ValueError) as exc:  # ValueError: a reply over the stream limit
            reason = str(exc)
        self._fail_waiting(reason)

    def _fail_waiting(self, reason: str) -> None:
        while self._waiting:
            reply = self._waiting.popleft()
            if not reply.done():
                reply.set_exception(ClientError(DISCONNECTED, reason))


def _retrieve(future: asyncio.Future[str]) -> None:
    if not future.cancelled():
        future.exception()
