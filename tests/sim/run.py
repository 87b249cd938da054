"""Run or replay simulator schedules from the command line.

    .venv/bin/python -m tests.sim.run --seed 1234 --nodes 5            # replay one schedule
    .venv/bin/python -m tests.sim.run --seeds 20000 --first 100000      # soak: many schedules

A soak runs every seed in [first, first + seeds) for each size in --sizes and stops at the
first violation, printing the command that replays it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from .checker import Violation
from .cluster import replay_command, run_schedule


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim.run", description=__doc__)
    parser.add_argument("--seed", type=int, help="replay this one seed")
    parser.add_argument("--nodes", type=int, default=3, help="cluster size for --seed")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=1000, help="soak: how many seeds")
    parser.add_argument("--first", type=int, default=100_000, help="soak: first seed")
    parser.add_argument("--sizes", default="3,5,7", help="soak: cluster sizes")
    parser.add_argument("--verbose", action="store_true", help="log the core at INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)

    if args.seed is not None:
        jobs = [(args.seed, args.nodes)]
    else:
        sizes = [int(size) for size in args.sizes.split(",")]
        jobs = [(seed, n) for seed in range(args.first, args.first + args.seeds) for n in sizes]

    started = time.monotonic()
    for done, (seed, nodes) in enumerate(jobs, 1):
        try:
            run_schedule(seed, nodes, args.steps)
        except Violation as violation:
            print(f"seed {seed} nodes {nodes}: {violation}", file=sys.stderr)
            return 1
        if done % 500 == 0:
            print(f"{done}/{len(jobs)} schedules, {time.monotonic() - started:.0f}s", flush=True)
    print(
        f"{len(jobs)} schedules of {args.steps} steps: no violation "
        f"({time.monotonic() - started:.1f}s); replay one with: "
        f"{replay_command(jobs[0][0], jobs[0][1], args.steps)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
