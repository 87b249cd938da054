"""kill -9 of the leader: a new leader serves writes; the old one restarts and catches up."""

from __future__ import annotations

import time
from pathlib import Path

from .conftest import Live, LoopThread, fsm_kv_command, running_cluster

FAILOVER_BOUND_S = 5.0  # generous: election 300 ms, on a loaded 2-core machine


def write_keys(live: Live, names: list[str], prefix: str, count: int) -> dict[str, str]:
    written = {}
    for number in range(count):
        key, value = f"{prefix}{number}", f"v{number}-{prefix}"
        assert live.apply_until_ok(names, f"APPLY SET {key} {value}") == "OK OK"
        written[key] = value
    return written


def assert_all_nodes_hold(live: Live, written: dict[str, str]) -> None:
    for name in live.names:
        for key, value in written.items():
            assert live.ask(name, f"LOCAL GET {key}") == f"OK {value}", (name, key)


def test_kill_leader_new_leader_serves_and_old_leader_catches_up(
    tmp_path: Path, loop_thread: LoopThread
) -> None:
    overrides = {"fsm": {"command": fsm_kv_command()}}
    with running_cluster(tmp_path, loop_thread, overrides=overrides) as live:
        old = live.wait_leader()
        old_term = live.status(old)["term"]  # type: ignore[index]
        written = write_keys(live, live.names, "before", 5)

        live.kill(old)
        killed_at = time.monotonic()
        survivors = [name for name in live.names if name != old]
        assert live.apply_until_ok(survivors, "APPLY SET first-after-kill yes") == "OK OK"
        failover = time.monotonic() - killed_at
        print(f"failover: kill -9 of the leader to first acknowledged write: {failover:.3f} s")
        assert failover < FAILOVER_BOUND_S, live.logs()
        written["first-after-kill"] = "yes"

        new = live.wait_leader(survivors)
        assert new != old
        assert live.status(new)["term"] > old_term  # type: ignore[index]
        written |= write_keys(live, survivors, "during", 5)

        live.restart(old)
        live.wait_serving(old)
        written |= write_keys(live, live.names, "after", 3)
        applied = live.wait_converged()
        assert live.wait_leader() == new

        statuses = live.statuses()
        assert {status["applied"] for status in statuses.values() if status} == {applied}
        assert_all_nodes_hold(live, written)
