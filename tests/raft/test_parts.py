"""The core's building blocks on their own: log, progress, quorum, configurations, reads."""

from __future__ import annotations

import pytest

from graft.raft.log import RaftLog
from graft.raft.membership import ConfigHistory, promoted, with_learner, without
from graft.raft.options import CoreConfig
from graft.raft.progress import Progress, ProgressState
from graft.raft.quorum import VoteResult, VoteTally, quorum_index
from graft.raft.readonly import ReadQueue
from graft.raft.ready import InvariantViolation, ReadState
from graft.raft.types import Entry, EntryKind, Member, Membership


def entries(*terms: int, start: int = 1) -> list[Entry]:
    return [Entry(start + n, term, EntryKind.COMMAND, b"e") for n, term in enumerate(terms)]


def test_log_merge_keeps_matching_entries_and_cuts_at_the_first_conflict() -> None:
    """§5.3 receiver rules 3-4: delete from the first conflict, keep what matches."""
    log = RaftLog(0, 0, entries(1, 1, 2, 2), commit=1, applied=0)
    assert log.merge(tuple(entries(1, 2, start=2))) is None  # (2,1) matches, (3,2) matches
    assert [e.term for e in log.entries] == [1, 1, 2, 2]
    assert log.merge(tuple(entries(3, start=3))) == 3
    assert [e.term for e in log.entries] == [1, 1, 3]
    assert log.stable == 2  # the host must rewrite from index 3


def test_log_refuses_to_cut_committed_entries() -> None:
    """Leader Completeness: a committed entry is never replaced."""
    log = RaftLog(0, 0, entries(1, 1), commit=2, applied=0)
    with pytest.raises(InvariantViolation):
        log.merge(tuple(entries(2, start=2)))


def test_log_conflict_hint_names_the_first_index_of_the_conflicting_term() -> None:
    """§5.3 closing optimisation."""
    log = RaftLog(0, 0, entries(1, 2, 2, 2), commit=0, applied=0)
    assert log.conflict_hint(4) == (2, 2)
    assert log.conflict_hint(9) == (5, 0)
    assert log.last_index_of_term(2) == 4
    assert log.last_index_of_term(3) is None


def test_log_batches_respect_the_byte_limit_but_always_carry_one_entry() -> None:
    log = RaftLog(0, 0, [Entry(i, 1, EntryKind.COMMAND, b"x" * 4) for i in (1, 2, 3)], 0, 0)
    assert [e.index for e in log.batch_from(1, 8)] == [1, 2]
    assert [e.index for e in log.batch_from(3, 1)] == [3]


def test_log_compaction_and_restore_after_a_snapshot() -> None:
    """§7: keep the suffix only if the log holds the snapshot's last entry."""
    log = RaftLog(0, 0, entries(1, 1, 2, 2), commit=3, applied=3)
    log.compact(2)
    assert (log.base, log.base_term, log.first_index()) == (2, 1, 3)
    assert log.term_at(1) is None
    assert log.restore(4, 2) is True and log.last_index() == 4
    other = RaftLog(0, 0, entries(1, 1, 2), commit=1, applied=1)
    assert other.restore(3, 5) is False and other.last_index() == 3 and not other.entries


def test_log_rejects_a_gap() -> None:
    with pytest.raises(InvariantViolation):
        RaftLog(0, 0, [Entry(2, 1, EntryKind.NOOP)], 0, 0)


def test_progress_pipelines_up_to_the_window_and_falls_back_to_probing() -> None:
    progress = Progress(next_index=5)
    progress.match = 4
    progress.become_replicate()
    progress.sent_entries(6)
    progress.sent_entries(8)
    assert progress.is_paused(max_inflight=2) and progress.next == 9
    assert progress.update_match(6) and not progress.is_paused(2)
    assert not progress.reject(rejected=5, hint=5)  # stale: below match
    assert progress.reject(rejected=8, hint=7)
    assert progress.state is ProgressState.PROBE and progress.next == 7


def test_quorum_index_is_the_majority_th_highest_match() -> None:
    assert quorum_index([5, 3, 9]) == 5
    assert quorum_index([5, 3, 9, 1]) == 3
    assert quorum_index([7]) == 7


def test_a_vote_tally_decides_on_a_majority_either_way() -> None:
    tally = VoteTally(["a", "b", "c"])
    tally.record("a", True)
    assert tally.result() is VoteResult.PENDING
    tally.record("b", False)
    tally.record("b", True)  # a second answer from the same voter does not count
    assert tally.result() is VoteResult.PENDING
    tally.record("c", False)
    assert tally.result() is VoteResult.LOST


def test_configuration_history_answers_for_any_index() -> None:
    """§4.1: the configuration in force is the newest one in the log."""
    base = Membership((Member("a"),))
    history = ConfigHistory(base)
    grown = with_learner(base, Member("b"))
    history.append(5, grown)
    history.append(9, promoted(grown, "b"))
    assert history.at(4) == base and history.at(5) == grown
    assert history.current().voter_ids() == {"a", "b"}
    assert history.truncate_from(9) and history.current() == grown
    history.compact_to(6)
    assert history.base == grown and history.changes == []


def test_membership_changes_refuse_nonsense() -> None:
    base = Membership((Member("a"),), (Member("l"),))
    with pytest.raises(ValueError):
        with_learner(base, Member("a"))
    with pytest.raises(ValueError):
        promoted(base, "a")
    with pytest.raises(ValueError):
        without(base, "a")  # the last voter
    assert without(base, "l").learner_ids() == frozenset()


def test_reads_are_released_in_order_once_confirmed_and_indexed() -> None:
    """Thesis §6.4: a read needs an index and a majority's confirmation of a later round."""
    queue = ReadQueue()
    queue.add(context=10, index=0)
    queue.add(context=11, index=0)
    assert queue.release({"a": 2, "b": 2}, ("a", "b", "c")) == []  # no term commit yet
    queue.on_term_commit(7)
    assert queue.release({"a": 2, "b": 1}, ("a", "b", "c")) == [ReadState(10, 7)]
    assert queue.release({"a": 2, "b": 2}, ("a", "b", "c")) == [ReadState(11, 7)]


def test_core_config_checks_its_timings() -> None:
    with pytest.raises(ValueError):
        CoreConfig("a", election_ticks=2, heartbeat_ticks=2)
    with pytest.raises(ValueError):
        CoreConfig("")
