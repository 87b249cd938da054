"""Membership changes on real processes (DESIGN §4, §6; thesis §4.1-§4.2): `graft members add`
of a fourth node (learner, catch-up, voter), `graft members remove`, removing the leader, and
what ADD answers while another change is in progress or for a member already there.

The tests share one cluster and run in file order; each leaves it with the three original
voters (the last one removes the leader, so it comes last).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from jepsen.cluster import Node, free_ports

from .conftest import Live, LoopThread, fsm_kv_command, running_cluster, wait_for

FSM_TIMEOUT_MS = 1000  # ADD gives a learner fsm.timeout + 5 election timeouts to catch up


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, loop_thread: LoopThread) -> Iterator[Live]:
    directory = tmp_path_factory.mktemp("membership")
    overrides = {"fsm": {"command": fsm_kv_command(), "timeout": FSM_TIMEOUT_MS}}
    with running_cluster(directory, loop_thread, overrides=overrides) as started:
        yield started


def members(live: Live, name: str) -> dict[str, Any] | None:
    reply = live.ask(name, "MEMBERS", 2.0)
    if reply is None or not reply.startswith("OK "):
        return None
    parsed = json.loads(reply[3:])
    assert isinstance(parsed, dict)
    return parsed


def voters_everywhere(live: Live, names: list[str], expected: set[str]) -> None:
    """Wait until MEMBERS on each of names lists exactly expected as voters, no learner."""

    def agreed() -> bool:
        for name in names:
            seen = members(live, name)
            if seen is None or set(seen["voters"]) != expected or seen["learners"]:
                return False
        return True

    wait_for(agreed, 10.0, f"voters {sorted(expected)} on {names}")


def plan_node(live: Live, name: str) -> Node:
    """A new node's ports and files: its graft.yaml lists itself and the current members
    (dialled directly, not through the proxy); the members' own files never list it."""
    cluster = live.cluster
    p2p, api = free_ports(2)
    home = cluster.directory / name
    home.mkdir(parents=True, exist_ok=True)
    node = Node(name, p2p, api, home / "graft.yaml", home / "data", home / "node.log")
    cluster.nodes[name] = node  # from here on, the harness kills it on the way out

    config = cluster.config_for(node, lambda _src, dst: cluster.nodes[dst].p2p)
    node.config.write_text(yaml.safe_dump(config, sort_keys=False))
    return node


def leader_among(live: Live, names: list[str]) -> str | None:
    leader = live.leader(names)
    return leader if leader in names else None


def assert_local(live: Live, name: str, key: str, value: str) -> None:
    wait_for(
        lambda: live.ask(name, f"LOCAL GET {key}") == f"OK {value}",
        10.0,
        f"{key}={value} on {name}",
    )


def test_add_a_fourth_node_then_remove_it(live: Live) -> None:
    originals = live.names
    leader = live.wait_leader(originals)
    for number in range(5):
        assert live.ask(leader, f"APPLY SET before{number} v{number}") == "OK OK"

    new = plan_node(live, "n4")
    live.cluster.launch(new)
    live.wait_serving("n4")
    member = originals[0]
    started = time.monotonic()
    done = live.cli(member, "members", "add", "n4", "127.0.0.1", str(new.p2p), str(new.api))
    print(f"graft members add n4 (CLI, with its start-up): {time.monotonic() - started:.2f} s")
    assert done.returncode == 0, (done, live.logs())
    assert done.stdout.strip() == "added n4", done

    everyone = [*originals, "n4"]
    voters_everywhere(live, everyone, set(everyone))
    for number in range(5):
        assert_local(live, "n4", f"before{number}", f"v{number}")
    assert live.apply_until_ok(originals, "APPLY SET after-add yes") == "OK OK"
    assert_local(live, "n4", "after-add", "yes")
    leader = live.wait_leader(everyone)
    assert "n4" in live.status(leader)["members"]  # type: ignore[index]

    done = live.cli(member, "members", "remove", "n4")
    assert done.returncode == 0, (done, live.logs())
    assert done.stdout.strip() == "removed n4", done
    voters_everywhere(live, originals, set(originals))
    live.kill("n4")  # the three left must carry on alone
    assert live.apply_until_ok(originals, "APPLY SET after-remove yes") == "OK OK"
    for name in originals:
        assert_local(live, name, "after-remove", "yes")
    assert "n4" not in live.status(live.wait_leader(originals))["members"]  # type: ignore[index]
    del live.cluster.nodes["n4"]  # killed above; no longer part of the cluster


def test_a_second_add_while_one_is_in_progress(live: Live) -> None:
    """docs/api.md, membership changes: BUSY while the last change is uncommitted; REFUSED
    for an id already in the configuration (voter, or learner still catching up); another
    id added while a learner catches up proceeds; TIMEOUT (it stays a learner) when the new
    node does not catch up in time. The added nodes never run, so they never catch up."""
    originals = live.names
    leader = live.wait_leader(originals)
    absent = free_ports(6)

    def add(name: str, slot: int) -> str:
        return f"ADD {name} 127.0.0.1 {absent[slot]} {absent[slot + 1]}\n"

    with live.client(leader, 15.0) as first, live.client(leader, 15.0) as during:
        # Pipelined: the second ADD runs while the first one's entry is still uncommitted.
        first.send((add("n5", 0) + add("n6", 2)).encode())
        wait_for(lambda: "n5" in (members(live, leader) or {}).get("learners", []), 5.0, "n5")
        for existing in ("n5", originals[1]):
            reply = live.ask(leader, add(existing, 2).strip())
            assert reply is not None and reply.startswith("ERR REFUSED"), (existing, reply)
            assert "already a member" in reply, reply
        during.send(add("n7", 4).encode())  # n5 is catching up: this one proceeds

        replies = [first.read_line(), first.read_line(), during.read_line()]
    assert replies[0].startswith("ERR TIMEOUT n5 did not catch up; it stays a learner"), replies
    assert replies[1].startswith("ERR BUSY"), replies
    assert replies[2].startswith("ERR TIMEOUT n7 did not catch up; it stays a learner"), replies

    seen = members(live, leader)
    assert seen is not None and seen["learners"] == ["n5", "n7"], seen
    assert set(seen["voters"]) == set(originals), seen
    assert live.ask(leader, "REMOVE n5") == "OK removed n5"
    assert live.ask(leader, "REMOVE n7") == "OK removed n7"
    voters_everywhere(live, originals, set(originals))
    reply = live.ask(leader, "REMOVE n5")
    assert reply is not None and reply.startswith("ERR REFUSED"), reply
    assert live.ask(leader, "APPLY SET after-learners-removed yes") == "OK OK"


def test_repeating_an_add_finishes_it(live: Live) -> None:
    """An ADD cut short after its first change (here: the node was not running, so it
    stayed a learner) is finished by sending the same ADD again; once added, the same ADD
    answers at once. The cluster ends with the original voters again."""
    originals = live.names
    leader = live.wait_leader(originals)
    new = plan_node(live, "n8")  # planned, not started yet
    add = f"ADD n8 127.0.0.1 {new.p2p} {new.api}"

    first = live.ask(leader, add, 30.0)
    assert first is not None and first.startswith("ERR TIMEOUT n8 did not catch up"), first
    assert members(live, leader)["learners"] == ["n8"]  # type: ignore[index]

    live.cluster.launch(new)
    live.wait_serving("n8")
    assert live.ask(leader, add, 30.0) == "OK added n8"
    everyone = [*originals, "n8"]
    voters_everywhere(live, everyone, set(everyone))
    assert live.ask(leader, add, 5.0) == "OK added n8"

    assert live.ask(leader, "REMOVE n8", 15.0) == "OK removed n8"
    voters_everywhere(live, originals, set(originals))
    live.kill("n8")
    del live.cluster.nodes["n8"]
    assert live.apply_until_ok(originals, "APPLY SET after-repeated-add yes") == "OK OK"


def test_remove_the_leader_then_the_others_elect_a_new_one(live: Live) -> None:
    """Thesis §4.2.2: the removed leader steps down once the change commits."""
    originals = live.names
    old = live.wait_leader(originals)
    rest = [name for name in originals if name != old]

    assert live.ask(old, f"REMOVE {old}", 15.0) == f"OK removed {old}"
    removed_at = time.monotonic()
    new = wait_for(lambda: leader_among(live, rest), 10.0, f"a new leader among {rest}")
    print(f"remove the leader {old}: {new} leads {time.monotonic() - removed_at:.2f} s later")
    voters_everywhere(live, rest, set(rest))
    assert live.apply_until_ok(rest, "APPLY SET after-leader-removed yes") == "OK OK"
    for name in rest:
        assert_local(live, name, "after-leader-removed", "yes")
    status = live.status(old)
    assert status is not None and status["role"] != "leader", status
