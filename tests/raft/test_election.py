"""Leader election: §5.2, §5.4.1, PreVote (thesis §9.6), CheckQuorum (§6.2)."""

from __future__ import annotations

from graft.raft.messages import RequestVote, RequestVoteResponse
from graft.raft.ready import Role
from graft.raft.types import HardState

from .cluster import Cluster, Host, members


def test_initial_election_elects_exactly_one_leader() -> None:
    """§5.2: followers time out, one wins a majority, the others follow it in its term."""
    cluster = Cluster("a", "b", "c")
    leader = cluster.run_until_leader()
    term = cluster.core(leader).term
    for node_id, host in cluster.hosts.items():
        assert host.core.term == term
        assert host.core.leader == leader
        if node_id != leader:
            assert host.core.role is Role.FOLLOWER


def test_election_timeouts_are_randomised_within_e_and_2e() -> None:
    """§5.2: timeouts are drawn from [e, 2e) so that split votes are rare."""
    timeouts = {Host(f"n{i}", members("n0"), seed=i).core._timeout for i in range(50)}
    assert min(timeouts) >= 10 and max(timeouts) < 20 and len(timeouts) > 3


def test_a_new_leader_is_elected_after_the_leader_is_lost() -> None:
    """§5.2: when heartbeats stop, a follower times out and a new term begins."""
    cluster = Cluster("a", "b", "c")
    old = cluster.run_until_leader()
    old_term = cluster.core(old).term
    cluster.down.add(old)

    new = cluster.run_until_leader()
    assert new != old
    assert cluster.core(new).term > old_term


def test_a_server_votes_at_most_once_per_term() -> None:
    """§5.2: first come, first served; the vote is in the hard state handed to the host."""
    host = Host("a", members("a", "b", "c"), seed=1)
    core = host.core
    core.step(RequestVote(2, "b", "a", 0, 0))
    core.step(RequestVote(2, "c", "a", 0, 0))
    ready = core.ready()
    answers = [m for m in ready.messages if isinstance(m, RequestVoteResponse)]
    assert [(m.dst, m.granted) for m in answers] == [("b", True), ("c", False)]
    assert ready.hard_state == HardState(term=2, vote="b", commit=0)


def test_a_vote_survives_a_restart() -> None:
    """Figure 2: votedFor is persistent; a restarted server does not vote again."""
    host = Host("a", members("a", "b", "c"), seed=1)
    host.core.step(RequestVote(2, "b", "a", 0, 0))
    host.process(lambda _: host)
    host.restart()
    host.core.step(RequestVote(2, "c", "a", 0, 0))
    answer = host.core.ready().messages[0]
    assert isinstance(answer, RequestVoteResponse) and not answer.granted


def test_votes_go_only_to_candidates_whose_log_is_at_least_as_up_to_date() -> None:
    """§5.4.1: compare last terms, then lengths."""
    cluster = Cluster("a", "b", "c")
    leader = cluster.run_until_leader()
    cluster.core(leader).propose(b"x")
    cluster.deliver()
    follower = next(n for n in cluster.hosts if n != leader)
    core = cluster.core(follower)
    last_index, last_term = core.log.last_index(), core.log.last_term()

    core.step(RequestVote(core.term + 1, "z", follower, last_index - 1, last_term, transfer=True))
    core.step(RequestVote(core.term + 2, "y", follower, last_index, last_term, transfer=True))
    answers = [m for m in core.ready().messages if isinstance(m, RequestVoteResponse)]
    assert [(m.dst, m.granted) for m in answers] == [("z", False), ("y", True)]


def test_prevote_stops_a_rejoining_node_from_deposing_a_healthy_leader() -> None:
    """Thesis §9.6: a cut-off server cannot raise its term, so its return is harmless."""
    cluster = Cluster("a", "b", "c")
    leader = cluster.run_until_leader()
    term = cluster.core(leader).term
    straggler = next(n for n in cluster.hosts if n != leader)
    cluster.isolate(straggler)

    cluster.tick(100)
    assert cluster.core(straggler).term == term
    assert cluster.core(straggler).role is Role.PRECANDIDATE

    cluster.heal()
    cluster.tick(30)
    assert cluster.leaders() == [leader]
    assert cluster.core(leader).term == term


def test_without_prevote_a_rejoining_node_does_depose_the_leader() -> None:
    """Thesis §9.6, the problem PreVote solves: the returning node's higher term wins."""
    cluster = Cluster("a", "b", "c", pre_vote=False, check_quorum=False)
    leader = cluster.run_until_leader()
    term = cluster.core(leader).term
    straggler = next(n for n in cluster.hosts if n != leader)
    cluster.isolate(straggler)
    cluster.tick(100)
    assert cluster.core(straggler).term > term

    cluster.heal()
    cluster.tick(30)
    assert cluster.core(leader).term > term


def test_followers_in_touch_with_a_leader_ignore_vote_requests() -> None:
    """§4.2.3: within an election timeout of hearing from the leader, no (pre-)vote."""
    cluster = Cluster("a", "b", "c")
    leader = cluster.run_until_leader()
    follower = next(n for n in cluster.hosts if n != leader)
    core = cluster.core(follower)
    term = core.term
    last = core.log.last_index()

    core.step(RequestVote(term + 1, "x", follower, last + 5, term + 1))
    assert core.term == term
    assert not core.has_ready() or not core.ready().messages


def test_check_quorum_makes_a_cut_off_leader_step_down() -> None:
    """Thesis §6.2: a leader that hears from no majority for an election timeout steps down."""
    cluster = Cluster("a", "b", "c")
    leader = cluster.run_until_leader()
    cluster.isolate(leader)
    cluster.tick(2 * 10, [leader])
    assert cluster.core(leader).role is Role.FOLLOWER
    assert cluster.core(leader).leader is None


def test_a_single_node_cluster_elects_itself_and_commits() -> None:
    """§5.2 with a majority of one."""
    cluster = Cluster("solo")
    leader = cluster.run_until_leader()
    index = cluster.core(leader).propose(b"x")
    cluster.deliver()
    assert cluster.hosts["solo"].applied_index == index
