"""`RaftCore`: the host-facing API of the Raft core.

The core is a deterministic state machine without I/O. The host feeds it ticks, messages,
proposals and read requests, and drains its output as `Ready` batches, acting on each in the
order that graft/raft/ready.py documents, then calling `advance`. Between `ready()` and
`advance()` the host may keep stepping messages and ticking; it may not ask for a second
Ready. docs/raft-core.md describes the whole contract.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from graft.raft.election import Election
from graft.raft.log import RaftLog
from graft.raft.membership import ConfigHistory, promoted, with_learner, without
from graft.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from graft.raft.options import CoreConfig, Jitter
from graft.raft.progress import ProgressState
from graft.raft.ready import (
    MembershipChangePending,
    NotLeader,
    PeerProgress,
    ProposalDropped,
    Ready,
    Role,
    Status,
)
from graft.raft.types import (
    Entry,
    EntryKind,
    HardState,
    Member,
    Membership,
    SnapshotMeta,
)

__all__ = ["CoreConfig", "Jitter", "RaftCore"]

_COMMAND = EntryKind.COMMAND


def _restore_log(
    hard_state: HardState,
    snapshot: SnapshotMeta | None,
    entries: Sequence[Entry],
    applied: int,
) -> RaftLog:
    base, base_term = (snapshot.index, snapshot.term) if snapshot else (0, 0)
    # Storage may keep a few entries the snapshot covers (compaction with `keep`); the log
    # restarts exactly after the snapshot.
    after = [entry for entry in entries if entry.index > base] if base else list(entries)
    return RaftLog(base, base_term, after, hard_state.commit, applied)


class RaftCore(Election):
    __slots__ = ()

    def __init__(
        self,
        config: CoreConfig,
        *,
        hard_state: HardState,
        membership: Membership,
        snapshot: SnapshotMeta | None,
        entries: Sequence[Entry],
        jitter: Jitter,
        applied: int = 0,
        logger: logging.Logger | None = None,
    ) -> None:
        log = _restore_log(hard_state, snapshot, entries, applied)
        base_membership = membership
        if snapshot is not None and snapshot.membership.voters:
            base_membership = snapshot.membership
        configs = ConfigHistory(base_membership)
        for entry in log.entries:
            if entry.kind is EntryKind.CONFIG:
                configs.append(entry.index, Membership.decode(entry.data))
        super().__init__(
            config,
            jitter,
            logger or logging.getLogger("graft.raft"),
            log,
            configs,
            hard_state,
            snapshot,
        )

    # -- time and messages -------------------------------------------------------------------

    def tick(self) -> None:
        if self.role is Role.LEADER:
            self._tick_leader()
            return
        self.election_elapsed += 1
        if self._is_voter and self.election_elapsed >= self._timeout:
            self._campaign(self._cfg.pre_vote)

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.transfer_to is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self._cfg.election_ticks:
                self._logger.info(
                    "node %s aborts leadership transfer to %s at term %d",
                    self.id,
                    self.transfer_to,
                    self.term,
                )
                self.transfer_to = None

        if self.election_elapsed >= self._cfg.election_ticks:
            self.election_elapsed = 0
            if self._cfg.check_quorum and not self._quorum_active():
                self._logger.info(
                    "node %s steps down at term %d: no quorum heard from", self.id, self.term
                )
                self._become_follower(self.term, None)
                return

        if self.heartbeat_elapsed >= self._cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _quorum_active(self) -> bool:
        """§6.2 CheckQuorum: did a majority of voters answer within the last timeout?"""
        active = 0
        for voter in self._voters:
            progress = self.progress.get(voter)
            if voter == self.id or (progress is not None and progress.recent_active):
                active += 1
        for progress in self.progress.values():
            progress.recent_active = False
        return active >= len(self._voters) // 2 + 1

    def step(self, msg: Message) -> None:
        """Feed one message from a peer. Messages for another node are ignored."""
        if msg.dst != self.id:
            return
        if msg.term > self.term:
            if not self._on_higher_term(msg):
                return
        elif msg.term < self.term:
            self._on_stale_term(msg)
            return

        match msg:
            case AppendEntries():
                self._handle_append(msg)
            case AppendEntriesResponse():
                self._handle_append_response(msg)
            case RequestVote():
                self._handle_request_vote(msg)
            case RequestVoteResponse():
                self._handle_vote_response(msg)
            case InstallSnapshot():
                self._handle_install_snapshot(msg)
            case InstallSnapshotResponse():
                self._handle_snapshot_response(msg)
            case TimeoutNow():
                self._handle_timeout_now(msg)

    def _on_higher_term(self, msg: Message) -> bool:
        """§5.1: a higher term makes us a follower, except where PreVote and leases say not."""
        match msg:
            case RequestVote():
                if not msg.transfer and self._in_lease():
                    self._logger.debug(
                        "node %s ignores vote request from %s: leader %s is alive",
                        self.id,
                        msg.src,
                        self.leader,
                    )
                    return False
                if not msg.pre_vote:
                    self._become_follower(msg.term, None)
            case RequestVoteResponse() if msg.pre_vote and msg.granted:
                pass  # a granted pre-vote carries the term we would campaign in
            case AppendEntries() | InstallSnapshot() | TimeoutNow():
                self._become_follower(msg.term, msg.src)
            case _:
                self._become_follower(msg.term, None)
        return True

    def _on_stale_term(self, msg: Message) -> None:
        # A leader from an older term (cut off, then back) learns the current term from our
        # answer and steps down; without it, it would keep sending until it times out.
        match msg:
            case AppendEntries():
                self._msgs.append(AppendEntriesResponse(self.term, self.id, msg.src, False))
            case InstallSnapshot():
                self._msgs.append(InstallSnapshotResponse(self.term, self.id, msg.src, 0, False))
            case RequestVote(pre_vote=True):
                self._msgs.append(RequestVoteResponse(self.term, self.id, msg.src, False, True))
            case _:
                pass  # a stale answer, or a stale candidate: it learns the term by timing out

    # -- proposals and reads -----------------------------------------------------------------

    def _check_can_propose(self) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if self.transfer_to is not None:
            raise ProposalDropped(f"leadership transfer to {self.transfer_to} in progress")

    def propose(self, data: bytes) -> int:
        """Append a COMMAND entry; return its index. It is committed when Ready says so."""
        if self.role is not Role.LEADER or self.transfer_to is not None:
            self._check_can_propose()
        # The hot path of a busy leader: _append inlined.
        log = self.log
        index = log.base + len(log.entries) + 1
        log.entries.append(Entry(index, self.term, _COMMAND, data))
        self._dirty = True
        return index

    def read_index(self, context: int) -> None:
        """Ask for a linearizable read (§6.4); it comes back in Ready.reads with `context`."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        self.reads.add(context, self.log.commit if self._term_committed else 0)
        if self._voters == (self.id,):
            self._release_reads()
        else:
            # One heartbeat round confirms every read asked before the next Ready.
            self._read_round = True
            self._dirty = True

    # -- membership (thesis §4.1, one server at a time) -------------------------------------

    def add_learner(self, member: Member) -> int:
        self._check_can_change()
        return self._propose_config(with_learner(self.configs.current(), member))

    def promote(self, node_id: str) -> int:
        self._check_can_change()
        return self._propose_config(promoted(self.configs.current(), node_id))

    def remove(self, node_id: str) -> int:
        self._check_can_change()
        return self._propose_config(without(self.configs.current(), node_id))

    def _check_can_change(self) -> None:
        self._check_can_propose()
        pending = self.configs.last_change_index()
        if pending > self.log.commit:
            raise MembershipChangePending(
                f"the change at index {pending} is not committed yet (commit {self.log.commit})"
            )

    def _propose_config(self, membership: Membership) -> int:
        index = self._append(EntryKind.CONFIG, membership.encode())
        self.configs.append(index, membership)
        self._use_config()
        return index

    # -- leadership transfer (thesis §3.10) --------------------------------------------------

    def transfer_leadership(self, target: str) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if target == self.id or target == self.transfer_to:
            return
        if target not in self._voters:
            raise ValueError(f"{target!r} is not a voter")

        self.transfer_to = target
        self._transfer_elapsed = 0
        self._logger.info(
            "node %s starts leadership transfer to %s at term %d", self.id, target, self.term
        )
        progress = self.progress[target]
        if progress.match == self.log.last_index():
            self._send_timeout_now(target)
        else:
            if progress.state is ProgressState.PROBE:
                progress.paused = False
            self._dirty = True

    # -- snapshots ---------------------------------------------------------------------------

    def snapshot_meta(self, index: int) -> SnapshotMeta:
        """The SnapshotMeta for a snapshot of the applied state at `index` (host helper)."""
        if not self.log.base <= index <= self.log.applied:
            raise ValueError(
                f"index {index} outside {self.log.base}..{self.log.applied} (base..applied)"
            )
        term = self.log.term_at(index)
        assert term is not None
        return SnapshotMeta(index, term, self.configs.at(index))

    def compact(self, snapshot: SnapshotMeta, keep: int = 0) -> None:
        """The host stored `snapshot`: drop entries up to `snapshot.index - keep` (§7)."""
        if snapshot.index > self.log.applied:
            raise ValueError(f"snapshot {snapshot.index} is beyond applied {self.log.applied}")
        if self.snapshot is not None and snapshot.index <= self.snapshot.index:
            return
        if keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep}")
        expected = self.snapshot_meta(snapshot.index) if snapshot.index >= self.log.base else None
        if expected is not None and expected != snapshot:
            raise ValueError(f"snapshot {snapshot} does not match the log: expected {expected}")

        self.snapshot = snapshot
        upto = snapshot.index - keep
        if upto > self.log.base:
            self.configs.compact_to(upto)
            self.log.compact(upto)

    def report_snapshot(self, peer: str, success: bool) -> None:
        """The host finished (or gave up) streaming the snapshot to `peer`."""
        progress = self.progress.get(peer) if self.role is Role.LEADER else None
        if progress is None or progress.state is not ProgressState.SNAPSHOT:
            return
        if not success:
            progress.pending_snapshot = 0
        progress.become_probe()
        # Wait for the follower's answer or the next heartbeat before probing again.
        progress.paused = True

    def report_unreachable(self, peer: str) -> None:
        """The transport lost a message to `peer`: stop pipelining to it until it answers."""
        progress = self.progress.get(peer) if self.role is Role.LEADER else None
        if progress is not None and progress.state is ProgressState.REPLICATE:
            progress.become_probe()

    # -- output ------------------------------------------------------------------------------

    def _hard_state_changed(self) -> bool:
        saved = self._saved
        return saved.term != self.term or saved.vote != self.vote or saved.commit != self.log.commit

    def _term_is_durable(self) -> bool:
        """Whether the host has persisted this term and vote (an advanced Ready carried them).

        A node that wins an election in the step that started it (a single voter) leads in a
        term it has not saved yet. Its messages must wait like a candidate's: if it crashed
        before the save, it would come back in the old term, could lead the same term again
        with other entries, and a learner holding the first ones would diverge (§5.1: the
        term and vote are persisted before anything depends on them).
        """
        saved = self._saved
        return saved.term == self.term and saved.vote == self.vote

    def has_ready(self) -> bool:
        if self._dirty and self.role is Role.LEADER:
            self._flush()
        log = self.log
        return bool(
            self._msgs
            or log.stable < log.last_index()
            or log.commit > log.applied
            or self._installed is not None
            or self._read_states
            or self._dropped_reads
            or self._hard_state_changed()
        )

    def ready(self) -> Ready:
        """Everything the host must do now, in the order graft/raft/ready.py states."""
        if self._outstanding:
            raise RuntimeError("advance() the previous Ready before asking for another")
        if self._dirty and self.role is Role.LEADER:
            self._flush()

        hard_state = None
        if self._hard_state_changed():
            hard_state = HardState(self.term, self.vote, self.log.commit)
        ready = Ready(
            send_first=self.role is Role.LEADER and self._term_is_durable(),
            role=self.role,
            term=self.term,
            leader=self.leader,
            hard_state=hard_state,
            entries=self.log.unstable(),
            snapshot=self._installed,
            messages=tuple(self._msgs),
            committed=self.log.to_apply(),
            reads=tuple(self._read_states),
            dropped_reads=tuple(self._dropped_reads),
        )
        self._msgs.clear()
        self._read_states.clear()
        self._dropped_reads.clear()
        self._installed = None
        self._outstanding = True
        return ready

    def leader_messages(self, term: int) -> tuple[Message, ...]:
        """What a leader may send while the host still persists the Ready of `term`.

        A leader's messages promise nothing about its own disk (thesis §10.2.1): it counts
        itself towards a commit only after advance(). So its heartbeats need not wait for a
        slow fsync, and a follower does not start an election because one disk stalled. Once
        this node has left leadership, or the term has moved on, this returns nothing: its
        newer messages (a vote, an acknowledgement) may depend on state not yet persisted,
        and must wait for the next Ready.
        """
        if self.role is not Role.LEADER or self.term != term or not self._term_is_durable():
            return ()
        if self._dirty:
            self._flush()
        messages = tuple(self._msgs)
        self._msgs.clear()
        return messages

    def advance(self, ready: Ready) -> None:
        """The host did everything `ready` asked."""
        self._outstanding = False
        if ready.hard_state is not None:
            self._saved = ready.hard_state
        if ready.entries:
            last = ready.entries[-1]
            self.log.stable_to(last.index, last.term)
            if self.role is Role.LEADER and self._maybe_commit():
                self._on_commit()
        if ready.committed:
            self.log.applied_to(ready.committed[-1].index)

    # -- inspection --------------------------------------------------------------------------

    @property
    def last_index(self) -> int:
        """The index of the newest entry in the log, committed or not."""
        return self.log.last_index()

    @property
    def membership(self) -> Membership:
        """The configuration in force (the newest in the log, committed or not)."""
        return self.configs.current()

    def status(self) -> Status:
        progress = {
            peer: PeerProgress(p.match, p.next, p.state.value, p.recent_active)
            for peer, p in self.progress.items()
        }
        return Status(
            id=self.id,
            role=self.role,
            term=self.term,
            leader=self.leader,
            commit_index=self.log.commit,
            applied=self.log.applied,
            last_index=self.log.last_index(),
            first_index=self.log.first_index(),
            membership=self.configs.current(),
            membership_index=self.configs.last_change_index(),
            progress=progress,
            transferring_to=self.transfer_to,
        )
