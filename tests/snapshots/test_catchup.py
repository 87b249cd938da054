"""A follower that was down while the log moved on catches up through a snapshot (§7)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import KV_PY, Live, python_fsm

COMMANDS = 5000


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    cluster = Live(tmp_path, python_fsm(KV_PY), every=500, keep_log=100).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_follower_down_for_5000_commands_catches_up_by_snapshot(live: Live) -> None:
    leader = live.leader()
    lagging = next(name for name in live.names if name != leader)
    live.caught_up()
    live.kill(lagging)

    started = time.monotonic()
    replies = live.apply_all(leader, [f"APPLY SET k{i} v{i}" for i in range(COMMANDS)])
    took = time.monotonic() - started
    assert replies == ["OK OK"] * COMMANDS, [r for r in replies if r != "OK OK"][:5]
    print(f"{COMMANDS} applies in {took:.1f} s ({COMMANDS / took:.0f}/s)")

    # The leader compacted past everything the lagging node has: only a snapshot helps it.
    status = live.status(leader)
    assert status is not None
    assert status["snapshot"]["index"] >= COMMANDS - 500
    assert status["first_index"] > 100, status

    live.restart(lagging)
    commit = live.caught_up(within=60.0)
    assert commit >= COMMANDS

    restored = re.findall(r"node \S+ restored snapshot at index (\d+)", live.log(lagging))
    assert restored, live.log(lagging)[-2000:]
    assert int(restored[-1]) >= status["snapshot"]["index"]
    own = live.status(lagging)
    assert own is not None and own["snapshot"]["index"] >= int(restored[-1])

    keys = [f"k{i}" for i in range(0, COMMANDS, 5)]
    expected = [f"OK v{i}" for i in range(0, COMMANDS, 5)]
    for name in live.names:
        assert live.local_values(name, keys) == expected, name
