"""Faults are retried, never skipped (DESIGN §3), while the node reports itself degraded."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from graft.fsm.base import ApplyCall, StateMachine, apply_each
from graft.fsm.errors import FsmError, FsmFault, FsmStateLost

log = logging.getLogger("graft.fsm")

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


class RetryingStateMachine:
    """Wraps a StateMachine: an FsmFault is retried with capped exponential back-off until
    the call succeeds; an FsmError (a result) passes through.

    `degraded` holds the reason while some call is being retried, e.g. "fsm apply at index
    42 timed out after 10000 ms; retrying (attempt 3)", and is None once every call got
    through. Three faults are not retried, because repeating the same call cannot help:
    FsmStateLost (the node must load a snapshot), a failed dump (the snapshot is abandoned;
    the node takes another later), and a load fed by a one-shot iterator (its chunks are
    spent; pass a re-iterable, whose __aiter__ reopens the snapshot, to have it retried).
    """

    def __init__(
        self,
        sm: StateMachine,
        *,
        base_delay: float = 0.05,
        max_delay: float = 2.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not 0 < base_delay <= max_delay:
            raise ValueError(f"need 0 < base_delay <= max_delay, got {base_delay}, {max_delay}")
        self._sm = sm
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._sleep = sleep
        self._faults: dict[int, str] = {}  # call number -> why it is being retried
        self._numbers = itertools.count()
        self._lost: str | None = None  # set by FsmStateLost, cleared by a successful load

    @property
    def degraded(self) -> str | None:
        """The reason of the most recent call still being retried, or a lost stream state
        not yet reloaded, or None."""
        return next(reversed(self._faults.values()), self._lost)

    async def apply(self, data: bytes, index: int, term: int) -> bytes:
        what = f"apply at index {index}"
        return await self._retry(lambda: self._sm.apply(data, index, term), what)

    @property
    def pipelines(self) -> bool:
        return self._sm.pipelines

    async def apply_many(self, calls: Sequence[ApplyCall]) -> list[bytes | FsmError]:
        """Every call applied once, in order, faults retried.

        A fault part-way through a batch leaves the calls before it applied, so a batch is
        retried whole only where that cannot apply one twice: a pipelining (stream) FSM
        whose fault loses its state, so that its retry fails with FsmStateLost. Otherwise
        each call is retried alone.
        """
        if self._sm.pipelines:
            what = f"apply at index {calls[0].index}"
            return await self._retry(lambda: self._sm.apply_many(calls), what)
        return await apply_each(self.apply, calls)

    async def query(self, data: bytes) -> bytes:
        return await self._retry(lambda: self._sm.query(data), "query")

    def dump(self) -> AsyncIterator[bytes]:
        return self._sm.dump()

    async def load(self, chunks: AsyncIterable[bytes] | None) -> None:
        if chunks is not None and isinstance(chunks, AsyncIterator):
            await self._sm.load(chunks)
        else:
            await self._retry(lambda: self._sm.load(chunks), "load")
        self._lost = None

    async def close(self) -> None:
        await self._sm.close()

    async def _retry(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        number = next(self._numbers)
        delay = self._base_delay
        try:
            for attempt in itertools.count(1):
                try:
                    return await call()
                except FsmStateLost as lost:
                    self._lost = f"{lost}"
                    raise
                except FsmFault as fault:
                    self._note(number, what, fault, attempt)
                await self._sleep(delay)
                delay = min(delay * 2, self._max_delay)
            raise AssertionError("unreachable: itertools.count() does not end")
        finally:
            if self._faults.pop(number, None) is not None:
                log.info("fsm %s got through; no longer degraded by it", what)

    def _note(self, number: int, what: str, fault: FsmFault, attempt: int) -> None:
        reason = f"fsm {what} {fault.reason}; retrying (attempt {attempt})"
        self._faults[number] = reason
        # Warn once per streak: a timer retrying forever must not flood the log.
        if attempt == 1:
            log.warning("%s: %s", reason, fault)
        else:
            log.debug("%s", reason)
