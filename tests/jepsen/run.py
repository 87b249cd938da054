"""One fault-injection run: start a cluster, drive clients while the nemesis injects a
schedule, heal, read the lists one last time, check the history."""

from __future__ import annotations

import asyncio
import json
import random
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .checker import Report, check_history
from .client import Connection, Recorder, Workload, perform, run_client
from .cluster import Cluster
from .history import LIST_READ, OK, Op, number, save
from .nemesis import Fault, Nemesis, draw_schedule

FINAL_READ_WITHIN = 20.0  # seconds a healed cluster gets to answer the final reads


@dataclass
class RunConfig:
    seed: int
    nodes: int = 3
    duration: float = 20.0
    clients_per_node: int = 2
    unsafe: str = ""  # GRAFT_TEST_UNSAFE for the nodes, e.g. "stale-reads"
    client_timeout: float = 2.0
    schedule: list[Fault] | None = None  # None: drawn from the seed


@dataclass
class RunResult:
    config: RunConfig
    directory: Path
    ops: list[Op] = field(default_factory=list)
    faults: int = 0
    report: Report = field(default_factory=Report)
    final_lists: dict[str, list[object]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.report.valid and not self.report.inconclusive


def reproduce_command(config: RunConfig) -> str:
    words = [
        ".venv/bin/python",
        "-m",
        "tests.jepsen.soak",
        "--seed",
        str(config.seed),
        "--nodes",
        str(config.nodes),
        "--duration",
        str(config.duration),
    ]
    if config.unsafe:
        words += ["--unsafe", config.unsafe]
    return shlex.join(words)


def run_and_check(config: RunConfig, directory: Path) -> RunResult:
    """Run the cluster and the workload, then check the history outside the event loop.
    The history, schedule, report and node logs stay in directory."""
    directory.mkdir(parents=True, exist_ok=True)
    result = RunResult(config, directory)
    asyncio.run(execute(result))
    save(result.ops, directory / "history.jsonl")
    (directory / "final-lists.json").write_text(json.dumps(result.final_lists))
    result.report = check_history(result.ops, result.final_lists)
    (directory / "report.txt").write_text(result.report.render() + "\n")
    return result


async def execute(result: RunResult) -> None:
    config = result.config
    env = {"GRAFT_TEST_UNSAFE": config.unsafe} if config.unsafe else {}
    cluster = Cluster(result.directory, size=config.nodes, env=env)
    try:
        await cluster.start()
        await drive(cluster, config, result)
    finally:
        await cluster.stop()


async def drive(cluster: Cluster, config: RunConfig, result: RunResult) -> None:
    rng = random.Random(config.seed)
    names = list(cluster.nodes)
    schedule = config.schedule or draw_schedule(config.seed, names, config.duration)
    lines = [fault.describe() for fault in schedule]
    (result.directory / "schedule.txt").write_text("\n".join(lines) + "\n")  # noqa: ASYNC240
    recorder, workload = Recorder(), Workload()
    running = asyncio.Event()
    running.set()
    nemesis = Nemesis(cluster)
    clients = [
        asyncio.create_task(
            run_client(
                recorder,
                workload,
                Connection(cluster.api_ports, names[i % len(names)], config.client_timeout),
                random.Random(rng.random()),
                running.is_set,
            )
        )
        for i in range(config.clients_per_node * len(names))
    ]
    try:
        await nemesis.run(schedule, running)
    finally:
        running.clear()
        await asyncio.gather(*clients, return_exceptions=True)
        await nemesis.heal_all()
    result.faults = nemesis.injected
    cluster.raise_if_exited()
    await cluster.wait_leader(20.0)
    result.final_lists = await final_reads(cluster, recorder, workload)
    result.ops = number(recorder.ops)


async def final_reads(
    cluster: Cluster, recorder: Recorder, workload: Workload
) -> dict[str, list[object]]:
    """Read every list once the cluster is healed, retrying until a read succeeds."""
    finals: dict[str, list[object]] = {}
    connection = Connection(cluster.api_ports, next(iter(cluster.nodes)), 3.0)
    process = recorder.new_process()
    deadline = recorder.now() + FINAL_READ_WITHIN
    try:
        for key in workload.lists:
            while key not in finals:
                op = await perform(recorder, connection, Op(process, LIST_READ, key))
                if op.outcome == OK:
                    finals[key] = list(op.result or [])  # type: ignore[call-overload]
                elif recorder.now() > deadline:
                    raise RuntimeError(f"no final read of {key} succeeded after healing")
                else:
                    await asyncio.sleep(0.25)
    finally:
        connection.drop()
    return finals


def summary(result: RunResult) -> str:
    return (
        f"seed {result.config.seed} nodes {result.config.nodes}: {len(result.ops)} ops, "
        f"{result.faults} faults, {len(result.report.anomalies)} anomalies"
    )


def main_one(config: RunConfig, directory: Path) -> RunResult:
    result = run_and_check(config, directory)
    print(summary(result), file=sys.stderr)
    return result
