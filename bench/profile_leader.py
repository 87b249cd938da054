"""Where the leader's time goes under closed-loop load (kv.py, stream mode).

Starts a three-node cluster (bench/_cluster.py), records the leader with
`py-spy record --nonblocking --format raw` while `graft.cli.loadgen.measure` drives it, and
prints:

- the CPU each process used (user+sys from /proc/PID/stat), and from /proc/PID/schedstat the
  share of wall time its threads spent on a CPU and waiting in the run queue: on a shared
  box the run-queue wait tells whether a process is slow or only waiting for a core;
- the profile: self and inclusive time per function, per thread.

    .venv/bin/python bench/profile_leader.py [--clients 16] [--seconds 15] [--gil]
        [--raw FILE] [--top 25]

`--gil` samples only the thread that holds the GIL: Python work, including the syscalls
uvloop makes with the GIL held (socket writes), but not the idle wait in epoll, which
py-spy cannot tell from work inside uvloop's C loop (it shows as `Runner.run` self time).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cluster import LocalCluster  # noqa: E402

from graft.cli.loadgen import find_leader, measure  # noqa: E402

PAYLOAD = "SET k{n} " + "v" * 100
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def sched(pid: int) -> tuple[int, int, int]:
    """ns on a CPU, ns waiting in the run queue, and time slices, summed over threads."""
    run = wait = slices = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            a, b, c = Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()
        except OSError:  # a thread that ended between listdir and read
            continue
        run, wait, slices = run + int(a), wait + int(b), slices + int(c)
    return run, wait, slices


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def watched_processes(cluster: LocalCluster, leader_pid: int) -> dict[str, int]:
    watched = {}
    for node in cluster.nodes.values():
        assert node.pid is not None
        name = node.id + (" (leader)" if node.pid == leader_pid else "")
        watched[name] = node.pid
        for child in children(node.pid):
            watched[f"{node.id} fsm"] = child
    watched["load generator"] = os.getpid()
    return watched


def cpu_table(before: dict[str, tuple[float, tuple[int, int, int]]], wall: float) -> str:
    lines = ["process            cpu%  on-cpu%  runqueue-wait%  slices/s  wait/slice us"]
    for name, (cpu0, (run0, wait0, slices0)) in before.items():
        pid = int(name.rsplit("#", 1)[1])
        run, wait, slices = (x - y for x, y in zip(sched(pid), (run0, wait0, slices0), strict=True))
        label = name.rsplit("#", 1)[0]
        lines.append(
            f"{label:<18} {100 * (cpu_seconds(pid) - cpu0) / wall:4.0f}  "
            f"{100 * run / 1e9 / wall:7.0f}  {100 * wait / 1e9 / wall:14.0f}  "
            f"{slices / wall:8.0f}  {wait / max(slices, 1) / 1e3:12.0f}"
        )
    return "\n".join(lines)


def summarise(raw: Path, top: int) -> str:
    """Self and inclusive shares of a py-spy raw (folded) profile, per thread and overall."""
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [
            re.sub(r"\(/\S*?/(site-packages|python3\.\d+|main)/", "(", f) for f in stack.split(";")
        ]
        if frames[0].startswith("thread ("):
            threads[frames[0].split(": ", 1)[-1]] += n
        self_time[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    out = [f"{total} samples"]
    out += [f"  thread {name}: {100 * n / total:.1f}%" for name, n in threads.most_common()]
    out.append("self time (the function itself, without its callees):")
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in self_time.most_common(top)]
    out.append("inclusive time (the function and everything it called):")
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top + 15)]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--gil", action="store_true", help="sample only the GIL holder")
    parser.add_argument("--raw", type=Path, default=Path("leader.raw"))
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    spy_bin = Path(sys.executable).with_name("py-spy")
    work = Path(tempfile.mkdtemp(prefix="graft-profile-"))
    cluster = LocalCluster(work, "kv.py")
    spy: subprocess.Popen[bytes] | None = None
    try:
        cluster.start()
        leader = asyncio.run(find_leader(cluster.endpoints, within=30))
        leader_pid = cluster.node_at(leader).pid
        assert leader_pid is not None
        argv = [str(spy_bin), "record", "--nonblocking", "--format", "raw", "--threads"]
        argv += ["--rate", str(args.rate), "--duration", str(args.seconds)]
        argv += ["--pid", str(leader_pid), "--output", str(args.raw)]
        spy = subprocess.Popen(argv + (["--gil"] if args.gil else []), stderr=subprocess.PIPE)
        time.sleep(0.5)  # py-spy attaches

        watched = watched_processes(cluster, leader_pid)
        before = {f"{k}#{pid}": (cpu_seconds(pid), sched(pid)) for k, pid in watched.items()}
        started = time.monotonic()
        result = asyncio.run(
            measure(
                cluster.endpoints,
                clients=args.clients,
                seconds=args.seconds - 1,
                payload=PAYLOAD,
                warmup=0.5,
            )
        )
        wall = time.monotonic() - started
        print(result.summary())
        print(cpu_table(before, wall))
        spy.wait(timeout=60)
        spy = None
    finally:
        if spy is not None:
            spy.kill()
            spy.wait()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(summarise(args.raw, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
