"""The simulator catches known Raft bugs, each planted on purpose (tests/sim/bugs.py).

Each test runs seeded schedules with one bug planted until the simulator reports a
violation, and asserts that the first one it reports is the property that bug breaks.
The search is bounded; the seeds are fixed, so the outcome is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graft.raft.core import RaftCore

from . import bugs
from .checker import (
    ELECTION_SAFETY,
    LEADER_APPEND_ONLY,
    LEADER_COMPLETENESS,
    LINEARIZABILITY,
    LOG_MATCHING,
    STATE_MACHINE_SAFETY,
    Violation,
)
from .cluster import Profile, run_schedule
from .host import HostFaults


def first_violation(seeds: int, **planted: Any) -> Violation:
    for seed in range(seeds):
        for nodes in (3, 5):
            try:
                run_schedule(seed, nodes, 500, **planted)
            except Violation as violation:
                return violation
    raise AssertionError(f"no violation in {seeds} seeds with {planted}")


def crash_heavy(profile: Profile) -> None:
    """Many crashes and restarts, no PreVote, short timeouts: split votes across restarts."""
    profile.config.update(pre_vote=False, election_ticks=5)
    profile.weights.update(crash=20, restart=20, propose=10)
    profile.action_rate = 0.3


def figure8_weather(profile: Profile) -> None:
    """One entry per message and frequent crashes and partitions, as in Figure 8."""
    profile.config.update(max_entries_bytes=1, election_ticks=5, max_inflight=1)
    profile.weights.update(
        crash=10, restart=10, partition=6, heal=6, propose=20, member=0, snapshot=0, transfer=0
    )
    profile.action_rate = 0.3


def stale_leaders(profile: Profile) -> None:
    """Many reads and partitions, and no CheckQuorum: deposed leaders linger."""
    profile.config.update(check_quorum=False)
    profile.weights.update(read=30, partition=10, heal=3)


def test_unplanted_core_passes_the_same_searches() -> None:
    """Control: the real core survives the weather the planted bugs are searched in."""
    overrides: list[Callable[[Profile], None]] = [crash_heavy, figure8_weather, stale_leaders]
    for override in overrides:
        for seed in range(15):
            run_schedule(seed, 3, 500, factory=RaftCore, profile_override=override)


def test_catches_commit_of_previous_term_entry_by_counting_replicas() -> None:
    """Figure 8 / §5.4.2: a later leader lacks an entry the buggy leader called committed."""
    violation = first_violation(
        60, factory=bugs.CommitsPreviousTermByCounting, profile_override=figure8_weather
    )
    assert violation.prop == LEADER_COMPLETENESS, violation


def test_catches_a_vote_that_was_not_persisted() -> None:
    """§5.2 / Figure 2: a restarted voter votes twice in one term; two leaders result."""
    violation = first_violation(
        80, host_faults=HostFaults(forget_vote=True), profile_override=crash_heavy
    )
    assert violation.prop == ELECTION_SAFETY, violation


def test_catches_a_vote_for_a_candidate_with_a_shorter_log() -> None:
    """§5.4.1: without the up-to-date check a leader can miss committed entries."""
    violation = first_violation(20, factory=bugs.VotesForShorterLogs)
    assert violation.prop == LEADER_COMPLETENESS, violation


def test_catches_applying_entries_before_they_commit() -> None:
    """§5.3 / §5.4: entries applied before commit can be replaced; state machines diverge."""
    violation = first_violation(20, host_faults=HostFaults(apply_uncommitted=True))
    assert violation.prop == STATE_MACHINE_SAFETY, violation


def test_catches_a_follower_that_skips_the_consistency_check() -> None:
    """§5.3: appending after a mismatching previous entry breaks Log Matching."""
    violation = first_violation(20, factory=bugs.SkipsConsistencyCheck)
    assert violation.prop == LOG_MATCHING, violation


def test_catches_a_leader_that_deletes_its_own_entries() -> None:
    """§5.3 Leader Append-Only: a leader never deletes or overwrites its entries."""
    violation = first_violation(5, factory=bugs.LeaderDropsUncommittedTail)
    assert violation.prop == LEADER_APPEND_ONLY, violation


def test_catches_reads_served_without_confirming_leadership() -> None:
    """Thesis §6.4: a deposed leader that answers from its own commit index is stale."""
    violation = first_violation(
        20, factory=bugs.ReadsWithoutConfirmation, profile_override=stale_leaders
    )
    assert violation.prop == LINEARIZABILITY, violation


def slow_leader_disk(profile: Profile) -> None:
    """Leaders' Readies stay unpersisted for several steps; crashes are frequent."""
    profile.slow_disk = 0.9
    profile.weights.update(crash=10, restart=10, propose=30)
    profile.action_rate = 0.3


def steady_disk(profile: Profile) -> None:
    """The same weather with every Ready persisted at once."""
    slow_leader_disk(profile)
    profile.slow_disk = 0.0


def test_catches_a_leader_that_counts_entries_it_has_not_persisted() -> None:
    """Thesis §10.2.1: a leader may send before its fsync, but not count itself; a leader
    that does, then crashes, loses an entry it called committed."""
    violation = first_violation(
        40, factory=bugs.CountsItselfBeforePersisting, profile_override=slow_leader_disk
    )
    assert violation.prop in (LEADER_COMPLETENESS, STATE_MACHINE_SAFETY), violation


def test_the_slow_disk_is_what_exposes_counting_before_persisting() -> None:
    """Control: with every Ready persisted before the next step, the same bug is invisible,
    so the test above shows the slow-disk model at work, not some other fault."""
    for seed in range(10):
        for nodes in (3, 5):
            run_schedule(
                seed,
                nodes,
                500,
                factory=bugs.CountsItselfBeforePersisting,
                profile_override=steady_disk,
            )
