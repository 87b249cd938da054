"""End-to-end numbers of a three-node Graft cluster on 127.0.0.1.

For each FSM (kv.sh in exec mode, kv.py in stream mode) it starts a fresh cluster with the
default timings (election 350 ms, heartbeat 35 ms) and measures:

- writes/s and p50/p99 latency, closed loop, at 1 and 16 clients (graft.cli.loadgen.measure:
  each client its own connection to the leader, `APPLY SET k<n> <100-byte value>`);
- the RSS of every node after that load;
- for kv.sh: one `kv.sh apply` run directly (GRAFT_STATE_DIR on a copy of the leader's state)
  next to the write latency at 1 client;
- failover: kill -9 the leader; from just before the kill, a fresh write at each survivor
  every 5 ms until one succeeds; the killed node is restarted on its data dir and caught up
  before the next kill.

    .venv/bin/python bench/cluster_bench.py [--fsm kv.sh|kv.py|both] [--reps 3]
        [--seconds 5] [--kills 5] [--json FILE]

Medians over reps, with (min-max). It stops only the processes it started, by PID, also on
Ctrl-C. The machine's load average is printed with the results (the box may be shared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cluster import SCRIPTS, LocalCluster, ask, rss_mib  # noqa: E402

from graft.cli.loadgen import find_leader, measure  # noqa: E402

VALUE = "v" * 100
PAYLOAD = "SET k{n} " + VALUE
PROBE_EVERY = 0.005  # s between two rounds of failover probes
PROBE_TIMEOUT = 5.0  # s a probe may take: more than one exec-mode apply on a loaded box
FAILOVER_MAX = 30.0  # s before a kill is given up as "no new leader"
CATCH_UP_MAX = 120.0  # s a restarted node gets to apply everything the leader committed

Endpoint = tuple[str, int]


def med_range(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(summary: dict[str, float] | None, spec: str = ".1f") -> str:
    if summary is None:
        return "n/a"
    return f"{summary['median']:{spec}} ({summary['min']:{spec}}-{summary['max']:{spec}})"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- throughput and latency ---------------------------------------------------------------


def run_load(cluster: LocalCluster, clients: int, reps: int, seconds: float) -> dict[str, Any]:
    """`reps` closed-loop runs at `clients` clients; medians and ranges."""
    runs = []
    for rep in range(reps):
        result = asyncio.run(
            measure(cluster.endpoints, clients=clients, seconds=seconds, payload=PAYLOAD)
        )
        run: dict[str, Any] = {
            "writes_per_s": result.throughput,
            "p50_ms": result.percentile(50),
            "p99_ms": result.percentile(99),
            "ok": result.ok,
            "errors": result.errors,
            "load": load_average(),
        }
        print(f"  c={clients} rep {rep}: {result.summary()} load {run['load']}", flush=True)
        runs.append(run)
    return {
        "clients": clients,
        "runs": runs,
        "writes_per_s": med_range([r["writes_per_s"] for r in runs]),
        "p50_ms": med_range([r["p50_ms"] for r in runs]),
        "p99_ms": med_range([r["p99_ms"] for r in runs]),
    }


# -- the cost of one kv.sh call -------------------------------------------------------------


def direct_call_ms(state_source: Path, calls: int) -> dict[str, float] | None:
    """Median wall time of `kv.sh apply` run alone, on a copy of a node's FSM state."""
    state_dir = Path(tempfile.mkdtemp(prefix="graft-kvsh-"))
    try:
        kv_json = state_source / "kv.json"
        if kv_json.exists():
            shutil.copy(kv_json, state_dir / "kv.json")
        env = {**os.environ, "GRAFT_STATE_DIR": str(state_dir), "GRAFT_NODE_ID": "bench"}
        times = []
        for i in range(calls):
            env.update(GRAFT_INDEX=str(i + 1), GRAFT_TERM="1")
            started = time.perf_counter()
            subprocess.run(
                [str(SCRIPTS / "kv.sh"), "apply"],
                input=f"SET direct{i} {VALUE}\n".encode(),
                env=env,
                capture_output=True,
                check=True,
                timeout=10,
            )
            times.append((time.perf_counter() - started) * 1000)
        return med_range(times)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


# -- failover -----------------------------------------------------------------------------


async def _probe(endpoint: Endpoint, n: int, found: list[float]) -> None:
    try:
        reply = await ask(endpoint, f"APPLY SET failover{n} {VALUE}", PROBE_TIMEOUT)
    except (OSError, TimeoutError):
        return
    if reply.startswith("OK"):
        found.append(time.monotonic())


async def _first_write(survivors: Sequence[Endpoint], t0: float) -> float | None:
    """Fire a fresh write at each survivor every PROBE_EVERY s; ms from t0 to the first OK."""
    found: list[float] = []
    pending: set[asyncio.Task[None]] = set()
    n = 0
    while not found and time.monotonic() - t0 < FAILOVER_MAX:
        for endpoint in survivors:
            n += 1
            pending.add(asyncio.create_task(_probe(endpoint, n, found)))
        await asyncio.sleep(PROBE_EVERY)
        pending = {task for task in pending if not task.done()}
    if pending:  # a probe in flight may have committed earlier than the one that answered
        await asyncio.wait(pending, timeout=PROBE_TIMEOUT + 0.5)
    return (min(found) - t0) * 1000 if found else None


async def _first_leader(survivors: Sequence[Endpoint], t0: float) -> float | None:
    """ms from t0 until a survivor's STATUS says leader (polled every 20 ms)."""
    while time.monotonic() - t0 < FAILOVER_MAX:
        for status in await asyncio.gather(*(_status(e) for e in survivors)):
            if status and status.get("role") == "leader":
                return (time.monotonic() - t0) * 1000
        await asyncio.sleep(0.02)
    return None


async def _failover(survivors: Sequence[Endpoint], t0: float) -> tuple[float | None, float | None]:
    elected, written = await asyncio.gather(
        _first_leader(survivors, t0), _first_write(survivors, t0)
    )
    return elected, written


async def _status(endpoint: Endpoint) -> dict[str, Any] | None:
    try:
        reply = await ask(endpoint, "STATUS")
    except (OSError, TimeoutError):
        return None
    if not reply.startswith("OK "):
        return None
    status: dict[str, Any] = json.loads(reply[3:])
    return status


async def _all_caught_up(endpoints: Sequence[Endpoint], within: float) -> float | None:
    """Seconds until every node has applied what the leader had committed when we asked.

    A follower applies behind the leader; with a slow FSM that backlog can reach seconds,
    and a new leader must work it off before it answers its first write.
    """
    started = time.monotonic()
    leader = await find_leader(endpoints, within=within)
    status = await _status(leader)
    if status is None:
        return None
    target = status["commit"]
    while time.monotonic() - started < within:
        applied = [await _status(e) for e in endpoints]
        if all(s is not None and s.get("applied", -1) >= target for s in applied):
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    return None


def one_failover(cluster: LocalCluster) -> dict[str, Any]:
    leader = asyncio.run(find_leader(cluster.endpoints))
    victim = cluster.node_at(leader)
    survivors = [e for e in cluster.endpoints if e != leader]

    t0 = time.monotonic()
    cluster.kill(victim.id)
    elected_ms, failover_ms = asyncio.run(_failover(survivors, t0))

    new_leader = asyncio.run(find_leader(survivors))
    cluster.launch(victim.id)
    caught_up_s = asyncio.run(_all_caught_up(cluster.endpoints, CATCH_UP_MAX))
    time.sleep(1.0)  # settle: let the restarted node's heartbeats and timers run a while
    return {
        "killed": victim.id,
        "elected_ms": elected_ms,
        "failover_ms": failover_ms,
        "new_leader": cluster.node_at(new_leader).id,
        "all_caught_up_s": caught_up_s,
        "load": load_average(),
    }


def run_failovers(cluster: LocalCluster, kills: int) -> dict[str, Any]:
    # A snapshot on every node first, so that a restarted node loads one state and replays
    # a short log instead of every write of the load phase (minutes for kv.sh).
    for endpoint in cluster.endpoints:
        asyncio.run(ask(endpoint, "SNAPSHOT", 60))
    asyncio.run(_all_caught_up(cluster.endpoints, CATCH_UP_MAX))

    trials = []
    for trial in range(kills):
        record = one_failover(cluster)
        print(f"  kill {trial}: {record}", flush=True)
        trials.append(record)
    values = [t["failover_ms"] for t in trials if t["failover_ms"] is not None]
    elected = [t["elected_ms"] for t in trials if t["elected_ms"] is not None]
    return {
        "trials": trials,
        "failover_ms": med_range(values),
        "elected_ms": med_range(elected),
        "failed": len(trials) - len(values),
    }


# -- one FSM ------------------------------------------------------------------------------


def bench_fsm(fsm: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    cluster = LocalCluster(work / fsm, fsm)
    stop_on_signal(cluster.stop)
    try:
        cluster.start()
        leader = asyncio.run(find_leader(cluster.endpoints, within=30))
        print(f"{fsm}: leader {cluster.node_at(leader).id}, load {load_average()}", flush=True)

        result: dict[str, Any] = {"fsm": fsm, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        result["load"] = [run_load(cluster, c, args.reps, args.seconds) for c in args.clients]
        result["rss_mib"] = {n.id: rss_mib(n.pid) for n in cluster.nodes.values()}
        if fsm == "kv.sh":
            leader_node = cluster.node_at(asyncio.run(find_leader(cluster.endpoints)))
            result["direct_call_ms"] = direct_call_ms(leader_node.data_dir / "fsm", args.calls)
        if args.kills:
            result["failover"] = run_failovers(cluster, args.kills)
        result["load_average_end"] = load_average()
        return result
    finally:
        cluster.stop()


def stop_on_signal(stop: Callable[[], None]) -> None:
    """Ctrl-C or SIGTERM: stop our nodes (by PID), then exit with the usual status."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


# -- output -------------------------------------------------------------------------------


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| FSM | clients | writes/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        for load in r["load"]:
            lines.append(
                f"| {r['fsm']} | {load['clients']} | {fmt(load['writes_per_s'], '.0f')} "
                f"| {fmt(load['p50_ms'], '.2f')} | {fmt(load['p99_ms'], '.2f')} |"
            )
    lines.append("")
    for r in results:
        failover = r.get("failover", {})
        n = len(failover.get("trials", []))
        rss = ", ".join(f"{v:.0f}" for v in r["rss_mib"].values() if v is not None)
        lines.append(
            f"{r['fsm']}: failover (first write) {fmt(failover.get('failover_ms'), '.0f')} ms, "
            f"leader elected {fmt(failover.get('elected_ms'), '.0f')} ms, "
            f"{failover.get('failed', 0)} of {n} kills without a write in {FAILOVER_MAX:.0f} s; "
            f"RSS MiB {rss}"
        )
        if "direct_call_ms" in r and r["direct_call_ms"]:
            lines.append(exec_overhead(r))
    return "\n".join(lines)


def exec_overhead(result: dict[str, Any]) -> str:
    call = result["direct_call_ms"]["median"]
    one = next(x for x in result["load"] if x["clients"] == 1)["p50_ms"]["median"]
    return (
        f"kv.sh apply alone: {fmt(result['direct_call_ms'], '.1f')} ms; write p50 at 1 client "
        f"{one:.1f} ms = {one / call:.2f}x the call; exec mode adds {one - call:.1f} ms "
        "beyond the call's own cost"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fsm", choices=["kv.sh", "kv.py", "both"], default="both")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured s per rep")
    parser.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--calls", type=int, default=50, help="direct kv.sh apply runs")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, data)")
    args = parser.parse_args()

    fsms = ["kv.sh", "kv.py"] if args.fsm == "both" else [args.fsm]
    work = Path(tempfile.mkdtemp(prefix="graft-cluster-bench-"))
    print(f"work dir {work}; load average {load_average()}", flush=True)
    try:
        results = [bench_fsm(fsm, args, work) for fsm in fsms]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(table(results))
    if args.json:
        args.json.write_text(
            json.dumps({"date": time.strftime("%F %T"), "results": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
