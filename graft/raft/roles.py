"""The state of one Raft server and the only places where its role changes.

Theory of operation. `RoleState` holds every field of the core. Its `_become_*` methods are
the one owner of role changes: each resets the per-term state, picks a fresh randomised
election timeout (§5.2) and logs the change once at INFO with the term. The layers built on
it add behaviour, never fields:

    RoleState (fields, role changes, configuration in force)
      <- Replication (graft/raft/replication.py: AppendEntries, snapshots, commit, reads)
        <- Election (graft/raft/election.py: PreVote, RequestVote, TimeoutNow)
          <- RaftCore (graft/raft/core.py: the host-facing API, tick, step, Ready)

Roles: FOLLOWER and LEARNER behave alike (a LEARNER is a follower the configuration lists as
a learner: it replicates but never campaigns, §4.2.1); PRECANDIDATE asks for pre-votes
without changing its term (thesis §9.6); CANDIDATE campaigns in a new term; LEADER replicates.
A server that is not a voter of the configuration in force never campaigns (§4.2.2).
"""

from __future__ import annotations

import logging

from graft.raft.log import RaftLog
from graft.raft.membership import ConfigHistory
from graft.raft.messages import Message
from graft.raft.options import CoreConfig, Jitter
from graft.raft.progress import Progress
from graft.raft.quorum import VoteTally
from graft.raft.readonly import ReadQueue
from graft.raft.ready import ReadState, Role
from graft.raft.types import Entry, EntryKind, HardState, Membership, SnapshotMeta

FOLLOWER_ROLES = (Role.FOLLOWER, Role.LEARNER)


class RoleState:
    __slots__ = (
        "id",
        "_cfg",
        "_jitter",
        "_logger",
        "log",
        "configs",
        "term",
        "vote",
        "leader",
        "role",
        "_voters",
        "_learners",
        "_is_voter",
        "election_elapsed",
        "heartbeat_elapsed",
        "_timeout",
        "_tally",
        "progress",
        "reads",
        "transfer_to",
        "_transfer_elapsed",
        "_msgs",
        "snapshot",
        "_installed",
        "_saved",
        "_outstanding",
        "_read_states",
        "_dropped_reads",
        "_dirty",
        "_read_round",
        "_term_committed",
    )

    def __init__(
        self,
        config: CoreConfig,
        jitter: Jitter,
        logger: logging.Logger,
        log: RaftLog,
        configs: ConfigHistory,
        hard_state: HardState,
        snapshot: SnapshotMeta | None,
    ) -> None:
        self.id = config.id
        self._cfg = config
        self._jitter = jitter
        self._logger = logger
        self.log = log
        self.configs = configs

        self.term = hard_state.term
        self.vote = hard_state.vote
        self.leader: str | None = None
        self.role = Role.FOLLOWER
        self._voters: tuple[str, ...] = ()
        self._learners: tuple[str, ...] = ()
        self._is_voter = False

        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._timeout = self._random_timeout()
        self._tally: VoteTally | None = None

        # leader only
        self.progress: dict[str, Progress] = {}
        self.reads = ReadQueue()
        self.transfer_to: str | None = None
        self._transfer_elapsed = 0
        self._dirty = False  # new entries or a new commit index not yet offered to followers
        self._read_round = False  # a ReadIndex round must leave with the next flush
        self._term_committed = False  # an entry of this leader's term is committed (§6.4)

        # the newest snapshot the host stored or installed; sent to followers that need it
        self.snapshot = snapshot

        # output not yet handed to the host
        self._msgs: list[Message] = []
        self._installed: SnapshotMeta | None = None
        self._saved = HardState(hard_state.term, hard_state.vote, log.commit)
        self._outstanding = False
        self._read_states: list[ReadState] = []
        self._dropped_reads: list[int] = []

        self._use_config(initial=True)

    def _random_timeout(self) -> int:
        election = self._cfg.election_ticks
        return self._jitter.randrange(election, 2 * election)

    # -- role changes ------------------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.leader = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._timeout = self._random_timeout()
        self._tally = None
        self.transfer_to = None
        if self.progress:
            self.progress = {}
        if len(self.reads):
            self._dropped_reads.extend(self.reads.drain())
        self._dirty = False
        self._read_round = False
        self._term_committed = False

    def _become_follower(self, term: int, leader: str | None) -> None:
        before = (self.role, self.term, self.leader)
        self._reset(term)
        self.leader = leader
        self.role = Role.LEARNER if self.id in self._learners else Role.FOLLOWER
        if before != (self.role, self.term, self.leader):
            self._logger.info(
                "node %s became %s at term %d (leader %s)",
                self.id,
                self.role.value,
                self.term,
                leader,
            )

    def _become_precandidate(self) -> None:
        self._reset(self.term)
        self.role = Role.PRECANDIDATE
        self._tally = VoteTally(self._voters)
        self._logger.info("node %s became precandidate at term %d", self.id, self.term)

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.role = Role.CANDIDATE
        self.vote = self.id
        self._tally = VoteTally(self._voters)
        self._logger.info("node %s became candidate at term %d", self.id, self.term)

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        next_index = self.log.last_index() + 1
        members = (*self._voters, *self._learners)
        self.progress = {peer: Progress(next_index) for peer in members if peer != self.id}
        # §5.4.2 and §8: an empty entry of the new term lets the leader commit everything
        # before it, and tells it its commit index (needed by ReadIndex, §6.4).
        self._append(EntryKind.NOOP, b"")
        self._logger.info("node %s became leader at term %d", self.id, self.term)

    def _append(self, kind: EntryKind, data: bytes) -> int:
        index = self.log.last_index() + 1
        self.log.append(Entry(index, self.term, kind, data))
        self._dirty = True
        return index

    # -- configuration in force --------------------------------------------------------------

    def _use_config(self, initial: bool = False) -> None:
        """Adopt the newest configuration in the log (§4.1: in force once appended)."""
        membership = self.configs.current()
        self._voters = tuple(m.id for m in membership.voters)
        self._learners = tuple(m.id for m in membership.learners)
        self._is_voter = self.id in self._voters
        if not initial:
            self._logger.info(
                "node %s uses membership voters=%s learners=%s at term %d",
                self.id,
                ",".join(self._voters),
                ",".join(self._learners),
                self.term,
            )

        if self.role is Role.LEADER:
            self._track_members(membership)
        elif self.role in FOLLOWER_ROLES:
            self.role = Role.LEARNER if self.id in self._learners else Role.FOLLOWER
        elif not self._is_voter:
            self._become_follower(self.term, None)

    def _prune_members(self) -> None:
        lingering = len(self.progress) + self._is_member() > len(self._voters) + len(self._learners)
        if not lingering or self.configs.last_change_index() > self.log.commit:
            return
        members = self.configs.current().ids()
        for peer in [p for p in self.progress if p not in members]:
            del self.progress[peer]

    def _is_member(self) -> bool:
        return self._is_voter or self.id in self._learners

    def _track_members(self, membership: Membership) -> None:
        next_index = self.log.last_index() + 1
        members = membership.ids()
        for peer in members:
            if peer != self.id and peer not in self.progress:
                self.progress[peer] = Progress(next_index)
        # Servers being removed keep their progress until the change commits, so that they
        # most likely receive the entry that removes them and stop campaigning (§4.2.3).
        self._prune_members()
        if self.transfer_to is not None and self.transfer_to not in self._voters:
            self.transfer_to = None
        self._dirty = True
