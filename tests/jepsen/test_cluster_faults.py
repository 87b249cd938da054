"""Real graft clusters under faults: no anomaly in safe mode, and planted bugs reported.

These start real `graft start` processes (DESIGN §6), so they need the node runtime.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .nemesis import isolate_leader_schedule
from .run import RunConfig, RunResult, reproduce_command, run_and_check


def run(config: RunConfig, directory: Path) -> RunResult:
    return run_and_check(config, directory)


def explain(result: RunResult) -> str:
    return (
        f"{result.report.render()}\nfiles: {result.directory}\n"
        f"reproduce: {reproduce_command(result.config)}"
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("nodes", "seed"), [(3, 11), (5, 12)])
def test_mixed_faults_show_no_anomaly(nodes: int, seed: int, run_dir: Path) -> None:
    result = run(RunConfig(seed, nodes=nodes, duration=15.0), run_dir)

    assert result.faults >= 4, explain(result)
    # Enough acknowledged operations that the check is not vacuous (5 nodes on 2 cores,
    # each apply starting an interpreter on every node, serve a few per second).
    assert sum(op.outcome == "ok" for op in result.ops) >= 20, explain(result)
    assert result.report.valid, explain(result)
    assert not result.report.inconclusive, explain(result)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("unsafe", "pause_first"), [("stale-reads", True), ("early-ack", False)])
def test_planted_bug_is_reported(unsafe: str, pause_first: bool, run_dir: Path) -> None:
    schedule = isolate_leader_schedule(rounds=3, pause_first=pause_first)
    config = RunConfig(
        21, nodes=3, duration=15.0, unsafe=unsafe, schedule=schedule, clients_per_node=3
    )
    result = run(config, run_dir)

    assert result.faults == 3
    assert not result.report.valid, f"the {unsafe} bug went unnoticed\n{explain(result)}"
    for anomaly in result.report.anomalies:
        assert anomaly.key and anomaly.ops, anomaly.render()
        assert all(op.index >= 0 for op in anomaly.ops)
    assert (run_dir / "history.jsonl").stat().st_size > 0
