"""Throughput of the Raft core alone: 3 cores, in-memory delivery, no faults, no disk.

    .venv/bin/python bench/core_bench.py [--runs 5] [--seconds 1.0]

Prints committed entries per second on the leader, as the median of several runs, per
second of this process's CPU time (so that other load on the machine does not skew it) and,
in brackets, per wall-clock second, for
  - single proposals: propose one entry, deliver until the leader reports it committed;
  - batches of 64: propose 64 entries, deliver until the leader reports them committed.
The hosts do what graft/raft/ready.py asks (persisting is a no-op here), so this measures
the core's own cost per entry and per message: the ceiling it puts on a real node.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import deque

from graft.raft.core import CoreConfig, RaftCore
from graft.raft.messages import Message
from graft.raft.ready import Role
from graft.raft.types import HardState, Member, Membership

IDS = ("a", "b", "c")


def make_cluster() -> dict[str, RaftCore]:
    membership = Membership(tuple(Member(i) for i in IDS))
    return {
        node_id: RaftCore(
            CoreConfig(node_id),
            hard_state=HardState(),
            membership=membership,
            snapshot=None,
            entries=(),
            jitter=random.Random(n),
        )
        for n, node_id in enumerate(IDS)
    }


def pump(cores: dict[str, RaftCore], leader: RaftCore, target: int) -> None:
    """Run every core's Ready loop and deliver messages until the leader commits `target`."""
    queue: deque[Message] = deque()
    while True:
        for core in cores.values():
            while core.has_ready():
                ready = core.ready()
                queue.extend(ready.messages)
                core.advance(ready)
        if leader.log.commit >= target and not queue:
            return
        while queue:
            msg = queue.popleft()
            cores[msg.dst].step(msg)


def elect(cores: dict[str, RaftCore]) -> RaftCore:
    leader = cores["a"]
    leader.election_elapsed = 10**6
    leader.tick()
    pump(cores, leader, 0)
    assert leader.role is Role.LEADER
    pump(cores, leader, leader.log.last_index())
    return leader


def run(batch: int, seconds: float) -> tuple[float, float]:
    """(entries per CPU second, entries per wall-clock second) over about `seconds` of CPU."""
    cores = make_cluster()
    leader = elect(cores)
    payload = b"x" * 32
    committed = 0
    cpu_started = time.process_time()
    wall_started = time.perf_counter()
    deadline = cpu_started + seconds
    while time.process_time() < deadline:
        for _ in range(batch):
            last = leader.propose(payload)
        pump(cores, leader, last)
        committed += batch
    cpu = time.process_time() - cpu_started
    wall = time.perf_counter() - wall_started
    return committed / cpu, committed / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    for label, batch in (("single proposals", 1), ("batches of 64", 64)):
        results = [run(batch, args.seconds) for _ in range(args.runs)]
        cpu = [r[0] for r in results]
        wall = [r[1] for r in results]
        print(
            f"{label:>17}: {statistics.median(cpu):>10,.0f} committed entries per CPU second "
            f"(median of {args.runs}; min {min(cpu):,.0f}, max {max(cpu):,.0f}) "
            f"[{statistics.median(wall):,.0f} per wall-clock second]"
        )


if __name__ == "__main__":
    main()
