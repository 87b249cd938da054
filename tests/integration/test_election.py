"""Three real nodes elect one leader; followers forward, or redirect with api.forward off."""

from __future__ import annotations

from pathlib import Path

from .conftest import Live, LoopThread, fsm_kv_command, running_cluster


def test_three_nodes_agree_on_one_leader_and_term(calm: Live) -> None:
    leader = calm.wait_leader()

    statuses = calm.statuses()
    roles = sorted(status["role"] for status in statuses.values() if status)
    assert roles == ["follower", "follower", "leader"], statuses
    assert {status["term"] for status in statuses.values() if status} == {
        statuses[leader]["term"]  # type: ignore[index]
    }
    for name, status in statuses.items():
        assert status is not None and status["id"] == name
        assert status["members"] == sorted(calm.names)
        assert status["health"] == "ok"


def test_apply_on_a_follower_is_forwarded_and_answered_with_the_fsm_output(calm: Live) -> None:
    leader = calm.wait_leader()
    followers = [name for name in calm.names if name != leader]

    for number, follower in enumerate(followers):
        assert calm.ask(follower, f"APPLY SET forwarded{number} from-{follower}") == "OK OK"
        # GRAFT_INDEX / GRAFT_TERM reach the FSM: the entry's term is the leader's term.
        where = calm.ask(follower, "APPLY WHERE")
        assert where is not None and where.startswith("OK "), where
        index, term = (int(word) for word in where[3:].split())
        status = calm.status(leader)
        assert status is not None and term == status["term"] and 0 < index <= status["commit"]
        assert calm.ask(leader, f"QUERY GET forwarded{number}") == f"OK from-{follower}"

    # The FSM's own error output travels back through the forwarding follower as well.
    reply = calm.ask(followers[0], "APPLY GET absent-key")
    assert reply is not None and reply.startswith("ERR FSM "), reply
    assert "no such key: absent-key" in reply


def test_with_forward_off_a_follower_redirects_to_the_leader(
    tmp_path: Path, loop_thread: LoopThread
) -> None:
    overrides = {"fsm": {"command": fsm_kv_command()}, "api": {"forward": False}}
    with running_cluster(tmp_path, loop_thread, overrides=overrides) as live:
        leader = live.wait_leader()
        leader_api = live.node(leader).api

        for follower in (name for name in live.names if name != leader):
            for line in ("APPLY SET k v", "QUERY GET k"):
                assert live.ask(follower, line) == f"REDIRECT {leader} 127.0.0.1:{leader_api}"
        # Nothing was applied through the followers; the leader itself serves.
        assert live.ask(leader, "QUERY GET k") == "ERR FSM exit status 1: no such key: k"
        assert live.ask(leader, "APPLY SET k v") == "OK OK"
        live.wait_converged()
        for name in live.names:
            assert live.ask(name, "LOCAL GET k") == "OK v"
