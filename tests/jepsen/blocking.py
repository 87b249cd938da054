"""Helpers for tests that drive the asyncio harness from plain blocking code.

The cluster harness and the fault proxy are asyncio code; the integration and snapshot tests
are synchronous. They run the harness on a loop in a background thread and poll with
`wait_for`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
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
