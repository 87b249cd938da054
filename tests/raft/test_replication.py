"""Log replication and commitment: §5.3, §5.4.2 (Figure 8), and the host ordering rules."""

from __future__ import annotations

import random

import pytest

from graft.raft.core import CoreConfig, RaftCore
from graft.raft.messages import AppendEntries, AppendEntriesResponse, Message
from graft.raft.ready import NotLeader, Role
from graft.raft.types import Entry, EntryKind, HardState, Member, Membership

from .cluster import Cluster, Host, members


def test_a_committed_entry_is_applied_on_every_server_in_order() -> None:
    """§5.3: the leader replicates, commits on a majority, and every server applies."""
    cluster = Cluster("a", "b", "c")
    leader = cluster.run_until_leader()
    for n in range(5):
        cluster.core(leader).propose(b"cmd%d" % n)
    cluster.deliver()
    cluster.tick(2)
    for host in cluster.hosts.values():
        assert host.applied == [b"cmd%d" % n for n in range(5)]


def test_only_the_leader_accepts_proposals() -> None:
    """§5.1: clients talk to the leader; others name it."""
    cluster = Cluster("a", "b", "c")
    leader = cluster.run_until_leader()
    follower = next(n for n in cluster.hosts if n != leader)
    with pytest.raises(NotLeader) as refused:
        cluster.core(follower).propose(b"x")
    assert refused.value.leader == leader


def test_proposals_between_two_readies_leave_in_one_append_per_follower() -> None:
    """Batching (thesis §10.2.1): many proposals, one AppendEntries per follower."""
    cluster = Cluster("a", "b", "c")
    leader = cluster.run_until_leader()
    core = cluster.core(leader)
    for n in range(64):
        core.propose(b"%d" % n)
    ready = core.ready()
    appends = [m for m in ready.messages if isinstance(m, AppendEntries)]
    assert sorted(m.dst for m in appends) == sorted(n for n in cluster.hosts if n != leader)
    assert all(len(m.entries) == 64 for m in appends)
    assert len(ready.entries) == 64
    core.advance(ready)


def test_appends_respect_the_byte_limit() -> None:
    """A follower far behind gets entries in messages of at most max_entries_bytes."""
    cluster = Cluster("a", "b", "c", max_entries_bytes=10)
    leader = cluster.run_until_leader()
    core = cluster.core(leader)
    for _ in range(8):
        core.propose(b"12345")
    ready = core.ready()
    appends = [m for m in ready.messages if isinstance(m, AppendEntries)]
    assert appends and all(sum(len(e.data) for e in m.entries) <= 10 for m in appends)
    assert len(appends) == 8  # two entries per message, four messages per follower
    core.advance(ready)


def test_a_partitioned_minority_cannot_commit() -> None:
    """§5.3/§5.4: an entry commits only on a majority; the majority side goes on."""
    cluster = Cluster("a", "b", "c", "d", "e")
    old = cluster.run_until_leader()
    minority = {old, next(n for n in cluster.hosts if n != old)}
    majority = set(cluster.hosts) - minority
    for a in minority:
        for b in majority:
            cluster.cut(a, b)
    stuck = cluster.core(old).propose(b"lost")
    cluster.tick(5, list(minority))
    assert cluster.core(old).log.commit < stuck

    cluster.tick(30, list(majority))
    new = next(n for n in majority if cluster.core(n).role is Role.LEADER)
    done = cluster.core(new).propose(b"kept")
    cluster.deliver()
    assert cluster.core(new).log.commit >= done


def test_a_rejoining_node_replaces_its_divergent_uncommitted_entries() -> None:
    """§5.3: the new leader forces followers' logs to duplicate its own."""
    cluster = Cluster("a", "b", "c")
    old = cluster.run_until_leader()
    cluster.isolate(old)
    for n in range(3):
        cluster.core(old).propose(b"orphan%d" % n)
    cluster.tick(1, [old])

    rest = [n for n in cluster.hosts if n != old]
    cluster.tick(30, rest)
    new = next(n for n in rest if cluster.core(n).role is Role.LEADER)
    cluster.core(new).propose(b"winner")
    cluster.deliver()

    cluster.heal()
    cluster.tick(30)
    logs = {n: list(h.core.log.entries) for n, h in cluster.hosts.items()}
    assert logs[old] == logs[new]
    assert all(not e.data.startswith(b"orphan") for e in logs[old])
    assert cluster.hosts[old].applied == [b"winner"]


def test_figure8_an_old_term_entry_is_not_committed_by_counting_replicas() -> None:
    """§5.4.2, Figure 8: a majority holding an old-term entry does not commit it; a later
    leader may still replace it, so it only commits together with a current-term entry."""
    cluster = Cluster("s1", "s2", "s3", max_entries_bytes=1)
    cluster.elect("s1")
    cluster.isolate("s1")
    index = cluster.core("s1").propose(b"x")  # (2, term 1) stays on s1 only
    cluster.tick(1, ["s1"])

    # s2 wins term 2 with s3's vote; its empty entry (2, term 2) never leaves it.
    cluster.rewrite = lambda m: None if isinstance(m, AppendEntries) and m.src == "s2" else m
    cluster.elect("s2")
    cluster.isolate("s2")
    assert cluster.core("s2").log.term_at(index) == 2

    cluster.heal()
    cluster.isolate("s2")
    # s1 wins term 3 and sends s3 the old entry, but never its own empty entry (3, term 3).
    cluster.rewrite = lambda m: _without_term(m, cluster.core("s1").term)
    cluster.elect("s1")
    cluster.tick(3, ["s1", "s3"])
    assert cluster.core("s3").log.term_at(index) == 1  # (2, term 1) is on s1 and s3
    assert cluster.core("s1").log.commit < index  # ... and still not committed

    # Why: s2's log ends in a later term than s3's, so s2 can win with s3's vote and
    # replace index 2 (Figure 8 (d)).
    cluster.rewrite = None
    cluster.heal()
    cluster.isolate("s1")
    cluster.elect("s2")
    cluster.tick(3, ["s2", "s3"])
    assert cluster.core("s3").log.term_at(index) == cluster.core("s2").log.term_at(index) != 1


def _without_term(msg: Message, term: int) -> Message | None:
    if isinstance(msg, AppendEntries) and any(e.term == term for e in msg.entries):
        kept = tuple(e for e in msg.entries if e.term != term)
        return AppendEntries(
            msg.term, msg.src, msg.dst, msg.prev_log_index, msg.prev_log_term, kept, msg.commit
        )
    return msg


def test_a_follower_refuses_entries_that_do_not_follow_a_matching_entry() -> None:
    """§5.3 consistency check, with the conflict hint of its closing optimisation."""
    host = Host("f", members("f", "l"), seed=1)
    core = host.core
    core.step(AppendEntries(1, "l", "f", 0, 0, (Entry(1, 1, EntryKind.NOOP),), 0))
    core.step(AppendEntries(3, "l", "f", 1, 2, (Entry(2, 3, EntryKind.NOOP),), 0))
    answers = [m for m in core.ready().messages if isinstance(m, AppendEntriesResponse)]
    assert answers[0].success and answers[0].match_index == 1
    refused = answers[1]
    assert not refused.success
    assert (refused.conflict_index, refused.conflict_term) == (1, 1)
    assert refused.match_index == 1  # the refused prev_log_index


def test_a_follower_answers_a_stale_leader_with_its_term() -> None:
    """§5.1: a request with an older term is refused and the sender learns the new term."""
    host = Host("f", members("f", "l"), seed=1)
    host.core.step(AppendEntries(5, "l", "f", 0, 0, (), 0))
    host.process(lambda _: host)
    host.core.step(AppendEntries(4, "old", "f", 0, 0, (), 0))
    (answer,) = host.core.ready().messages
    assert isinstance(answer, AppendEntriesResponse)
    assert (answer.term, answer.success, answer.dst) == (5, False, "old")


def test_the_leader_counts_its_own_entries_only_once_they_are_durable() -> None:
    """Thesis §10.2.1: the leader may send first, but commits only what the host stored."""
    cluster = Cluster("solo")
    leader = cluster.run_until_leader()
    core = cluster.core(leader)
    index = core.propose(b"x")
    ready = core.ready()
    assert core.log.commit < index
    core.advance(ready)
    assert core.log.commit == index


def test_ready_must_be_advanced_before_the_next_one() -> None:
    """graft/raft/ready.py: one Ready at a time; the core hands out nothing twice."""
    cluster = Cluster("solo")
    core = cluster.core(cluster.run_until_leader())
    core.propose(b"x")
    ready = core.ready()
    with pytest.raises(RuntimeError):
        core.ready()
    core.advance(ready)


def test_a_restarted_server_recovers_its_log_and_commit_from_storage() -> None:
    """Figure 2: log, term and vote are persistent; the commit hint lets it apply at once."""
    cluster = Cluster("a", "b", "c")
    leader = cluster.run_until_leader()
    cluster.core(leader).propose(b"durable")
    cluster.deliver()
    cluster.tick(2)
    follower = next(n for n in cluster.hosts if n != leader)
    before = cluster.core(follower).log.last_index()

    cluster.hosts[follower].restart()
    cluster.deliver()
    assert cluster.core(follower).log.last_index() == before
    assert cluster.hosts[follower].applied == [b"durable"]


def test_a_follower_that_lost_entries_in_flight_catches_up_without_new_proposals() -> None:
    """§5.3: a leader retries AppendEntries; appends lost while a follower restarted are
    sent again once its heartbeat answer shows it behind, not only when the next proposal
    happens to reveal the gap."""
    cluster = Cluster("a", "b", "c")
    leader = cluster.run_until_leader()
    follower = next(n for n in cluster.hosts if n != leader)
    cluster.core(leader).propose(b"warm-up")
    cluster.deliver()

    cluster.down.add(follower)  # its process died: the appends below are lost in flight
    for n in range(3):
        cluster.core(leader).propose(b"lost%d" % n)
    cluster.deliver()
    cluster.hosts[follower].restart()
    cluster.down.discard(follower)

    cluster.tick(5)

    assert cluster.hosts[follower].applied == cluster.hosts[leader].applied
    assert cluster.hosts[follower].applied[-1] == b"lost2"


def test_lost_entries_that_were_compacted_meanwhile_reach_the_follower_by_snapshot() -> None:
    """§7: when the entries a restarted follower lost are compacted away, the leader's
    heartbeats must not hide the gap; the follower gets the snapshot without waiting for a
    new proposal."""
    cluster = Cluster("a", "b", "c")
    leader = cluster.run_until_leader()
    follower = next(n for n in cluster.hosts if n != leader)
    cluster.core(leader).propose(b"warm-up")
    cluster.deliver()

    cluster.down.add(follower)
    for n in range(3):
        cluster.core(leader).propose(b"lost%d" % n)
    cluster.deliver()
    cluster.tick(1)
    cluster.hosts[leader].take_snapshot(keep=0)
    cluster.hosts[follower].restart()
    cluster.down.discard(follower)

    cluster.tick(5)

    assert cluster.hosts[follower].applied == cluster.hosts[leader].applied
    assert cluster.hosts[follower].applied[-1] == b"lost2"


def test_a_leader_heartbeats_while_its_ready_is_still_being_persisted() -> None:
    """Thesis §10.2.1: a leader's messages do not depend on its own disk, so a slow fsync
    must not silence it; a follower's must wait, and so must a deposed leader's."""
    cluster = Cluster("a", "b", "c", heartbeat_ticks=1)
    leader = cluster.run_until_leader()
    core = cluster.core(leader)
    core.propose(b"slow disk")
    ready = core.ready()  # the host is now persisting this Ready

    core.tick()
    beats = core.leader_messages(ready.term)

    assert sorted(m.dst for m in beats if isinstance(m, AppendEntries)) == sorted(
        n for n in cluster.hosts if n != leader
    )
    assert core.leader_messages(ready.term + 1) == ()
    follower = next(n for n in cluster.hosts if n != leader)
    assert cluster.core(follower).leader_messages(ready.term) == ()
    core.advance(ready)


def test_a_single_voter_that_wins_in_one_step_persists_its_term_before_sending() -> None:
    """§5.1: a lone voter leads in the step that started its election. Its first Ready
    carries the new term and vote; its append to the learner must wait for them like a
    candidate's message, or a crash could let it lead the same term twice."""
    membership = Membership(voters=(Member("a"),), learners=(Member("b"),))
    core = RaftCore(
        CoreConfig("a", heartbeat_ticks=1),
        hard_state=HardState(),
        membership=membership,
        snapshot=None,
        entries=[],
        jitter=random.Random(3),
        applied=0,
    )
    while not core.has_ready():
        core.tick()

    first = core.ready()
    assert first.role is Role.LEADER
    assert first.hard_state is not None and first.hard_state.vote == "a"
    assert [m.dst for m in first.messages] == ["b"]
    assert not first.send_first
    core.tick()
    assert core.leader_messages(first.term) == ()

    core.advance(first)
    core.propose(b"x")
    second = core.ready()
    assert second.send_first
    core.tick()
    assert [m.dst for m in core.leader_messages(second.term)] == ["b"]
