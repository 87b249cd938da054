"""Membership changes, one server at a time, with learners (thesis §4.1-§4.2)."""

from __future__ import annotations

import pytest

from graft.raft.ready import MembershipChangePending, Role
from graft.raft.types import Member

from .cluster import Cluster


def grown_cluster() -> tuple[Cluster, str]:
    cluster = Cluster("a", "b", "c")
    leader = cluster.run_until_leader()
    cluster.core(leader).propose(b"before")
    cluster.deliver()
    cluster.add_host("d")
    cluster.core(leader).add_learner(Member("d", "addr-d"))
    cluster.deliver()
    cluster.tick(3)
    return cluster, leader


def test_a_learner_catches_up_without_counting_towards_the_quorum() -> None:
    """§4.2.1: a new server joins as a non-voting learner and replicates the whole log."""
    cluster, leader = grown_cluster()
    learner = cluster.core("d")
    assert learner.role is Role.LEARNER
    assert cluster.hosts["d"].applied == [b"before"]
    assert cluster.core(leader).membership.learner_ids() == {"d"}
    assert "d" not in cluster.core(leader)._voters


def test_a_learner_never_campaigns() -> None:
    """§4.2.1: only voters start elections."""
    cluster, leader = grown_cluster()
    cluster.down.add(leader)
    cluster.tick(60, ["d"])
    assert cluster.core("d").role is Role.LEARNER


def test_a_promoted_learner_votes_and_counts_towards_commits() -> None:
    """§4.1: the new configuration is used as soon as its entry is appended."""
    cluster, leader = grown_cluster()
    cluster.core(leader).promote("d")
    cluster.deliver()
    cluster.tick(2)
    assert cluster.core("d").role is Role.FOLLOWER
    assert cluster.core(leader).membership.voter_ids() == {"a", "b", "c", "d"}

    # With four voters a majority is three: two servers down stop commits.
    down = [n for n in ("a", "b", "c") if n != leader][:2]
    cluster.down.update(down)
    index = cluster.core(leader).propose(b"needs three")
    cluster.tick(2)
    assert cluster.core(leader).log.commit < index


def test_one_change_at_a_time() -> None:
    """§4.1: a second change waits until the first is committed."""
    cluster = Cluster("a", "b", "c")
    leader = cluster.run_until_leader()
    others = [n for n in cluster.hosts if n != leader]
    cluster.isolate(others[0])
    cluster.isolate(others[1])
    cluster.core(leader).add_learner(Member("x"))
    with pytest.raises(MembershipChangePending):
        cluster.core(leader).add_learner(Member("y"))


def test_a_removed_follower_stops_campaigning() -> None:
    """§4.2.3: a server outside the configuration does not start elections."""
    cluster = Cluster("a", "b", "c")
    leader = cluster.run_until_leader()
    removed = next(n for n in cluster.hosts if n != leader)
    cluster.core(leader).remove(removed)
    cluster.deliver()
    cluster.tick(2)
    assert cluster.core(removed).membership.voter_ids() == {"a", "b", "c"} - {removed}

    cluster.tick(60, [removed])
    assert cluster.core(removed).role is Role.FOLLOWER
    assert cluster.core(removed).term == cluster.core(leader).term


def test_a_removed_leader_steps_down_once_the_change_commits() -> None:
    """§4.2.2: the leader manages the change without counting itself, then steps down."""
    cluster = Cluster("a", "b", "c")
    leader = cluster.run_until_leader()
    cluster.core(leader).remove(leader)
    cluster.deliver()
    assert cluster.core(leader).role is Role.FOLLOWER

    rest = [n for n in cluster.hosts if n != leader]
    cluster.tick(60)
    new = [n for n in rest if cluster.core(n).role is Role.LEADER]
    assert len(new) == 1
    cluster.core(new[0]).propose(b"after")
    cluster.deliver()
    cluster.tick(2)
    assert all(cluster.hosts[n].applied == [b"after"] for n in rest)
    assert cluster.core(leader).role is Role.FOLLOWER


def test_configuration_reverts_when_its_uncommitted_entry_is_replaced() -> None:
    """§4.1: the configuration in force is the newest in the log, committed or not."""
    cluster = Cluster("a", "b", "c")
    old = cluster.run_until_leader()
    cluster.isolate(old)
    cluster.core(old).add_learner(Member("z"))
    cluster.tick(1, [old])
    assert cluster.core(old).membership.learner_ids() == {"z"}

    rest = [n for n in cluster.hosts if n != old]
    cluster.tick(40, rest)
    cluster.heal()
    cluster.tick(30)
    assert cluster.core(old).membership.learner_ids() == frozenset()
    assert cluster.core(old).role is Role.FOLLOWER
