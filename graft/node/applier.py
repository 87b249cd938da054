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
from collections.abc import Callable
from dataclasses import dataclass

from graft.fsm import FsmError, StateMachine
from graft.node.envelope import EnvelopeError, unwrap
from graft.node.sessions import Outcome, Sessions
from graft.raft.types import Entry, EntryKind, Membership

log = logging.getLogger("graft.node")


@dataclass(slots=True)
class _Query:
    data: bytes
    future: asyncio.Future[Outcome]


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
    ) -> None:
        self.fsm = fsm
        self.sessions = sessions
        self.applied = applied
        self.enqueued = applied
        self._on_membership = on_membership
        self._queue: deque[Entry | _Query] = deque()
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

            item = self._queue.popleft()
            if isinstance(item, Entry):
                await self._apply(item)
            else:
                await self._query(item)

    def _wake(self) -> None:
        if not self._wakeup.is_set():
            self._wakeup.set()

    def _release_parked(self) -> None:
        while self._parked and self._parked[0][0] <= self.enqueued:
            _, _, query = heapq.heappop(self._parked)
            self._queue.append(query)

    async def _apply(self, entry: Entry) -> None:
        outcome: Outcome | None = None
        if entry.kind is EntryKind.COMMAND:
            outcome = await self._apply_command(entry)
        elif entry.kind is EntryKind.CONFIG:
            self._on_membership(Membership.decode(entry.data))

        self.applied = entry.index
        self._settle(entry, outcome)

    async def _apply_command(self, entry: Entry) -> Outcome:
        try:
            command = unwrap(entry.data)
        except EnvelopeError as exc:
            # Every node fails the same way on the same entry, so the state stays identical.
            log.error("entry %d is unreadable and was skipped: %s", entry.index, exc)
            return Outcome(False, b"", 1, str(exc).encode())

        if command.client is not None and command.seq is not None:
            seen = self.sessions.seen(command.client, command.seq)
            if seen is not None:
                return seen

        try:
            output = await self.fsm.apply(command.payload, entry.index, entry.term)
            outcome = Outcome(True, output)
        except FsmError as exc:
            outcome = Outcome(False, exc.stdout, exc.status, exc.stderr)

        if command.client is not None and command.seq is not None:
            self.sessions.record(command.client, command.seq, entry.index, outcome)
        return outcome

    def _settle(self, entry: Entry, outcome: Outcome | None) -> None:
        proposal = self._proposals.pop(entry.index, None)
        if proposal is None or proposal.future.done():
            return

        if proposal.term != entry.term:
            proposal.future.set_result(None)
        elif outcome is None:
            proposal.future.set_result(Outcome(True, b""))
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
