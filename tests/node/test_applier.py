"""The applier alone, with a recording fake FSM (a unit test of the node layer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Sequence

from graft.fsm import ApplyCall, FsmError
from graft.node.applier import Applier
from graft.node.envelope import wrap
from graft.node.sessions import Sessions
from graft.raft.types import Entry, EntryKind, Member, Membership


class Recorder:
    """Applies `+N` commands to a counter; records every batch it was handed."""

    def __init__(self, pipelines: bool = True) -> None:
        self.pipelines = pipelines
        self.total = 0
        self.batches: list[list[int]] = []
        self.queries = 0

    async def apply(self, data: bytes, index: int, term: int) -> bytes:
        return (await self.apply_many([ApplyCall(data, index, term)]))[0]  # type: ignore[return-value]

    async def apply_many(self, calls: Sequence[ApplyCall]) -> list[bytes | FsmError]:
        self.batches.append([c.index for c in calls])
        out: list[bytes | FsmError] = []
        for call in calls:
            if call.data == b"bad":
                out.append(FsmError("apply", 2, b"", b"bad command"))
                continue
            self.total += int(call.data)
            out.append(b"%d" % self.total)
        return out

    async def query(self, data: bytes) -> bytes:
        self.queries += 1
        return b"%d" % self.total

    async def dump(self) -> AsyncIterator[bytes]:
        yield b"%d" % self.total

    async def load(self, chunks: AsyncIterable[bytes] | None) -> None:
        self.total = 0

    async def close(self) -> None:
        pass


def command(index: int, data: bytes, client: str | None = None, seq: int | None = None) -> Entry:
    return Entry(index, 1, EntryKind.COMMAND, wrap(data, client, seq))


async def run(entries: list[Entry], fsm: Recorder, sessions: Sessions | None = None) -> Applier:
    seen: list[Membership] = []
    applier = Applier(fsm, sessions or Sessions(), applied=0, on_membership=seen.append)
    task = asyncio.get_running_loop().create_task(applier.run())
    applier.push_entries(tuple(entries))
    await applier.drained()
    task.cancel()
    return applier


async def test_commands_go_to_the_fsm_in_batches_that_stop_at_graft_entries() -> None:
    fsm = Recorder()
    config = Entry(3, 1, EntryKind.CONFIG, Membership((Member("a"),)).encode())
    entries = [command(1, b"1"), command(2, b"2"), config, command(4, b"3"), command(5, b"4")]

    applier = await run(entries, fsm)

    assert fsm.batches == [[1, 2], [4, 5]]
    assert (fsm.total, applier.applied) == (10, 5)


async def test_a_retried_command_is_applied_once_even_inside_one_batch() -> None:
    fsm = Recorder()
    entries = [command(1, b"5", "c", 1), command(2, b"5", "c", 1), command(3, b"1", "c", 2)]

    applier = await run(entries, fsm)

    assert fsm.total == 6
    assert applier.sessions.seen("c", 1) is not None
    assert fsm.batches == [[1], [3]]


async def test_proposals_get_their_outcome_or_learn_they_were_replaced() -> None:
    fsm = Recorder()
    applier = Applier(fsm, Sessions(), applied=0, on_membership=lambda m: None)
    mine = applier.expect(1, term=1)
    lost = applier.expect(2, term=7)
    failed = applier.expect(3, term=1)
    task = asyncio.get_running_loop().create_task(applier.run())

    applier.push_entries((command(1, b"2"), command(2, b"3"), command(3, b"bad")))
    await applier.drained()
    task.cancel()

    outcome = await mine
    assert outcome is not None and (outcome.ok, outcome.output) == (True, b"2")
    assert await lost is None
    error = await failed
    assert error is not None and (error.ok, error.status) == (False, 2)


async def test_a_read_waits_for_its_index_to_be_applied() -> None:
    fsm = Recorder()
    applier = Applier(fsm, Sessions(), applied=0, on_membership=lambda m: None)
    task = asyncio.get_running_loop().create_task(applier.run())

    read = applier.read(2, b"GET")
    applier.push_entries((command(1, b"1"),))
    await applier.drained()
    assert not read.done()

    applier.push_entries((command(2, b"10"),))
    outcome = await asyncio.wait_for(read, 5)
    task.cancel()
    assert outcome.output == b"11"


async def test_an_fsm_that_cannot_pipeline_answers_each_command_as_it_is_applied() -> None:
    fsm = Recorder(pipelines=False)
    applier = Applier(fsm, Sessions(), applied=0, on_membership=lambda m: None)
    first = applier.expect(1, term=1)
    resolved_before_second: list[bool] = []
    original = fsm.apply_many

    async def watching(calls: Sequence[ApplyCall]) -> list[bytes | FsmError]:
        if calls[0].index == 2:
            resolved_before_second.append(first.done())
        return await original(calls)

    fsm.apply_many = watching  # type: ignore[method-assign]
    task = asyncio.get_running_loop().create_task(applier.run())
    applier.push_entries((command(1, b"1"), command(2, b"1")))
    await applier.drained()
    task.cancel()

    assert fsm.batches == [[1], [2]]
    assert resolved_before_second == [True]
