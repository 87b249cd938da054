"""Feeds committed entries to the user's state machine, one at a time, in log order.

The applier is the only caller of the FSM once the node runs. Entries, reads and local
queries wait in one queue, so a read released at index i runs after every entry up to i was
applied (§6.4: the state machine must have advanced at least as far as the read index), and
the FSM never sees two calls at once.

The applier runs as its own task: a slow FSM call delays applies and reads, never the Raft
loop, so heartbeats keep flowing while a command runs.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from graft.fsm import ApplyCall, FsmError, StateMachine
from graft.node.envelope import Command, EnvelopeError, unwrap
from graft.node.sessions import Outcome, Sessions
from graft.raft.types import Entry, EntryKind, Membership

log = logging.getLogger("graft.node")

T = TypeVar("T")

# Entries handed to the FSM in one go at most; bounds the time a read waits behind applies.
MAX_BATCH = 256

_NO_OUTCOME = Outcome(True, b"")  # Graft's own entries: the proposer only learns they applied
_UNREADABLE = Outcome(False, b"", 1, b"unreadable command entry")


@dataclass(slots=True)
class _Query:
    data: bytes
    future: asyncio.Future[Outcome]


@dataclass(slots=True)
class _Job:
    """Work that needs the FSM to itself: a snapshot's dump, or a restore from one."""

    run: Callable[[], Awaitable[object]]
    future: asyncio.Future[object]


class OutcomeUnknown(Exception):
    """The entry's outcome was lost: the state jumped past it by installing a snapshot."""


@dataclass(slots=True)
class _Proposal:
    term: int
    future: asyncio.Future[Outcome | None]


class Applier:
    """Applies entries and serves reads against the state machine.

    invariant: applied <= enqueued, and both only grow.
    """

    def __init__(
        self,
        fsm: StateMachine,
        sessions: Sessions,
        *,
        applied: int,
        on_membership: Callable[[Membership], None],
        after_batch: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.fsm = fsm
        self.sessions = sessions
        self.applied = applied
        self.enqueued = applied
        self._on_membership = on_membership
        self._after_batch = after_batch
        self._queue: deque[Entry | _Query | _Job] = deque()
        self._wakeup = asyncio.Event()
        self._parked: list[tuple[int, int, _Query]] = []  # (read index, order, query)
        self._order = 0
        self._proposals: dict[int, _Proposal] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    # -- what the node hands in -------------------------------------------------------------

    def push_entries(self, entries: tuple[Entry, ...]) -> None:
        for entry in entries:
            if entry.index <= self.enqueued:
                continue
            self._queue.append(entry)
            self.enqueued = entry.index

        self._release_parked()
        self._wake()

    def expect(self, index: int, term: int) -> asyncio.Future[Outcome | None]:
        """A future for the outcome of the proposal at (index, term).

        It resolves to None when a different entry was committed at that index: the proposal
        was overwritten and can never be applied.
        """
        future: asyncio.Future[Outcome | None] = asyncio.get_running_loop().create_future()
        self._proposals[index] = _Proposal(term, future)
        return future

    def read(self, index: int, data: bytes) -> asyncio.Future[Outcome]:
        """Run a query once every entry up to `index` has been applied."""
        query = _Query(data, asyncio.get_running_loop().create_future())
        if index <= self.enqueued:
            self._queue.append(query)
            self._wake()
        else:
            self._order += 1
            heapq.heappush(self._parked, (index, self._order, query))
        return query.future

    def local(self, data: bytes) -> asyncio.Future[Outcome]:
        """Run a query on whatever has been committed so far (LOCAL: possibly stale)."""
        return self.read(0, data)

    async def exclusive(self, run: Callable[[], Awaitable[T]]) -> T:
        """Run `run` between two batches, with applies paused; ahead of queued entries."""
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._queue.appendleft(_Job(run, future))
        self._wake()
        return await future  # type: ignore[return-value]

    def restored(self, index: int, sessions: Sessions) -> None:
        """The FSM now holds a snapshot's state at `index` (call inside `exclusive`)."""
        self._queue = deque(
            item for item in self._queue if not (isinstance(item, Entry) and item.index <= index)
        )
        self.sessions = sessions
        self.applied = index
        self.enqueued = max(self.enqueued, index)
        for proposal_index in [i for i in self._proposals if i <= index]:
            proposal = self._proposals.pop(proposal_index)
            if not proposal.future.done():
                proposal.future.set_exception(OutcomeUnknown(f"entry {proposal_index}"))
        self._release_parked()

    async def drained(self) -> None:
        """Wait until everything queued so far has been applied."""
        while self._queue:
            self._idle.clear()
            await self._idle.wait()

    # -- the task ---------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue

            head = self._queue[0]
            if isinstance(head, _Query):
                self._queue.popleft()
                await self._query(head)
                continue
            if isinstance(head, _Job):
                self._queue.popleft()
                await self._job(head)
                continue

            # A pipelining FSM answers a batch in one round trip; one that runs a process per
            # call would hold every reply of a batch until its last call returned.
            limit = MAX_BATCH if self.fsm.pipelines else 1
            batch: list[Entry] = []
            while self._queue and isinstance(self._queue[0], Entry) and len(batch) < limit:
                entry = self._queue.popleft()
                assert isinstance(entry, Entry)
                batch.append(entry)
            await self._apply_batch(batch)
            if self._after_batch is not None:
                await self._after_batch()

    async def _job(self, job: _Job) -> None:
        try:
            job.future.set_result(await job.run())
        except Exception as exc:  # handed to whoever waits for the job
            job.future.set_exception(exc)

    def _wake(self) -> None:
        if not self._wakeup.is_set():
            self._wakeup.set()

    def _release_parked(self) -> None:
        while self._parked and self._parked[0][0] <= self.enqueued:
            _, _, query = heapq.heappop(self._parked)
            self._queue.append(query)

    async def _apply_batch(self, entries: list[Entry]) -> None:
        """Apply `entries` in order, handing runs of commands to the FSM together.

        A run ends where an entry must see the outcome of the ones before it: Graft's own
        entries, and a second command of the same client session (its retry check needs
        the first one recorded).
        """
        run: list[tuple[Entry, Command]] = []
        clients: set[str] = set()
        for entry in entries:
            command = self._command(entry)
            if command is not None and command.client is not None and command.client in clients:
                await self._apply_run(run)
                clients.clear()

            settled = self._settled_without_fsm(entry, command)
            if settled is not None:
                await self._apply_run(run)
                clients.clear()
                self._finish(entry, settled)
                continue

            assert command is not None
            run.append((entry, command))
            if command.client is not None:
                clients.add(command.client)
        await self._apply_run(run)

    @staticmethod
    def _command(entry: Entry) -> Command | None:
        if entry.kind is not EntryKind.COMMAND:
            return None
        try:
            return unwrap(entry.data)
        except EnvelopeError as exc:
            # Every node fails the same way on the same entry, so the state stays identical.
            log.error("entry %d is unreadable and was skipped: %s", entry.index, exc)
            return None

    def _settled_without_fsm(self, entry: Entry, command: Command | None) -> Outcome | None:
        """The outcome of an entry the FSM must not see, or None when it must apply it."""
        if entry.kind is EntryKind.CONFIG:
            self._on_membership(Membership.decode(entry.data))
            return _NO_OUTCOME
        if command is None:
            return _NO_OUTCOME if entry.kind is EntryKind.NOOP else _UNREADABLE
        if command.client is not None and command.seq is not None:
            return self.sessions.seen(command.client, command.seq)
        return None

    async def _apply_run(self, run: list[tuple[Entry, Command]]) -> None:
        if not run:
            return

        calls = [ApplyCall(c.payload, e.index, e.term) for e, c in run]
        results = await self.fsm.apply_many(calls)
        for (entry, command), output in zip(run, results, strict=True):
            if isinstance(output, FsmError):
                outcome = Outcome(False, output.stdout, output.status, output.stderr)
            else:
                outcome = Outcome(True, output)
            if command.client is not None and command.seq is not None:
                self.sessions.record(command.client, command.seq, entry.index, outcome)
            self._finish(entry, outcome)
        run.clear()

    def _finish(self, entry: Entry, outcome: Outcome) -> None:
        self.applied = entry.index
        proposal = self._proposals.pop(entry.index, None)
        if proposal is None or proposal.future.done():
            return

        if proposal.term != entry.term:
            proposal.future.set_result(None)
        else:
            proposal.future.set_result(outcome)

    async def _query(self, query: _Query) -> None:
        if query.future.done():
            return
        try:
            output = await self.fsm.query(query.data)
            outcome = Outcome(True, output)
        except FsmError as exc:
            outcome = Outcome(False, exc.stdout, exc.status, exc.stderr)

        if not query.future.done():
            query.future.set_result(outcome)
