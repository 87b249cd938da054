"""Linearizable reads by ReadIndex (thesis §6.4) and leadership transfer (thesis §3.10)."""

from __future__ import annotations

import pytest

from graft.raft.messages import AppendEntries, AppendEntriesResponse
from graft.raft.ready import NotLeader, ProposalDropped, Role

from .cluster import Cluster


def test_read_index_is_released_after_a_heartbeat_round_at_the_commit_index() -> None:
    """§6.4: record the commit index, confirm leadership with a majority, then serve."""
    cluster = Cluster("a", "b", "c")
    leader = cluster.run_until_leader()
    core = cluster.core(leader)
    index = core.propose(b"w")
    cluster.deliver()
    core.read_index(7)
    ready = core.ready()
    assert not ready.reads
    assert [m.read_context for m in ready.messages if isinstance(m, AppendEntries)] == [1, 1]
    core.advance(ready)
    cluster.queue.extend(ready.messages)
    cluster.deliver()
    (read,) = cluster.hosts[leader].reads
    assert (read.context, read.index) == (7, index)


def test_a_read_waits_until_the_new_leader_commits_an_entry_of_its_term() -> None:
    """§6.4 step 1: a fresh leader does not know the commit index until its no-op commits."""
    cluster = Cluster("a", "b", "c")
    # Followers' acknowledgements of entries are lost; those of read rounds get through.
    cluster.rewrite = lambda m: (
        None if isinstance(m, AppendEntriesResponse) and not m.read_context else m
    )
    cluster.elect("a")
    core = cluster.core("a")
    noop = core.log.last_index()
    core.read_index(9)
    cluster.deliver()
    assert all(p.read_acked == 1 for p in core.progress.values())  # leadership confirmed
    assert core.log.commit < noop and cluster.hosts["a"].reads == []  # but no release

    cluster.rewrite = None
    cluster.tick(2)
    (read,) = cluster.hosts["a"].reads
    assert (read.context, read.index) == (9, noop)


def test_a_read_on_a_follower_is_refused_with_the_leader() -> None:
    """§6.4: followers forward reads; the core names the leader."""
    cluster = Cluster("a", "b", "c")
    leader = cluster.run_until_leader()
    follower = next(n for n in cluster.hosts if n != leader)
    with pytest.raises(NotLeader) as refused:
        cluster.core(follower).read_index(1)
    assert refused.value.leader == leader


def test_reads_pending_when_leadership_is_lost_come_back_dropped() -> None:
    """§6.4: a deposed leader can no longer prove its reads; it hands them back."""
    cluster = Cluster("a", "b", "c")
    leader = cluster.run_until_leader()
    cluster.isolate(leader)
    cluster.core(leader).read_index(42)
    cluster.tick(25, [leader])
    assert cluster.core(leader).role is Role.FOLLOWER
    assert cluster.hosts[leader].dropped_reads == [42]
    assert cluster.hosts[leader].reads == []


def test_a_transfer_completes_within_one_election_timeout() -> None:
    """Thesis §3.10: catch the target up, send TimeoutNow, the target wins at once."""
    cluster = Cluster("a", "b", "c")
    leader = cluster.run_until_leader()
    target = next(n for n in cluster.hosts if n != leader)
    term = cluster.core(leader).term
    cluster.core(leader).transfer_leadership(target)
    for _ in range(10):
        if cluster.core(target).role is Role.LEADER:
            break
        cluster.tick()
    assert cluster.leaders() == [target]
    assert cluster.core(target).term == term + 1


def test_proposals_are_refused_during_a_transfer_until_it_is_aborted() -> None:
    """Thesis §3.10: no new entries while handing over; give up after an election timeout."""
    cluster = Cluster("a", "b", "c")
    leader = cluster.run_until_leader()
    target = next(n for n in cluster.hosts if n != leader)
    cluster.isolate(target)
    cluster.core(leader).propose(b"target lacks this")
    cluster.deliver()
    cluster.core(leader).transfer_leadership(target)
    with pytest.raises(ProposalDropped):
        cluster.core(leader).propose(b"refused")

    cluster.tick(10, [n for n in cluster.hosts if n != target])
    assert cluster.core(leader).role is Role.LEADER
    assert cluster.core(leader).status().transferring_to is None
    cluster.core(leader).propose(b"accepted again")
