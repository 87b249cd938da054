"""Majorities: the one rule behind elections and commits (§5.2, §5.3).

Only voters count. A leader that is not itself a voter any more (it is removing itself,
thesis §4.2.2) keeps leading but does not count its own log or vote.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


def majority(voters: int) -> int:
    return voters // 2 + 1


def quorum_index(matches: list[int]) -> int:
    """The highest index that a majority of `matches` (one per voter) has reached."""
    if not matches:
        return 0
    ordered = sorted(matches, reverse=True)
    return ordered[majority(len(ordered)) - 1]


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


class VoteTally:
    """The answers one campaign received. A voter's first answer is the one that counts."""

    __slots__ = ("_voters", "_answers")

    def __init__(self, voters: Iterable[str]) -> None:
        self._voters = frozenset(voters)
        self._answers: dict[str, bool] = {}

    def record(self, voter: str, granted: bool) -> None:
        if voter in self._voters and voter not in self._answers:
            self._answers[voter] = granted

    def result(self) -> VoteResult:
        needed = majority(len(self._voters))
        granted = sum(1 for ok in self._answers.values() if ok)
        if granted >= needed:
            return VoteResult.WON
        if len(self._answers) - granted > len(self._voters) - needed:
            return VoteResult.LOST
        return VoteResult.PENDING
