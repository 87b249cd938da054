"""RetryingStateMachine with a scripted fake (a unit test of this layer alone)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

import pytest

from graft.fsm import ApplyCall, FsmError, FsmFault, FsmStateLost, RetryingStateMachine


class Scripted:
    """Raises the scripted outcomes in turn, then answers b"ok"."""

    def __init__(self, *outcomes: Exception) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def _next(self) -> bytes:
        self.calls += 1
        if self.outcomes:
            raise self.outcomes.pop(0)
        return b"ok"

    async def apply(self, data: bytes, index: int, term: int) -> bytes:
        return await self._next()

    async def query(self, data: bytes) -> bytes:
        return await self._next()

    async def dump(self) -> AsyncIterator[bytes]:
        yield await self._next()

    async def load(self, chunks: AsyncIterable[bytes] | None) -> None:
        if chunks is not None:
            _ = [chunk async for chunk in chunks]
        await self._next()

    async def close(self) -> None:
        pass


class Clock:
    def __init__(self, retrying: list[RetryingStateMachine]) -> None:
        self.delays: list[float] = []
        self.seen: list[str | None] = []
        self.retrying = retrying

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        self.seen.append(self.retrying[0].degraded)


def wrap(fake: Scripted, **kw: float) -> tuple[RetryingStateMachine, Clock]:
    box: list[RetryingStateMachine] = []
    clock = Clock(box)
    box.append(RetryingStateMachine(fake, sleep=clock.sleep, **kw))  # type: ignore[arg-type]
    return box[0], clock


async def test_faults_are_retried_with_capped_backoff_until_success() -> None:
    fake = Scripted(*[FsmFault("apply", "timed out after 10000 ms")] * 6)
    sm, clock = wrap(fake, base_delay=0.05, max_delay=0.3)

    assert await sm.apply(b"x", 42, 3) == b"ok"

    assert fake.calls == 7
    assert clock.delays == [0.05, 0.1, 0.2, 0.3, 0.3, 0.3]
    assert clock.seen[2] == "fsm apply at index 42 timed out after 10000 ms; retrying (attempt 3)"
    assert sm.degraded is None


async def test_a_deterministic_error_is_not_retried() -> None:
    fake = Scripted(
        FsmFault("query", "was killed by signal 9 (SIGKILL)"), FsmError("query", 1, b"", b"no")
    )
    sm, clock = wrap(fake)

    with pytest.raises(FsmError):
        await sm.query(b"x")

    assert (fake.calls, len(clock.delays), sm.degraded) == (2, 1, None)


async def test_a_lost_stream_state_passes_through_and_degrades_until_load() -> None:
    sm, clock = wrap(Scripted(FsmStateLost("apply", "cannot run")))

    with pytest.raises(FsmStateLost):
        await sm.apply(b"x", 1, 1)
    assert clock.delays == []
    assert sm.degraded == "fsm apply cannot run"

    await sm.load(None)
    assert sm.degraded is None


async def _once(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


class Snapshot:
    """Re-iterable: each iteration reads the chunks afresh."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _once(b"a", b"b")


async def test_load_is_retried_only_when_its_chunks_can_be_read_again() -> None:
    sm, _ = wrap(Scripted(FsmFault("load", "exited with status 1")))
    await sm.load(Snapshot())

    one_shot, _ = wrap(Scripted(FsmFault("load", "exited with status 1")))
    with pytest.raises(FsmFault):
        await one_shot.load(_once(b"a"))


async def test_dump_faults_pass_through() -> None:
    sm, clock = wrap(Scripted(FsmFault("dump", "exited with status 1")))

    with pytest.raises(FsmFault):
        _ = [chunk async for chunk in sm.dump()]
    assert clock.delays == []


def test_bad_delays_are_refused() -> None:
    with pytest.raises(ValueError, match="base_delay"):
        RetryingStateMachine(Scripted(), base_delay=3, max_delay=2)  # type: ignore[arg-type]


class Batching(Scripted):
    """A fake FSM that records each index it applied; `fail_once` faults that index once."""

    def __init__(self, *, pipelines: bool, fail_once: int = 0) -> None:
        super().__init__()
        self.pipelines = pipelines
        self.fail_once = fail_once
        self.applied: list[int] = []

    async def apply(self, data: bytes, index: int, term: int) -> bytes:
        if index == self.fail_once:
            self.fail_once = 0
            raise FsmFault("apply", "timed out")
        self.applied.append(index)
        return b"%d" % index

    async def apply_many(self, calls: list[ApplyCall]) -> list[bytes | FsmError]:
        return [await self.apply(c.data, c.index, c.term) for c in calls]


async def test_apply_many_retries_call_by_call_so_none_is_applied_twice() -> None:
    fake = Batching(pipelines=False, fail_once=2)
    sm, clock = wrap(fake)

    results = await sm.apply_many([ApplyCall(b"", i, 1) for i in (1, 2, 3)])

    assert results == [b"1", b"2", b"3"]
    assert fake.applied == [1, 2, 3]
    assert len(clock.delays) == 1


async def test_apply_many_hands_a_pipelining_fsm_the_whole_batch() -> None:
    fake = Batching(pipelines=True)
    sm, _ = wrap(fake)

    assert await sm.apply_many([ApplyCall(b"", i, 1) for i in (4, 5)]) == [b"4", b"5"]
    assert fake.applied == [4, 5] and sm.pipelines
