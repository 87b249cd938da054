"""Seeded fault schedules: 2,000 by default, longer soaks behind `-m soak`.

Every schedule checks the five safety properties of Figure 3 after every step and liveness
after the faults heal (tests/sim/cluster.py). A failure names the property and prints the
command that replays the schedule, e.g.

    GRAFT_SIM_SEED=1234 GRAFT_SIM_NODES=5 GRAFT_SIM_STEPS=500 .venv/bin/pytest tests/sim -k replay
"""

from __future__ import annotations

import os

import pytest

from .cluster import run_schedule

STEPS = 500
BLOCK = 100
# (cluster size, number of blocks of BLOCK seeds): 800 + 700 + 500 = 2,000 schedules.
PLAN = {3: 8, 5: 7, 7: 5}
BLOCKS = [(nodes, block) for nodes, count in PLAN.items() for block in range(count)]


@pytest.mark.parametrize(("nodes", "block"), BLOCKS, ids=[f"{n}nodes-{b}" for n, b in BLOCKS])
def test_seeded_schedules_keep_raft_safe_and_live(nodes: int, block: int) -> None:
    """Figure 3 properties hold after every step; after healing a leader commits (§5)."""
    steps_run = 0
    for seed in range(block * BLOCK, (block + 1) * BLOCK):
        cluster = run_schedule(seed, nodes, STEPS)
        steps_run += cluster.step_no
    assert steps_run == BLOCK * STEPS


def test_replay() -> None:
    """Replays the schedule named by GRAFT_SIM_SEED / _NODES / _STEPS (default: seed 0)."""
    seed = int(os.environ.get("GRAFT_SIM_SEED", "0"))
    nodes = int(os.environ.get("GRAFT_SIM_NODES", "3"))
    steps = int(os.environ.get("GRAFT_SIM_STEPS", str(STEPS)))
    cluster = run_schedule(seed, nodes, steps)
    assert cluster.step_no == steps
    assert cluster.checker.committed, "the schedule committed nothing"


def test_a_schedule_replays_identically() -> None:
    """Determinism: the same seed gives the same history, which is what makes replay work."""
    first = run_schedule(42, 5, STEPS)
    second = run_schedule(42, 5, STEPS)
    assert first.checker.committed == second.checker.committed
    assert first.network.sent == second.network.sent
    assert first.now == second.now


@pytest.mark.soak
def test_soak() -> None:
    """GRAFT_SIM_SOAK_SEEDS schedules per size (default 10,000), from seed 1,000,000."""
    count = int(os.environ.get("GRAFT_SIM_SOAK_SEEDS", "10000"))
    steps = int(os.environ.get("GRAFT_SIM_SOAK_STEPS", "2000"))
    for seed in range(1_000_000, 1_000_000 + count):
        for nodes in (3, 5, 7):
            run_schedule(seed, nodes, steps)
