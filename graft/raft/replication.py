"""Log replication (§5.3), commitment (§5.4.2), snapshots (§7) and ReadIndex rounds (§6.4).

Leader side. New entries are not sent when proposed: `_dirty` is set and `_flush` sends them
when the host next asks for a Ready, so that many proposals between two Readies travel in
one AppendEntries per follower. Each follower is paced by its `Progress` (probe, pipelined
replicate, or snapshot; see graft/raft/progress.py). The leader counts its own log towards a
commit only up to the index the host reported durable (`log.stable`), which is what lets the
host send before it persists (thesis §10.2.1).

Heartbeats are AppendEntries without entries whose previous entry is the follower's
`next_index - 1`: a follower that lost a pipelined message refuses it, which drops the
progress back to probing instead of leaving a gap until the next proposal.

Follower side. The consistency check of §5.3, with two refinements: entries at or below the
follower's commit index are accepted without a check (they are committed, so any current
leader holds the same ones, §5.4), and a refusal carries the conflicting term and its first
index so the leader skips a whole term per round trip. On a refusal `match_index` carries the
`prev_log_index` that was refused, so the leader can tell a stale refusal from a fresh one.
"""

from __future__ import annotations

import logging

from graft.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    TimeoutNow,
)
from graft.raft.progress import Progress, ProgressState
from graft.raft.quorum import quorum_index
from graft.raft.ready import InvariantViolation, Role
from graft.raft.roles import FOLLOWER_ROLES, RoleState
from graft.raft.types import Entry, EntryKind, Membership

_DEBUG = logging.DEBUG
_CONFIG = EntryKind.CONFIG


class Replication(RoleState):
    __slots__ = ()

    # -- leader: sending ---------------------------------------------------------------------

    def _flush(self) -> None:
        """Offer new entries and the new commit index to every follower that can take them."""
        self._dirty = False
        for peer, progress in self.progress.items():
            self._send_available(peer, progress)
        if self._read_round:
            self._read_round = False
            self._start_read_round()

    def _send_available(self, peer: str, progress: Progress) -> None:
        max_inflight = self._cfg.max_inflight
        last = self.log.last_index()
        while not progress.is_paused(max_inflight):
            fresh = progress.next <= last
            if not fresh and progress.commit_sent >= self.log.commit:
                return
            if not self._send_append(peer, progress, allow_empty=True) or not fresh:
                return

    def _send_append(
        self, peer: str, progress: Progress, read_context: int = 0, allow_empty: bool = False
    ) -> bool:
        log = self.log
        prev = progress.next - 1
        prev_term = log.term_at(prev)
        if prev_term is None:
            return self._send_snapshot(peer, progress)

        if progress.next <= log.last_index():
            entries = log.batch_from(progress.next, self._cfg.max_entries_bytes)
        elif allow_empty:
            entries = ()
        else:
            return False
        commit = log.commit
        self._msgs.append(
            AppendEntries(self.term, self.id, peer, prev, prev_term, entries, commit, read_context)
        )
        progress.commit_sent = commit
        if entries:
            progress.sent_entries(entries[-1].index)
        elif progress.state is ProgressState.PROBE:
            progress.paused = True
        return True

    def _send_snapshot(self, peer: str, progress: Progress) -> bool:
        snapshot = self.snapshot
        if snapshot is None or snapshot.index < self.log.base:
            raise InvariantViolation(
                f"{peer} needs index {progress.next} but the log starts at "
                f"{self.log.first_index()} and no snapshot covers it"
            )
        progress.become_snapshot(snapshot.index)
        self._msgs.append(InstallSnapshot(self.term, self.id, peer, snapshot))
        self._logger.info(
            "node %s sends snapshot at index %d to %s at term %d",
            self.id,
            snapshot.index,
            peer,
            self.term,
        )
        return True

    def _send_heartbeat(self, peer: str, progress: Progress, read_context: int) -> None:
        prev = progress.next - 1
        prev_term = self.log.term_at(prev)
        if prev_term is None or progress.state is ProgressState.SNAPSHOT:
            prev, prev_term = 0, 0
        self._msgs.append(
            AppendEntries(
                self.term, self.id, peer, prev, prev_term, (), self.log.commit, read_context
            )
        )
        progress.commit_sent = self.log.commit

    def _broadcast_heartbeat(self) -> None:
        read_context = self.reads.last_seq() if len(self.reads) else 0
        for peer, progress in self.progress.items():
            if progress.state is ProgressState.PROBE:
                # A lost probe is retried once per heartbeat; the probe is the heartbeat.
                progress.paused = False
                self._send_append(peer, progress, read_context, allow_empty=True)
            else:
                self._send_heartbeat(peer, progress, read_context)

    def _start_read_round(self) -> None:
        read_context = self.reads.last_seq()
        for peer in self._voters:
            progress = self.progress.get(peer)
            if progress is not None:
                self._send_heartbeat(peer, progress, read_context)

    # -- leader: answers ---------------------------------------------------------------------

    def _handle_append_response(self, msg: AppendEntriesResponse) -> None:
        progress = self.progress.get(msg.src) if self.role is Role.LEADER else None
        if progress is None:
            return
        progress.recent_active = True
        if msg.read_context > progress.read_acked:
            progress.read_acked = msg.read_context
            self._release_reads()

        if msg.success:
            self._on_match(msg.src, progress, msg.match_index)
        elif progress.reject(msg.match_index, self._next_from_hint(msg)):
            if self._logger.isEnabledFor(_DEBUG):
                self._logger.debug(
                    "node %s: %s refused index %d, probing from %d",
                    self.id,
                    msg.src,
                    msg.match_index,
                    progress.next,
                )
            self._send_append(msg.src, progress, allow_empty=True)

    def _next_from_hint(self, msg: AppendEntriesResponse) -> int:
        """Where to probe next after a refusal (the optimisation at the end of §5.3)."""
        if msg.conflict_term:
            last_of_term = self.log.last_index_of_term(msg.conflict_term)
            if last_of_term is not None:
                return last_of_term + 1
        return max(msg.conflict_index, 1)

    def _on_match(self, peer: str, progress: Progress, match_index: int) -> None:
        advanced = progress.update_match(match_index)
        caught_up = (
            progress.state is ProgressState.PROBE and progress.match >= progress.next - 1
        ) or (
            progress.state is ProgressState.SNAPSHOT
            and progress.match >= max(progress.pending_snapshot, 1)
        )
        if caught_up:
            progress.become_replicate()
        elif not advanced and progress.is_paused(self._cfg.max_inflight):
            # An answer that brings no news (a heartbeat's) while the window is full: a
            # message of the window may be lost, so let one more leave; if the follower
            # has a gap it refuses that one and replication falls back to probing.
            progress.free_one()

        if advanced and self._maybe_commit():
            self._on_commit()
        if peer == self.transfer_to and progress.match == self.log.last_index():
            self._send_timeout_now(peer)
        if self.role is Role.LEADER:
            self._send_available(peer, progress)

    def _handle_snapshot_response(self, msg: InstallSnapshotResponse) -> None:
        progress = self.progress.get(msg.src) if self.role is Role.LEADER else None
        if progress is None:
            return
        progress.recent_active = True
        if msg.success:
            self._on_match(msg.src, progress, msg.match_index)
        elif progress.state is ProgressState.SNAPSHOT:
            progress.pending_snapshot = 0
            progress.become_probe()

    def _send_timeout_now(self, peer: str) -> None:
        self._msgs.append(TimeoutNow(self.term, self.id, peer))
        self._logger.info("node %s hands leadership to %s at term %d", self.id, peer, self.term)

    # -- leader: commit and reads ------------------------------------------------------------

    def _maybe_commit(self) -> bool:
        log = self.log
        progress = self.progress
        matches = [
            log.stable if voter == self.id else progress[voter].match for voter in self._voters
        ]
        index = quorum_index(matches)
        if index > log.commit and self._may_commit(index):
            log.commit_to(index)
            return True
        return False

    def _may_commit(self, index: int) -> bool:
        # §5.4.2: only entries of the current term are committed by counting replicas; the
        # entries before them commit with them (Figure 8 shows why).
        return self.log.term_at(index) == self.term

    def _on_commit(self) -> None:
        self._dirty = True
        if not self._term_committed:
            self._term_committed = True
            self.reads.on_term_commit(self.log.commit)
        self._release_reads()
        self._prune_members()
        # §4.2.2: a leader that removed itself steps down once that change is committed.
        if not self._is_voter and self.configs.last_change_index() <= self.log.commit:
            self._logger.info(
                "node %s steps down at term %d: it is no longer a voter", self.id, self.term
            )
            self._become_follower(self.term, None)

    def _release_reads(self) -> None:
        if not len(self.reads) or not self._term_committed:
            return
        acked = {peer: progress.read_acked for peer, progress in self.progress.items()}
        acked[self.id] = self.reads.last_seq()
        self._read_states.extend(self.reads.release(acked, self._voters))

    # -- follower ----------------------------------------------------------------------------

    def _follow(self, leader: str) -> None:
        if self.role is Role.LEADER:
            raise InvariantViolation(
                f"node {self.id} is leader at term {self.term} and heard from leader {leader}"
            )
        if self.role not in FOLLOWER_ROLES or self.leader != leader:
            self._become_follower(self.term, leader)
        self.election_elapsed = 0

    def _handle_append(self, msg: AppendEntries) -> None:
        self._follow(msg.src)
        log = self.log
        prev = msg.prev_log_index
        entries = msg.entries
        commit = log.commit

        if prev < commit:
            # Entries up to our commit index are committed, hence in every current leader's
            # log (Leader Completeness, §5.4): skip them rather than check them.
            skip = commit - prev
            entries = entries[skip:] if skip < len(entries) else ()
            prev = commit
        elif log.term_at(prev) != msg.prev_log_term:
            self._refuse_append(msg)
            return

        if entries:
            self._merge(entries)
        last_new = prev + len(entries)
        if msg.commit > log.commit:
            log.commit_to(min(msg.commit, last_new))
        self._msgs.append(
            AppendEntriesResponse(
                self.term, self.id, msg.src, True, last_new, read_context=msg.read_context
            )
        )

    def _refuse_append(self, msg: AppendEntries) -> None:
        conflict_index, conflict_term = self.log.conflict_hint(msg.prev_log_index)
        if self._logger.isEnabledFor(_DEBUG):
            self._logger.debug(
                "node %s refuses entries after %d/%d from %s (hint %d/%d)",
                self.id,
                msg.prev_log_index,
                msg.prev_log_term,
                msg.src,
                conflict_index,
                conflict_term,
            )
        self._msgs.append(
            AppendEntriesResponse(
                self.term,
                self.id,
                msg.src,
                False,
                msg.prev_log_index,
                conflict_index,
                conflict_term,
                msg.read_context,
            )
        )

    def _merge(self, entries: tuple[Entry, ...]) -> None:
        log = self.log
        old_last = log.last_index()
        cut = log.merge(entries)
        changed = False
        if cut is not None:
            changed = self.configs.truncate_from(cut)
            self._logger.info(
                "node %s dropped conflicting entries from index %d at term %d",
                self.id,
                cut,
                self.term,
            )
        added_from = old_last + 1 if cut is None else cut
        added = log.entries[max(added_from - log.base - 1, 0) :]
        for entry in [e for e in added if e.kind is _CONFIG]:
            self.configs.append(entry.index, Membership.decode(entry.data))
            changed = True
        if changed:
            self._use_config()

    def _handle_install_snapshot(self, msg: InstallSnapshot) -> None:
        self._follow(msg.src)
        meta = msg.meta
        if meta.index > self.log.commit:
            # §7: the snapshot is newer than anything we know committed. Entries after it
            # survive only if the log holds the snapshot's last entry itself.
            kept = self.log.restore(meta.index, meta.term)
            self.configs.restore(meta.index, meta.membership, kept)
            self.snapshot = meta
            self._installed = meta
            self._use_config()
            self._logger.info(
                "node %s installed snapshot at index %d term %d from %s at term %d",
                self.id,
                meta.index,
                meta.term,
                msg.src,
                self.term,
            )
        self._msgs.append(
            InstallSnapshotResponse(self.term, self.id, msg.src, self.log.commit, True)
        )
