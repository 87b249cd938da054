"""Storage benchmark: the fsync floor of this filesystem against Storage.save().

    .venv/bin/python bench/storage_bench.py [--dir DIR] [--runs 5] [--appends 400]

Prints, as medians over --runs runs:
  - the raw floor: os.write of one 128-byte record + os.fdatasync, median and p99;
  - single-entry save() latency (100-byte entry), median and p99, and its ratio to the floor;
  - entries/s for save() batches of 1, 64 and 256 entries of 100 bytes.
Targets: single-entry save <= 1.3x the floor; batches of 256 >= 100,000 entries/s.
DIR should be on the filesystem the data directory will use (default: a temporary directory
under the current one). Not part of the pytest run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from graft.raft.types import Entry, EntryKind
from graft.storage import Storage

DATA = b"x" * 100


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def raw_floor(directory: Path, n: int) -> list[float]:
    path = directory / "floor.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    record = b"r" * 128
    lat = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            os.write(fd, record)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink()
    return lat


def single_appends(directory: Path, n: int) -> list[float]:
    path = directory / "single"
    lat = []
    with Storage.open(path) as store:
        for i in range(1, n + 1):
            entry = [Entry(i, 1, EntryKind.COMMAND, DATA)]
            t = time.perf_counter()
            store.save(None, entry)
            lat.append(time.perf_counter() - t)
    shutil.rmtree(path)
    return lat


def batch_rate(directory: Path, size: int, entries: int) -> float:
    path = directory / f"batch{size}"
    batches = max(entries // size, 20)
    with Storage.open(path) as store:
        work = [
            [Entry(i, 1, EntryKind.COMMAND, DATA) for i in range(lo, lo + size)]
            for lo in range(1, batches * size + 1, size)
        ]
        t = time.perf_counter()
        for batch in work:
            store.save(None, batch)
        elapsed = time.perf_counter() - t
    shutil.rmtree(path)
    return batches * size / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--appends", type=int, default=400)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="graft-bench-", dir=args.dir or os.getcwd()))

    rows: dict[str, list[float]] = {}
    try:
        for _ in range(args.runs):
            floor = raw_floor(directory, args.appends)
            single = single_appends(directory, args.appends)
            run = {
                "floor_p50": percentile(floor, 50) * 1e6,
                "floor_p99": percentile(floor, 99) * 1e6,
                "save1_p50": percentile(single, 50) * 1e6,
                "save1_p99": percentile(single, 99) * 1e6,
            }
            run["ratio"] = run["save1_p50"] / run["floor_p50"]
            for size in (1, 64, 256):
                run[f"rate{size}"] = batch_rate(directory, size, 20_000)
            for key, value in run.items():
                rows.setdefault(key, []).append(value)
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    med = {key: statistics.median(values) for key, values in rows.items()}
    print(
        f"storage bench: {args.runs} runs, {args.appends} appends each, dir on {directory.parent}"
    )
    print(
        f"raw floor (write 128 B + fdatasync)  p50 {med['floor_p50']:8.1f} us   "
        f"p99 {med['floor_p99']:8.1f} us"
    )
    print(
        f"save() of 1 entry of 100 B           p50 {med['save1_p50']:8.1f} us   "
        f"p99 {med['save1_p99']:8.1f} us   {med['ratio']:.2f}x floor (target <= 1.3x)"
    )
    for size in (1, 64, 256):
        target = "   (target >= 100,000)" if size == 256 else ""
        print(
            f"save() batches of {size:3d} x 100 B       {med[f'rate{size}']:12,.0f} entries/s"
            f"{target}"
        )
    print("per run ratio:", " ".join(f"{r:.2f}" for r in rows["ratio"]))


if __name__ == "__main__":
    main()
