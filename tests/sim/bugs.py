"""Known Raft bugs, planted in test-only subclasses of the core, for the simulator to catch.

Each class overrides one small method of `RaftCore` (the hooks are ordinary private
methods, documented in docs/raft-core.md); the host-side bugs (forgetting to persist the
vote, applying before commit) are fault switches of the simulated host instead
(tests/sim/host.py, `HostFaults`).
"""

from __future__ import annotations

import dataclasses

from graft.raft.core import RaftCore
from graft.raft.messages import AppendEntries
from graft.raft.quorum import quorum_index
from graft.raft.ready import ReadState, Role


class CommitsPreviousTermByCounting(RaftCore):
    """Figure 8: commits any entry stored on a majority, whatever its term (breaks §5.4.2)."""

    __slots__ = ()

    def _may_commit(self, index: int) -> bool:
        return True


class VotesForShorterLogs(RaftCore):
    """Grants votes without the up-to-date check of §5.4.1."""

    __slots__ = ()

    def _log_up_to_date(self, last_index: int, last_term: int) -> bool:
        return True


class SkipsConsistencyCheck(RaftCore):
    """A follower that trusts prev_log_term instead of comparing it (breaks §5.3)."""

    __slots__ = ()

    def _handle_append(self, msg: AppendEntries) -> None:
        own = self.log.term_at(msg.prev_log_index)
        if own is not None:
            msg = dataclasses.replace(msg, prev_log_term=own)
        super()._handle_append(msg)


class LeaderDropsUncommittedTail(RaftCore):
    """A leader that deletes its newest uncommitted entry on a tick (breaks Append-Only)."""

    __slots__ = ()

    def tick(self) -> None:
        log = self.log
        if self.role is Role.LEADER and log.last_index() > log.commit:
            log.entries.pop()
            log.stable = min(log.stable, log.last_index())
        super().tick()


class ReadsWithoutConfirmation(RaftCore):
    """Serves ReadIndex at once from its own commit index, skipping §6.4's two checks."""

    __slots__ = ()

    def read_index(self, context: int) -> None:
        if self.role is not Role.LEADER:
            super().read_index(context)
            return
        self._read_states.append(ReadState(context, self.log.commit))


class CountsItselfBeforePersisting(RaftCore):
    """A leader that counts its own entries towards a commit before the host has persisted
    them (thesis §10.2.1 allows sending first, not counting first). Visible only while a
    leader's Ready is still being persisted: the simulator's slow disk."""

    __slots__ = ()

    def _maybe_commit(self) -> bool:
        log = self.log
        matches = [
            log.last_index() if voter == self.id else self.progress[voter].match
            for voter in self._voters
        ]
        index = quorum_index(matches)
        if index > log.commit and self._may_commit(index):
            log.commit_to(index)
            return True
        return False
