"""What the core hands its host, and the order in which the host must act on it.

The host loop is always the same:

    while core.has_ready():
        ready = core.ready()
        1. if ready.snapshot: restore the state machine from that stored snapshot, and make
           storage forget every entry up to ready.snapshot.index; if storage does not hold
           the entry at that index with that term, it forgets every entry after it as well
           (§7: the log restarts after the snapshot unless it already held its last entry);
        2. persist ready.hard_state (if any) and ready.entries (appending; entries[0].index
           at or below the stored last index truncates the stored suffix first), with one
           fsync for both;
        3. only then send ready.messages (a vote or an append acknowledgement must never leave
           before the state it promises is durable, §5.1 and Figure 2);
        4. apply ready.committed in order (they are already durable on a majority);
        5. serve each of ready.reads once the state machine has applied its index;
        6. core.advance(ready).

A leader may send its messages before its own entries are durable (thesis §10.2.1), because
it counts itself towards a commit only once the host reports them persisted through
`advance`. The host may therefore perform step 3 before step 2 when `ready.send_first` is
set: the role is leader and the term and vote it leads in were persisted by an earlier
Ready. (A single voter becomes leader in the same step that started its election; that
first Ready carries the new term and vote, and its messages wait like a candidate's.) While
a leader's Ready is being persisted, the host may also send what
`RaftCore.leader_messages(term)` returns (heartbeats and appends), for the same reason; it
returns nothing while the term itself is not yet durable.

Between `ready()` and `advance()` the host may go on stepping messages, ticking and calling
the other methods (the core hands out nothing twice), but it must not ask for another Ready:
`ready()` raises RuntimeError until the previous one is advanced.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from graft.raft.messages import Message
from graft.raft.types import Entry, HardState, Membership, SnapshotMeta


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRECANDIDATE = "precandidate"
    CANDIDATE = "candidate"
    LEADER = "leader"
    LEARNER = "learner"


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read became safe: serve it once `applied >= index` (§6.4)."""

    context: int
    index: int


@dataclass(frozen=True, slots=True)
class Ready:
    role: Role
    term: int
    leader: str | None
    # The host may send `messages` before it persists (thesis §10.2.1): true only for a
    # leader whose term and vote are already durable.
    send_first: bool = False
    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: SnapshotMeta | None = None
    messages: tuple[Message, ...] = ()
    committed: tuple[Entry, ...] = ()
    reads: tuple[ReadState, ...] = ()
    # reads that can never be served by this node any more (it lost leadership first)
    dropped_reads: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class PeerProgress:
    match_index: int
    next_index: int
    state: str  # "probe", "replicate" or "snapshot"
    recent_active: bool


@dataclass(frozen=True, slots=True)
class Status:
    id: str
    role: Role
    term: int
    leader: str | None
    commit_index: int
    applied: int
    last_index: int
    first_index: int
    membership: Membership
    # the log index of the entry that set `membership` (0: the bootstrap configuration);
    # the change is in force everywhere once commit_index reaches it
    membership_index: int = 0
    progress: dict[str, PeerProgress] = field(default_factory=dict)
    transferring_to: str | None = None


class RaftError(Exception):
    """Base of the expected outcomes the core reports to its host."""


class NotLeader(RaftError):
    """The request needs the leader; `leader` is the best known leader id, or None."""

    def __init__(self, leader: str | None) -> None:
        super().__init__(f"not the leader (leader: {leader})")
        self.leader = leader


class ProposalDropped(RaftError):
    """The leader refuses new proposals for now (a leadership transfer is in progress)."""


class MembershipChangePending(RaftError):
    """A previous membership change has not committed yet; one change at a time (§4.1)."""


class InvariantViolation(Exception):
    """A rule of Raft was broken. The node must stop rather than carry on."""
