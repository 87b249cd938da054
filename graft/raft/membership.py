"""Cluster configurations in the log: one server at a time, with learners (thesis §4.1-§4.2).

A configuration takes effect on a server as soon as its CONFIG entry is in that server's
log, committed or not (§4.1). So the configuration in force is the newest CONFIG entry of
the log, or, when the log holds none, the one at the log's base (from the snapshot, or the
bootstrap configuration). A conflict that cuts a CONFIG entry off the log therefore reverts
to the previous configuration; `ConfigHistory` keeps the CONFIG entries of the log in order
so that this and `at(index)` are cheap.

Changes are built here and validated against the configuration in force; the core decides
who may propose them.
"""

from __future__ import annotations

from graft.raft.types import Member, Membership


class ConfigHistory:
    __slots__ = ("base", "changes")

    def __init__(self, base: Membership) -> None:
        self.base = base  # in force at the log's base index
        self.changes: list[tuple[int, Membership]] = []  # CONFIG entries of the log, in order

    def current(self) -> Membership:
        return self.changes[-1][1] if self.changes else self.base

    def last_change_index(self) -> int:
        return self.changes[-1][0] if self.changes else 0

    def at(self, index: int) -> Membership:
        """The configuration in force once the log reaches `index`."""
        found = self.base
        for change_index, membership in self.changes:
            if change_index > index:
                break
            found = membership
        return found

    def append(self, index: int, membership: Membership) -> None:
        self.changes.append((index, membership))

    def truncate_from(self, index: int) -> bool:
        """Drop changes at `index` or later; True if any was dropped."""
        kept = [change for change in self.changes if change[0] < index]
        dropped = len(kept) != len(self.changes)
        self.changes = kept
        return dropped

    def compact_to(self, index: int) -> None:
        self.base = self.at(index)
        self.changes = [change for change in self.changes if change[0] > index]

    def restore(self, index: int, membership: Membership, kept: bool) -> None:
        """A snapshot at `index` holding `membership` replaced the log up to `index`.

        `kept`: the log kept its entries after `index`, and so the changes among them.
        """
        self.base = membership
        self.changes = [change for change in self.changes if kept and change[0] > index]


def with_learner(current: Membership, member: Member) -> Membership:
    if member.id in current.ids():
        raise ValueError(f"{member.id!r} is already a member")
    return Membership(current.voters, (*current.learners, member))


def promoted(current: Membership, node_id: str) -> Membership:
    member = next((m for m in current.learners if m.id == node_id), None)
    if member is None:
        raise ValueError(f"{node_id!r} is not a learner")
    learners = tuple(m for m in current.learners if m.id != node_id)
    return Membership((*current.voters, member), learners)


def without(current: Membership, node_id: str) -> Membership:
    if node_id not in current.ids():
        raise ValueError(f"{node_id!r} is not a member")
    voters = tuple(m for m in current.voters if m.id != node_id)
    if not voters:
        raise ValueError(f"removing {node_id!r} would leave no voter")
    learners = tuple(m for m in current.learners if m.id != node_id)
    return Membership(voters, learners)
