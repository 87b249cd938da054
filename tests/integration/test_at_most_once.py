"""At-most-once APPLY (DESIGN §4): a JSON apply retried with the same `client` and `seq` is
applied once, on the leader, through a follower, after a replay of the log and after a
restore from a snapshot.

The command is fsm_kv.py's `INCR key`: its result is the counter's new value, so a second
application would show as a higher number, both in the retry's reply and in a later read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from jepsen.blocking import LineClient

from .conftest import Live, LoopThread, fsm_kv_command, running_cluster, wait_for

KEEP_LOG = 2  # so that a snapshot leaves the session entries out of the log
FILLER = 8  # entries written after the last session entry, before the snapshot


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, loop_thread: LoopThread) -> Iterator[Live]:
    directory = tmp_path_factory.mktemp("at-most-once")
    options: dict[str, Any] = {
        "overrides": {"fsm": {"command": fsm_kv_command()}},
        "snapshot_every": 10_000,  # snapshots only when the test asks for them
        "keep_log": KEEP_LOG,
    }
    with running_cluster(directory, loop_thread, **options) as started:
        yield started


def apply_json(client: LineClient, data: str, seq: int, session: str = "c1") -> dict[str, Any]:
    line = json.dumps({"op": "apply", "data": data, "client": session, "seq": seq})
    reply = json.loads(client.request(line))
    assert isinstance(reply, dict)
    return reply


def result_of(reply: dict[str, Any]) -> str:
    assert reply.get("ok") is True, reply
    result = reply["result"]
    assert isinstance(result, str)
    return result


def counter(live: Live, name: str, key: str) -> str:
    reply = live.ask(name, f"QUERY GET {key}")
    assert reply is not None and reply.startswith("OK "), (name, reply)
    return reply[3:]


def followers(live: Live, leader: str) -> list[str]:
    return [name for name in live.names if name != leader]


def restart_all(live: Live) -> str:
    """kill -9 every node and start them again on their data: the state is rebuilt."""
    for name in live.names:
        live.kill(name)
    for name in live.names:
        live.restart(name)
    for name in live.names:
        live.wait_serving(name)
    return live.wait_leader(within=20.0)


def test_a_plain_retry_is_applied_twice(live: Live) -> None:
    """The control: without client and seq the same command counts twice, so the checks
    below would see a double application."""
    leader = live.wait_leader()

    with live.client(leader) as client:
        assert client.request("APPLY INCR plain") == "OK 1"
        assert client.request("APPLY INCR plain") == "OK 2"


def test_same_seq_twice_on_the_leader_is_applied_once(live: Live) -> None:
    leader = live.wait_leader()

    with live.client(leader) as client:
        first = apply_json(client, "INCR a\n", 1, session="ca")
        again = apply_json(client, "INCR a\n", 1, session="ca")
    assert result_of(first) == "1\n"
    assert result_of(again) == "1\n"
    assert counter(live, leader, "a") == "1"


def test_the_next_seq_is_applied_and_another_client_is_independent(live: Live) -> None:
    leader = live.wait_leader()

    with live.client(leader) as client:
        assert result_of(apply_json(client, "INCR a\n", 2, session="ca")) == "2\n"
        assert result_of(apply_json(client, "INCR a\n", 2, session="other")) == "3\n"
    assert counter(live, leader, "a") == "3"


def test_a_retry_sent_to_a_follower_is_applied_once(live: Live) -> None:
    leader = live.wait_leader()
    follower = followers(live, leader)[0]

    with live.client(leader) as client:
        assert result_of(apply_json(client, "INCR b\n", 1, session="cb")) == "1\n"
    with live.client(follower) as client:  # forwarded to the leader
        assert result_of(apply_json(client, "INCR b\n", 1, session="cb")) == "1\n"
    assert counter(live, follower, "b") == "1"


def test_pipelined_duplicates_in_the_log_are_applied_once(live: Live) -> None:
    """Both copies are proposed before either is applied, so both are in the log: the
    applier, not the leader's early check, must drop the second on every node."""
    leader = live.wait_leader()
    line = json.dumps({"op": "apply", "data": "INCR p\n", "client": "cp", "seq": 1})

    with live.client(leader) as client:
        client.send(f"{line}\n{line}\n".encode())
        replies = [json.loads(client.read_line()) for _ in range(2)]
    assert [result_of(reply) for reply in replies] == ["1\n", "1\n"]

    live.wait_converged()
    for name in live.names:
        assert live.ask(name, "LOCAL GET p") == "OK 1", name


def test_after_a_restart_of_every_node_the_log_replay_still_deduplicates(live: Live) -> None:
    restart_all(live)
    leader = live.wait_leader()
    follower = followers(live, leader)[0]

    with live.client(follower) as client:
        assert result_of(apply_json(client, "INCR b\n", 1, session="cb")) == "1\n"
        assert result_of(apply_json(client, "INCR p\n", 1, session="cp")) == "1\n"
    with live.client(leader) as client:
        assert result_of(apply_json(client, "INCR a\n", 2, session="ca")) == "2\n"
        assert result_of(apply_json(client, "INCR a\n", 3, session="ca")) == "4\n"
    assert counter(live, leader, "a") == "4"
    assert counter(live, leader, "b") == "1"
    assert counter(live, leader, "p") == "1"


def test_after_a_snapshot_and_a_restart_the_table_still_deduplicates(live: Live) -> None:
    leader = live.wait_leader()
    with live.client(leader) as client:
        assert result_of(apply_json(client, "INCR s\n", 1, session="cs")) == "1\n"
        last_session_entry = wait_for(lambda: live.status(leader), 5.0, "STATUS")["commit"]
        for number in range(FILLER):
            assert client.request(f"APPLY SET filler{number} x") == "OK OK"
    live.wait_converged()

    for name in live.names:
        reply = live.ask(name, "SNAPSHOT", 30.0)
        assert reply is not None and reply.startswith("OK "), (name, reply)
    for name, status in live.statuses().items():
        assert status is not None and status["snapshot"] is not None, name
        # The entry of cs/1 is gone from the log: only the snapshot can remember it.
        assert status["first_index"] > last_session_entry, (name, status)

    leader = restart_all(live)
    for name in live.names:
        with live.client(name) as client:
            assert result_of(apply_json(client, "INCR s\n", 1, session="cs")) == "1\n", name
    assert counter(live, leader, "s") == "1"
    with live.client(leader) as client:
        assert result_of(apply_json(client, "INCR s\n", 2, session="cs")) == "2\n"
