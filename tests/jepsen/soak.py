"""Many seeded fault-injection runs, summarised in a table.

    .venv/bin/python -m tests.jepsen.soak --seeds 20 --duration 60 --nodes 3,5
    .venv/bin/python -m tests.jepsen.soak --seed 7 --nodes 3 --duration 60   # one schedule

A failing run keeps its directory (history.jsonl, schedule.txt, report.txt, node logs) and
prints its seed and the command that replays its schedule; passing runs are deleted unless
--keep is given.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from .run import RunConfig, RunResult, main_one, reproduce_command


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.jepsen.soak")
    parser.add_argument("--seeds", type=int, default=5, help="how many seeds (from --first)")
    parser.add_argument("--first", type=int, default=1, help="the first seed")
    parser.add_argument("--seed", type=int, help="run exactly this seed")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of faults")
    parser.add_argument("--nodes", default="3,5", help="cluster sizes, comma separated")
    parser.add_argument("--unsafe", default="", help="GRAFT_TEST_UNSAFE for the nodes")
    parser.add_argument("--dir", type=Path, help="where runs are kept (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep passing runs too")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    seeds = (
        [args.seed] if args.seed is not None else list(range(args.first, args.first + args.seeds))
    )
    sizes = [int(size) for size in args.nodes.split(",")]
    root = args.dir or Path(tempfile.mkdtemp(prefix="graft-soak-"))
    print(f"runs under {root}")

    results: list[RunResult] = []
    crashed: list[tuple[RunConfig, Path, str]] = []
    for seed in seeds:
        for size in sizes:
            config = RunConfig(seed, nodes=size, duration=args.duration, unsafe=args.unsafe)
            directory = root / f"seed{seed}-n{size}"
            try:
                result = main_one(config, directory)
            except Exception as error:  # noqa: BLE001 - a broken run is reported, not fatal
                crashed.append((config, directory, f"{type(error).__name__}: {error}"))
                continue
            results.append(result)
            if result.ok and not args.keep:
                shutil.rmtree(directory, ignore_errors=True)

    print_table(results, crashed)
    return 0 if all(result.ok for result in results) and not crashed else 1


def print_table(results: list[RunResult], crashed: list[tuple[RunConfig, Path, str]]) -> None:
    print()
    print(f"{'runs':>6} {'operations':>11} {'faults':>7} {'anomalies':>10} {'crashed':>8}")
    print(
        f"{len(results) + len(crashed):>6} {sum(len(r.ops) for r in results):>11} "
        f"{sum(r.faults for r in results):>7} "
        f"{sum(len(r.report.anomalies) for r in results):>10} {len(crashed):>8}"
    )
    for result in results:
        if result.ok:
            continue
        print(
            f"\nFAILED seed {result.config.seed}, {result.config.nodes} nodes: "
            f"kept in {result.directory}"
        )
        print(result.report.render())
        print(f"reproduce: {reproduce_command(result.config)}")
    for config, directory, error in crashed:
        print(f"\nCRASHED seed {config.seed}, {config.nodes} nodes ({error}): kept in {directory}")
        print(f"reproduce: {reproduce_command(config)}")


if __name__ == "__main__":
    sys.exit(main())
