"""`graft start` under process control (DESIGN §6): SIGTERM and SIGINT stop it cleanly with
status 0, the data-directory lock refuses a second node, and `graft stop ID` stops one."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from jepsen.cluster import graft_command

from .conftest import Live, LoopThread, fsm_kv_command, running_cluster

PROMPT_S = 5.0  # a clean stop of an idle node, on a loaded machine


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, loop_thread: LoopThread) -> Iterator[Live]:
    directory = tmp_path_factory.mktemp("single")
    overrides = {"fsm": {"command": fsm_kv_command()}}
    with running_cluster(directory, loop_thread, size=1, overrides=overrides) as live:
        yield live


def running(live: Live) -> subprocess.Popen[bytes]:
    """The node's process, started again if an earlier test stopped it."""
    name = live.names[0]
    live.restart(name)
    live.wait_serving(name)
    live.wait_leader()
    process = live.node(name).process
    assert process is not None
    return process


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_node_with_status_0_promptly(single: Live, sig: signal.Signals) -> None:
    process = running(single)
    name = single.names[0]
    assert single.ask(name, f"APPLY SET before-{sig.name} yes") == "OK OK"

    started = time.monotonic()
    process.send_signal(sig)
    code = process.wait(timeout=PROMPT_S + 10)
    took = time.monotonic() - started
    print(f"{sig.name}: exit {code} after {took:.2f} s")
    assert code == 0, single.logs()
    assert took < PROMPT_S
    assert f"node {name} stopped" in single.cluster.log_tail(name, 5)

    # The stop was clean: the node starts again on its data dir with the write applied.
    running(single)
    assert single.ask(name, f"QUERY GET before-{sig.name}") == "OK yes"


def test_second_start_on_the_same_data_dir_fails_at_once(single: Live) -> None:
    first = running(single)
    node = single.node(single.names[0])
    command = [*graft_command(), "start", node.id, "--config", str(node.config)]

    started = time.monotonic()
    second = subprocess.run(
        [*command, "--data-dir", str(node.data_dir)], capture_output=True, text=True, timeout=30
    )
    took = time.monotonic() - started

    assert second.returncode != 0
    assert str(node.data_dir) in second.stderr, second.stderr
    assert "lock" in second.stderr.lower() or str(first.pid) in second.stderr, second.stderr
    assert took < 10.0
    assert first.poll() is None, "the first node must keep running"
    assert single.ask(node.id, "APPLY SET still-serving yes") == "OK OK"


def test_graft_stop_stops_a_running_node(single: Live) -> None:
    process = running(single)
    node = single.node(single.names[0])
    command = [*graft_command(), "stop", node.id, "--config", str(node.config)]

    result = subprocess.run(
        [*command, "--data-dir", str(node.data_dir)], capture_output=True, text=True, timeout=30
    )

    assert result.returncode == 0, result.stderr
    assert str(process.pid) in result.stdout + result.stderr
    assert process.wait(timeout=5) == 0
    assert single.ask(node.id, "PING", 1.0) is None

    # Nothing runs there any more: a second `graft stop` says so and fails.
    again = subprocess.run(
        [*command, "--data-dir", str(node.data_dir)], capture_output=True, text=True, timeout=30
    )
    assert again.returncode != 0
    assert "no node is running" in again.stderr
