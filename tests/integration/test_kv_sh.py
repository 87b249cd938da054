"""examples/fsm-scripts/kv.sh as the FSM of a three-node cluster, end to end.

kv.sh runs unchanged; a one-line bash wrapper in front of it records the verb, GRAFT_INDEX
and GRAFT_TERM of every call so that the test can check what Graft handed it.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from .conftest import KV_SH, Live, LoopThread, running_cluster

CALLS = "calls.log"  # in $GRAFT_STATE_DIR, next to kv.json
WRAPPER = (
    'printf "%s %s %s\\n" "$1" "${GRAFT_INDEX:--}" "${GRAFT_TERM:--}" >>"$GRAFT_STATE_DIR/'
    + CALLS
    + '"; exec "$0" "$1"'
)


def kv_command() -> str:
    """bash -c WRAPPER KV_SH; Graft appends the verb, so $0 is kv.sh and $1 the verb."""
    return shlex.join(["bash", "-c", WRAPPER, str(KV_SH)])


def calls(live: Live, name: str) -> list[tuple[str, str, str]]:
    text = (live.node(name).data_dir / "fsm" / CALLS).read_text()
    return [tuple(line.split()) for line in text.splitlines()]  # type: ignore[misc]


def applies(live: Live, name: str) -> list[tuple[int, int]]:
    """(GRAFT_INDEX, GRAFT_TERM) of every apply since the node's last load."""
    since_load: list[tuple[int, int]] = []
    for verb, index, term in calls(live, name):
        if verb == "load":
            since_load = []
        elif verb == "apply":
            since_load.append((int(index), int(term)))
    return since_load


def test_kv_sh_set_get_incr_del_replicated_and_rebuilt_after_restart(
    tmp_path: Path, loop_thread: LoopThread
) -> None:
    overrides = {"fsm": {"command": kv_command(), "timeout": 10000}}
    with running_cluster(tmp_path, loop_thread, overrides=overrides) as live:
        leader = live.wait_leader()
        follower = next(name for name in live.names if name != leader)
        term = live.status(leader)["term"]  # type: ignore[index]

        assert live.ask(follower, "APPLY SET name Ada Lovelace") == "OK OK"
        assert live.ask(leader, "QUERY GET name") == "OK Ada Lovelace"
        assert [live.ask(follower, "APPLY INCR hits") for _ in range(3)] == [
            "OK 1",
            "OK 2",
            "OK 3",
        ]
        reply = live.ask(leader, "APPLY INCR name")
        assert reply == "ERR FSM exit status 1: kv.sh: INCR name: not an integer: Ada Lovelace"
        assert live.ask(follower, "APPLY set temp x") == "OK OK"  # commands are case-blind
        assert live.ask(leader, "APPLY DEL temp") == "OK 1"
        assert live.ask(leader, "APPLY DEL temp") == "OK 0"
        assert (
            live.ask(follower, "QUERY GET temp")
            == "ERR FSM exit status 1: kv.sh: no such key: temp"
        )
        reply = live.ask(follower, "QUERY SET name nobody")
        assert reply is not None and reply.startswith("ERR FSM exit status 1: kv.sh: a query")
        applied = live.wait_converged()

        # Every node applied the same entries with strictly increasing GRAFT_INDEX (the
        # leader's empty entry is skipped) and the term they were written in.
        seen = {name: applies(live, name) for name in live.names}
        assert len({json.dumps(entries) for entries in seen.values()}) == 1, seen
        entries = seen[leader]
        assert len(entries) == 8
        indexes = [index for index, _ in entries]
        assert indexes == sorted(set(indexes)) and indexes[0] >= 2 and indexes[-1] == applied
        assert {entry_term for _, entry_term in entries} == {term}

        # Restart a follower on a state file that is wrong on purpose: load (empty: reset)
        # and the replay of the log must rebuild the state, not trust kv.json.
        live.kill(follower)
        state = live.node(follower).data_dir / "fsm" / "kv.json"
        state.write_text(json.dumps({"hits": "999", "bogus": "x"}) + "\n")
        live.restart(follower)
        live.wait_serving(follower)
        live.wait_converged()
        assert live.ask(follower, "LOCAL GET hits") == "OK 3"
        assert live.ask(follower, "LOCAL GET name") == "OK Ada Lovelace"
        assert live.ask(follower, "LOCAL GET bogus") == (
            "ERR FSM exit status 1: kv.sh: no such key: bogus"
        )
        assert [index for index, _ in applies(live, follower)] == indexes
        assert live.ask(follower, "APPLY INCR hits") == "OK 4"
        assert live.ask(leader, "QUERY GET hits") == "OK 4"
