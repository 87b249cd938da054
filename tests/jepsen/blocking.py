"""Helpers for tests that drive the asyncio harness from plain blocking code.

The cluster harness and the fault proxy are asyncio code; the integration and snapshot tests
are synchronous. They run the harness on a loop in a background thread, poll with
`wait_for`, and talk to the nodes with `LineClient` over blocking sockets.
"""

from __future__ import annotations

import abc
import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], within: float, what: str, every: float = 0.05) -> T:
    """Poll check() until it returns something other than None or False."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.1f} s waiting for {what}")
        time.sleep(every)


class LoopThread:
    """An event loop in a daemon thread: coroutines (the harness, the proxy) run on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 90.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def call(self, function: Callable[[], T]) -> T:
        """Run a plain function on the loop (the proxy's state belongs to the loop)."""

        async def wrapper() -> T:
            return function()

        return self.run(wrapper())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class LineClient:
    """One blocking connection to a node's api port (DESIGN §4: one reply line per line)."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.reader = self.sock.makefile("rb")

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def read_line(self) -> str:
        line = self.reader.readline()
        if not line:
            raise ConnectionError("the node closed the connection")
        return line.decode().rstrip("\r\n")

    def request(self, line: str) -> str:
        self.send(line.encode() + b"\n")
        return self.read_line()

    def pipeline(self, lines: Sequence[str], window: int = 200) -> list[str]:
        """Send every line, at most `window` ahead of the replies; replies in order."""
        replies: list[str] = []
        for start in range(0, len(lines), window):
            batch = lines[start : start + window]
            self.send("".join(f"{line}\n" for line in batch).encode())
            replies.extend(self.read_line() for _ in batch)
        return replies

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Requests(abc.ABC):
    """Requests to the nodes of a cluster by name; a subclass says where a node's api is."""

    @abc.abstractmethod
    def api_port(self, name: str) -> int:
        """The api port of the node called `name`."""

    def client(self, name: str, timeout: float = 5.0) -> LineClient:
        return LineClient(self.api_port(name), timeout)

    def ask(self, name: str, line: str, timeout: float = 5.0) -> str | None:
        """One request on a fresh connection; None when the node did not answer."""
        try:
            with self.client(name, timeout) as client:
                return client.request(line)
        except (OSError, ConnectionError):
            return None

    def status(self, name: str) -> dict[str, Any] | None:
        """The node's STATUS, parsed; None when it did not answer OK."""
        reply = self.ask(name, "STATUS", 2.0)
        if reply is None or not reply.startswith("OK "):
            return None
        parsed = json.loads(reply[3:])
        assert isinstance(parsed, dict), reply
        return parsed
