"""The records the Raft core shares with its host: entries, hard state, membership, snapshots.

These are plain frozen dataclasses so that storage can write them, the transport can encode
them and tests can compare them, without any of those layers knowing how the core works.
Nothing here performs I/O.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field


class EntryKind(enum.IntEnum):
    """What a log entry carries. Only COMMAND entries reach the user's state machine."""

    NOOP = 0  # the empty entry a new leader appends (§5.4.2, §8 of the Raft paper)
    CONFIG = 1  # a membership change; data is Membership.encode()
    COMMAND = 2  # opaque bytes from the host


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    kind: EntryKind
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on stable storage before the core's messages may be sent (Figure 2).

    `commit` is persisted too, as a hint: it lets a restarted node apply up to the last commit
    index it knew without waiting for a leader. It is never needed for safety.
    """

    term: int = 0
    vote: str | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Member:
    """One member of the cluster. `address` is opaque to the core; the host defines it."""

    id: str
    address: str = ""


@dataclass(frozen=True, slots=True)
class Membership:
    """A cluster configuration: voters decide elections and commits, learners only replicate.

    invariant: no id is both a voter and a learner.
    """

    voters: tuple[Member, ...] = ()
    learners: tuple[Member, ...] = ()

    def voter_ids(self) -> frozenset[str]:
        return frozenset(m.id for m in self.voters)

    def learner_ids(self) -> frozenset[str]:
        return frozenset(m.id for m in self.learners)

    def ids(self) -> frozenset[str]:
        return self.voter_ids() | self.learner_ids()

    def member(self, node_id: str) -> Member | None:
        for m in (*self.voters, *self.learners):
            if m.id == node_id:
                return m
        return None

    def encode(self) -> bytes:
        body = {
            "voters": [[m.id, m.address] for m in self.voters],
            "learners": [[m.id, m.address] for m in self.learners],
        }
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> Membership:
        body = json.loads(data)
        return cls(
            voters=tuple(Member(i, a) for i, a in body["voters"]),
            learners=tuple(Member(i, a) for i, a in body["learners"]),
        )


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Identifies a snapshot: the state after applying every entry up to `index`.

    `membership` is the configuration in force at `index`, so that a node restored from the
    snapshot knows the cluster without the compacted log (§7).
    """

    index: int
    term: int
    membership: Membership = field(default_factory=Membership)
