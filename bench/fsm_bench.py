"""Cost of one exec-mode call: a program run alone vs through Graft's runner.

    .venv/bin/python bench/fsm_bench.py [RUNS]

For kv.sh (`INCR n`) and for /bin/true (a program that costs almost nothing, to show the
runner's own overhead), prints the median of RUNS calls (default 50): via subprocess.run (the
floor: process start-up), then via ExecStateMachine.apply on asyncio and on uvloop, with the
difference from the floor.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

from graft.fsm import ExecStateMachine

KV = Path(__file__).resolve().parents[1] / "examples" / "fsm-scripts" / "kv.sh"
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@dataclass(frozen=True)
class Settings:
    command: str
    mode: str = "exec"
    timeout_ms: int = 10000
    verbs: dict[str, str] = field(default_factory=dict)


def direct(program: Path, state_dir: Path, runs: int) -> list[float]:
    env = {**os.environ, "GRAFT_NODE_ID": "b", "GRAFT_STATE_DIR": str(state_dir)}
    samples = []
    for i in range(runs):
        env["GRAFT_INDEX"], env["GRAFT_TERM"] = str(i + 1), "1"
        start = time.perf_counter()
        subprocess.run(
            [str(program), "apply"], input=b"INCR n\n", env=env, capture_output=True, check=False
        )
        samples.append(time.perf_counter() - start)
    return samples


def through_runner(program: Path, state_dir: Path, runs: int, loop: str) -> list[float]:
    async def main() -> list[float]:
        sm = ExecStateMachine(Settings(str(program)), node_id="b", state_dir=state_dir)
        samples = []
        for i in range(runs):
            start = time.perf_counter()
            await sm.apply(b"INCR n\n", i + 1, 1)
            samples.append(time.perf_counter() - start)
        return samples

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        return runner.run(main())


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    print(f"median of {runs} calls of `PROGRAM apply` (stdin: INCR n)")
    for program in (KV, Path("/bin/true")):
        with tempfile.TemporaryDirectory() as tmp:
            floor = median_ms(direct(program, Path(tmp), runs))
            print(f"  {program.name:6} subprocess.run (the floor)     {floor:7.2f} ms")
            for loop in LOOPS:
                runner = median_ms(through_runner(program, Path(tmp), runs, loop))
                print(
                    f"  {program.name:6} ExecStateMachine on {loop:8}  {runner:7.2f} ms"
                    f"   overhead {runner - floor:+.2f} ms"
                )


if __name__ == "__main__":
    main()
