"""A large state reaches a follower as a stream: the receiver never holds it in memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import STATE_PY, Live, big_state_transfer, python_fsm

MB = 1 << 20
SIZE = 10 * MB  # bench/snapshot_bench.py --state-mb 50 runs the 50 MB version


def test_big_state_streams_to_follower_in_bounded_memory(tmp_path: Path) -> None:
    live = Live(tmp_path, python_fsm(STATE_PY), every=1_000_000, keep_log=0).start()
    try:
        result = big_state_transfer(live, SIZE)
    finally:
        live.stop()

    print(
        f"{result['state_bytes'] / MB:.1f} MB state installed in {result['transfer_s']:.2f} s;"
        f" receiver RSS resting {result['resting_rss'] / MB:.1f} MB, peak"
        f" {result['peak_rss'] / MB:.1f} MB (+{result['growth'] / MB:.1f} MB),"
        f" VmHWM {result['vm_hwm'] / MB:.1f} MB, {result['samples']:.0f} samples"
    )
    assert result["samples"] >= 3  # the sampler really watched the transfer
    assert result["growth"] < SIZE / 2, result


@pytest.mark.soak
def test_50mb_state_streams_to_follower_in_bounded_memory(tmp_path: Path) -> None:
    live = Live(tmp_path, python_fsm(STATE_PY), every=1_000_000, keep_log=0).start()
    try:
        result = big_state_transfer(live, 50 * MB)
    finally:
        live.stop()

    print(f"50 MB: {result}")
    assert result["growth"] < 50 * MB / 4, result
