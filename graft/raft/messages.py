"""The messages Raft peers exchange, one frozen dataclass per RPC.

Every message carries the sender's `term`, its `src` and its `dst`, so that the term rules of
§5.1 can be applied before the message is looked at further. The transport encodes these
classes field by field; adding a field here means teaching the codec about it.
"""

from __future__ import annotations

from dataclasses import dataclass

from graft.raft.types import Entry, SnapshotMeta


@dataclass(frozen=True, slots=True)
class RequestVote:
    """§5.2 RequestVote, or a PreVote probe (thesis §9.6) when `pre_vote` is set.

    A pre-vote carries the term the sender would campaign in, without having adopted it.
    `transfer` marks a campaign started by TimeoutNow, which may ignore leader stickiness.
    """

    term: int
    src: str
    dst: str
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class RequestVoteResponse:
    term: int
    src: str
    dst: str
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """§5.3 AppendEntries; with no entries it is a heartbeat that also carries `commit`.

    `read_context` is non-zero when the leader uses this round to confirm its leadership for
    pending ReadIndex requests (§6.4); the follower echoes it back.
    """

    term: int
    src: str
    dst: str
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    commit: int
    read_context: int = 0


@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    """The reply to AppendEntries.

    On success `match_index` is the highest index known to match the leader's log. On a
    rejection `conflict_index` and `conflict_term` let the leader skip back a whole term at a
    time instead of one entry per round trip (§5.3, the optimisation at its end), and
    `match_index` carries the refused `prev_log_index`, so that the leader can tell the
    answer to its latest probe from a stale one.
    """

    term: int
    src: str
    dst: str
    success: bool
    match_index: int = 0
    conflict_index: int = 0
    conflict_term: int = 0
    read_context: int = 0


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """§7 InstallSnapshot, as the core sees it.

    The core never holds snapshot bytes. On the leader, this message is a request to the host:
    stream the stored snapshot `meta` to `dst` in chunks. On the follower, the host steps it
    into the core only after every chunk has arrived and the checksum matched.
    """

    term: int
    src: str
    dst: str
    meta: SnapshotMeta


@dataclass(frozen=True, slots=True)
class InstallSnapshotResponse:
    term: int
    src: str
    dst: str
    match_index: int
    success: bool = True


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer (thesis §3.10): tells `dst` to start an election at once."""

    term: int
    src: str
    dst: str


Message = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | InstallSnapshot
    | InstallSnapshotResponse
    | TimeoutNow
)
