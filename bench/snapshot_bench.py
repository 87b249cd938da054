"""Snapshot benchmarks on a real 3-node cluster (127.0.0.1, stream-mode FSMs):

    .venv/bin/python bench/snapshot_bench.py transfer --state-mb 50 [--runs 3]
        a follower that missed a 50 MB state gets it by InstallSnapshot; prints the transfer
        time and the receiving graft process's RSS (resting, peak sampled every 50 ms, VmHWM)
    .venv/bin/python bench/snapshot_bench.py log --commands 200000 [--clients 4]
        kv.py with snapshot.every 10000 / keep_log 1000 (the defaults); samples STATUS
        log_bytes on each node and the size of each wal directory; prints the peaks

Medians over --runs runs. The cluster harness is the test suite's (tests/snapshots).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from snapshots.harness import KV_PY, STATE_PY, Live, big_state_transfer, python_fsm  # noqa: E402
from snapshots.test_log_bounded import LogSampler  # noqa: E402

MB = 1 << 20


def transfer(state_mb: int, runs: int) -> None:
    results = []
    for run in range(runs):
        with tempfile.TemporaryDirectory(prefix="graft-snapshot-bench-") as directory:
            live = Live(Path(directory), python_fsm(STATE_PY), every=10**9, keep_log=0).start()
            try:
                result = big_state_transfer(live, state_mb * MB)
            finally:
                live.stop()
        results.append(result)
        print(
            f"run {run}: {result['state_bytes'] / MB:.1f} MB in {result['transfer_s']:.2f} s"
            f" ({result['state_bytes'] / MB / result['transfer_s']:.1f} MB/s); receiver RSS"
            f" resting {result['resting_rss'] / MB:.1f} MB, peak {result['peak_rss'] / MB:.1f}"
            f" MB (+{result['growth'] / MB:.1f} MB), VmHWM {result['vm_hwm'] / MB:.1f} MB",
            flush=True,
        )
    median = {key: statistics.median(r[key] for r in results) for key in results[0]}
    print(
        f"median of {runs}: transfer {median['transfer_s']:.2f} s, peak RSS"
        f" {median['peak_rss'] / MB:.1f} MB (+{median['growth'] / MB:.1f} MB over resting),"
        f" VmHWM {median['vm_hwm'] / MB:.1f} MB, state {median['state_bytes'] / MB:.1f} MB"
    )


def log_size(commands: int, clients: int, every: int, keep_log: int) -> None:
    with tempfile.TemporaryDirectory(prefix="graft-snapshot-bench-") as directory:
        live = Live(Path(directory), python_fsm(KV_PY), every=every, keep_log=keep_log).start()
        try:
            leader = live.leader()
            started = time.monotonic()
            with LogSampler(live, every=1.0) as sampler:
                for start in range(0, commands, 10_000):
                    end = min(commands, start + 10_000)
                    lines = [f"APPLY SET b{i % 50_000} {i:08d}" for i in range(start, end)]
                    replies = live.apply_all(leader, lines, clients)
                    bad = [reply for reply in replies if reply != "OK OK"]
                    if bad:
                        raise SystemExit(f"{len(bad)} failed applies, e.g. {bad[:3]}")
                    print(
                        f"{end} applied, {end / (time.monotonic() - started):.0f}/s; peak"
                        f" log_bytes {sampler.peak_log_bytes}, wal dir {sampler.peak_wal_bytes}",
                        flush=True,
                    )
                live.caught_up()
            took = time.monotonic() - started
        finally:
            live.stop()
    print(
        f"{commands} commands, {clients} pipelined clients, every {every}, keep_log"
        f" {keep_log}: {took:.1f} s ({commands / took:.0f}/s); peak STATUS log_bytes"
        f" {sampler.peak_log_bytes} bytes, peak wal dir {sampler.peak_wal_bytes} bytes"
        f" ({sampler.samples} samples)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("transfer")
    one.add_argument("--state-mb", type=int, default=50)
    one.add_argument("--runs", type=int, default=3)
    two = sub.add_parser("log")
    two.add_argument("--commands", type=int, default=200_000)
    two.add_argument("--clients", type=int, default=4)
    two.add_argument("--every", type=int, default=10_000)
    two.add_argument("--keep-log", type=int, default=1_000)
    args = parser.parse_args()
    if args.what == "transfer":
        transfer(args.state_mb, args.runs)
    else:
        log_size(args.commands, args.clients, args.every, args.keep_log)


if __name__ == "__main__":
    main()
