"""Log compaction and InstallSnapshot (§7)."""

from __future__ import annotations

import pytest

from graft.raft.messages import InstallSnapshot
from graft.raft.types import Member

from .cluster import Cluster


def compacted_cluster() -> tuple[Cluster, str, str]:
    cluster = Cluster("a", "b", "c")
    leader = cluster.run_until_leader()
    lagging = next(n for n in cluster.hosts if n != leader)
    cluster.isolate(lagging)
    for n in range(20):
        cluster.core(leader).propose(b"cmd%d" % n)
    cluster.deliver()
    cluster.hosts[leader].take_snapshot(keep=2)
    return cluster, leader, lagging


def test_compaction_drops_entries_but_keeps_the_requested_tail() -> None:
    """§7: entries a snapshot covers may go; `keep` leaves some for slow followers."""
    cluster, leader, _ = compacted_cluster()
    status = cluster.core(leader).status()
    assert status.first_index == status.applied - 1
    assert cluster.core(leader).snapshot is not None


def test_a_follower_behind_the_snapshot_receives_it_and_catches_up() -> None:
    """§7: the leader sends InstallSnapshot when the entries a follower needs are gone."""
    cluster, leader, lagging = compacted_cluster()
    sent: list[InstallSnapshot] = []

    def watch(msg: object) -> object:
        if isinstance(msg, InstallSnapshot):
            sent.append(msg)
        return msg

    cluster.rewrite = watch  # type: ignore[assignment]
    cluster.heal()
    cluster.tick(3)
    assert [m.dst for m in sent] == [lagging]

    cluster.core(leader).propose(b"after")
    cluster.deliver()
    cluster.tick(2)
    host = cluster.hosts[lagging]
    assert host.applied == [b"cmd%d" % n for n in range(20)] + [b"after"]
    assert host.core.log.base == sent[0].meta.index
    assert host.disk.snapshot == sent[0].meta


def test_a_restart_after_installing_a_snapshot_resumes_from_it() -> None:
    """§7: the snapshot, not the compacted log, is the node's state on restart."""
    cluster, leader, lagging = compacted_cluster()
    cluster.heal()
    cluster.tick(3)
    host = cluster.hosts[lagging]
    host.restart()
    cluster.tick(2)
    assert host.applied == [b"cmd%d" % n for n in range(20)]
    assert host.core.log.base == host.disk.snapshot.index  # type: ignore[union-attr]


def test_a_snapshot_carries_the_membership_to_a_new_server() -> None:
    """§7: a server restored from a snapshot knows the configuration at its index."""
    cluster = Cluster("a", "b", "c")
    leader = cluster.run_until_leader()
    cluster.core(leader).propose(b"x")
    cluster.deliver()
    cluster.tick(2)
    cluster.hosts[leader].take_snapshot()
    cluster.add_host("d")
    cluster.core(leader).add_learner(Member("d"))
    cluster.deliver()
    cluster.tick(3)
    assert cluster.hosts["d"].applied == [b"x"]
    assert cluster.core("d").membership.learner_ids() == {"d"}


def test_compaction_refuses_a_snapshot_beyond_applied() -> None:
    """The host may only snapshot state it has applied."""
    cluster = Cluster("solo")
    core = cluster.core(cluster.run_until_leader())
    meta = core.snapshot_meta(core.log.applied)
    with pytest.raises(ValueError):
        core.compact(type(meta)(meta.index + 5, meta.term, meta.membership))
