"""Linearizable reads by ReadIndex (thesis §6.4), on the leader.

A read is safe to serve at index `i` once two things hold:

1. the leader has committed an entry of its current term, so that its commit index is at
   least every index committed before the read arrived (§6.4 step 1; a new leader does not
   know its predecessor's commit index until its empty entry commits), and `i` is that
   commit index taken at the time the read arrived or, if it arrived earlier, at that first
   commit;
2. a majority of voters answered a heartbeat round that left after the read arrived, so
   no newer leader existed when the read was accepted (§6.4 step 2).

Each read_index call opens a round numbered `seq`; the heartbeats carry `seq` as
`read_context` and followers echo it. A follower's answer to round `r` confirms every read
with `seq <= r`. Reads are released in arrival order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from graft.raft.quorum import majority
from graft.raft.ready import ReadState


@dataclass(slots=True)
class PendingRead:
    seq: int
    context: int
    index: int  # 0 until the leader has committed an entry of its term


class ReadQueue:
    __slots__ = ("_pending", "_seq")

    def __init__(self) -> None:
        self._pending: deque[PendingRead] = deque()
        self._seq = 0

    def __len__(self) -> int:
        return len(self._pending)

    def last_seq(self) -> int:
        return self._seq

    def add(self, context: int, index: int) -> int:
        """Queue a read; `index` is the commit index, or 0 if no entry of this term committed."""
        self._seq += 1
        self._pending.append(PendingRead(self._seq, context, index))
        return self._seq

    def on_term_commit(self, commit: int) -> None:
        """The leader's first entry of its term committed: unindexed reads get `commit`."""
        for read in self._pending:
            if read.index == 0:
                read.index = commit

    def release(self, acked: Mapping[str, int], voters: tuple[str, ...]) -> list[ReadState]:
        """Reads confirmed by a majority of `voters` (acked maps voter -> highest round)."""
        released: list[ReadState] = []
        needed = majority(len(voters))
        while self._pending:
            read = self._pending[0]
            if read.index == 0:
                break
            confirmed = sum(1 for v in voters if acked.get(v, 0) >= read.seq)
            if confirmed < needed:
                break
            self._pending.popleft()
            released.append(ReadState(read.context, read.index))
        return released

    def drain(self) -> list[int]:
        """Forget every pending read (leadership lost); return their contexts."""
        contexts = [read.context for read in self._pending]
        self._pending.clear()
        return contexts
