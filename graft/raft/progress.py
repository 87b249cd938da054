"""What a leader knows about each follower's log, and how it paces replication to it.

A follower's progress is in one of three states:

- PROBE: the leader does not know where the follower's log matches its own. It sends one
  AppendEntries at a time and waits for the answer (or the next heartbeat) before the next,
  walking `next_index` back with the follower's conflict hints (§5.3).
- REPLICATE: the logs matched at `match_index`; the leader streams entries optimistically,
  advancing `next_index` as it sends, with at most `max_inflight` messages unanswered.
- SNAPSHOT: the entries the follower needs were compacted away; the host is streaming it
  the snapshot, and nothing else is sent until that finishes (§7).

invariant: match_index < next_index.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Progress:
    __slots__ = (
        "match",
        "next",
        "state",
        "paused",
        "inflight",
        "pending_snapshot",
        "recent_active",
        "commit_sent",
        "read_acked",
    )

    def __init__(self, next_index: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.paused = False  # PROBE only: a probe is unanswered
        self.inflight: deque[int] = deque()  # REPLICATE: last index of each unanswered message
        self.pending_snapshot = 0  # SNAPSHOT: the index of the snapshot being streamed
        self.recent_active = True  # heard from within the last election timeout (§6.2)
        self.commit_sent = 0  # the commit index the last message to it carried
        self.read_acked = 0  # highest ReadIndex round this follower confirmed (§6.4)

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.paused = False
        self.pending_snapshot = 0
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.paused = False
        self.inflight.clear()

    def become_snapshot(self, index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.paused = False
        self.inflight.clear()

    def is_paused(self, max_inflight: int) -> bool:
        if self.state is ProgressState.REPLICATE:
            return len(self.inflight) >= max_inflight
        if self.state is ProgressState.PROBE:
            return self.paused
        return True

    def sent_entries(self, last: int) -> None:
        """An AppendEntries carrying entries up to `last` left for this follower."""
        if self.state is ProgressState.REPLICATE:
            self.next = last + 1
            self.inflight.append(last)
        else:
            self.paused = True

    def free_one(self) -> None:
        if self.inflight:
            self.inflight.popleft()

    def update_match(self, index: int) -> bool:
        """The follower's log matches up to `index`; False if that is old news."""
        inflight = self.inflight
        while inflight and inflight[0] <= index:
            inflight.popleft()
        if index <= self.match:
            return False
        self.match = index
        self.paused = False
        if self.next <= index:
            self.next = index + 1
        return True

    def reject(self, rejected: int, hint: int) -> bool:
        """The follower refused an AppendEntries whose previous entry was `rejected`.

        Returns False for a stale refusal (an answer to an older message). Otherwise moves
        `next_index` back to `hint` (never below match + 1) and falls back to probing.
        """
        if rejected <= self.match:
            return False
        if self.state is ProgressState.PROBE and rejected != self.next - 1:
            return False
        if self.state is ProgressState.SNAPSHOT:
            return False

        self.state = ProgressState.PROBE
        self.inflight.clear()
        self.paused = False
        self.next = max(self.match + 1, min(hint, rejected))
        return True
