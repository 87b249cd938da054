"""Fault schedules drawn from a seed, and their execution against a Cluster.

A schedule is a list of faults run one after another: each is switched on, held for its
duration, switched off, then the cluster gets a quiet gap. A target of "leader" is resolved
when the fault starts (the node that says it leads), so the same seed replays the same
kinds, timings and shapes of faults.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import asdict, dataclass

from .cluster import Cluster

log = logging.getLogger("graft.jepsen.nemesis")

KINDS = ("kill", "pause", "isolate", "split", "one-way", "delay", "flap")
LEADER = "leader"


@dataclass
class Fault:
    kind: str
    target: str = ""  # a node id, or "leader"
    side: tuple[str, ...] = ()  # the minority of a split
    duration: float = 1.0
    gap: float = 1.0
    delay: float = 0.0  # seconds, for "delay"
    direction: str = ""  # for "one-way": the target cannot send ("out") or hear ("in")

    def describe(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if v not in ("", (), 0.0)}
        return " ".join(f"{k}={v}" for k, v in fields.items())


def draw_schedule(
    seed: int, nodes: list[str], duration: float, kinds: tuple[str, ...] = KINDS
) -> list[Fault]:
    """Faults filling about duration seconds, reproducible from seed."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    elapsed = 0.5
    minority = (len(nodes) - 1) // 2
    while elapsed < duration - 1.0:
        kind = rng.choice(kinds)
        target = LEADER if rng.random() < 0.5 else rng.choice(nodes)
        fault = Fault(
            kind,
            target,
            duration=round(rng.uniform(0.8, 2.5), 2),
            gap=round(rng.uniform(0.4, 1.2), 2),
        )
        if kind == "split":
            fault.target = ""
            fault.side = tuple(sorted(rng.sample(nodes, rng.randint(1, minority))))
        elif kind == "delay":
            fault.target = ""
            fault.delay = round(rng.uniform(0.02, 0.15), 3)
        elif kind == "one-way":
            fault.direction = rng.choice(["out", "in"])
        faults.append(fault)
        elapsed += fault.duration + fault.gap
    return faults


def isolate_leader_schedule(rounds: int, pause_first: bool) -> list[Fault]:
    """The schedule of the planted-bug tests: the leader is cut off (and, with
    pause_first, also frozen for a while, so that requests queued meanwhile are answered
    from its stale state the moment it wakes up), again and again."""
    kind = "isolate-pause" if pause_first else "isolate"
    return [Fault(kind, LEADER, duration=2.5, gap=1.5) for _ in range(rounds)]


@dataclass
class Nemesis:
    cluster: Cluster
    injected: int = 0

    async def run(self, schedule: list[Fault], running: asyncio.Event) -> None:
        for fault in schedule:
            if not running.is_set():
                break
            target = await self.resolve(fault.target)
            log.info("fault on: %s (target %s)", fault.describe(), target)
            await self.apply(fault, target)
            self.injected += 1
            await asyncio.sleep(fault.duration)
            await self.undo(fault, target)
            await asyncio.sleep(fault.gap)

    async def resolve(self, target: str) -> str:
        if target != LEADER:
            return target
        leader = await self.cluster.leader()
        return leader or sorted(self.cluster.running() or self.cluster.nodes)[0]

    async def apply(self, fault: Fault, target: str) -> None:
        proxy = self.cluster.proxy
        assert proxy is not None
        others = [n for n in self.cluster.nodes if n != target]
        if fault.kind == "kill":
            self.cluster.kill(target)
        elif fault.kind == "pause":
            self.cluster.pause(target)
        elif fault.kind == "isolate":
            proxy.isolate(target)
        elif fault.kind == "isolate-pause":
            proxy.isolate(target)
            self.cluster.pause(target)
            await asyncio.sleep(fault.duration * 0.6)
            self.cluster.resume(target)  # wakes up still isolated, still believing it leads
        elif fault.kind == "split":
            proxy.split(fault.side)
        elif fault.kind == "one-way":
            if fault.direction == "out":
                proxy.one_way(target, others)
            else:
                for other in others:
                    proxy.one_way(other, [target])
        elif fault.kind == "delay":
            proxy.set_delay(fault.delay)
        elif fault.kind == "flap":
            proxy.flap(target, 0.3)
        else:
            raise ValueError(f"unknown fault kind {fault.kind}")

    async def undo(self, fault: Fault, target: str) -> None:
        if fault.kind == "kill":
            self.cluster.restart(target)
        elif fault.kind == "pause":
            self.cluster.resume(target)
        else:
            await self.heal_network()

    async def heal_network(self) -> None:
        assert self.cluster.proxy is not None
        self.cluster.proxy.heal()

    async def heal_all(self) -> None:
        """Undo everything: network, pauses, dead nodes."""
        await self.heal_network()
        for name in self.cluster.nodes:
            self.cluster.resume(name)
            self.cluster.restart(name)
