"""The simulated network: it drops, duplicates, delays, reorders and partitions messages.

Time is counted in ticks. A message sent at tick `t` is due at `t + delay`, with the delay
drawn from the schedule's seeded generator. Each link keeps its messages in order (as TCP
does) except a `reorder` share of them, which take their own delay and may overtake or fall
behind the others. A partition is a set of cut links, checked both when a message is sent
and when it is due (a link cut while a message is in flight loses it).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from graft.raft.messages import Message


@dataclass(frozen=True, slots=True)
class Envelope:
    msg: Message
    # the FSM state an InstallSnapshot carries: (applied index, digest, commands applied)
    payload: tuple[int, int, int] | None = None


@dataclass(slots=True)
class NetworkFaults:
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    max_delay: int = 1


@dataclass
class Network:
    rng: random.Random
    faults: NetworkFaults = field(default_factory=NetworkFaults)
    cut: set[tuple[str, str]] = field(default_factory=set)
    _queue: list[tuple[int, int, Envelope]] = field(default_factory=list)
    _link_due: dict[tuple[str, str], int] = field(default_factory=dict)
    _seq: int = 0
    sent: int = 0
    lost: list[Envelope] = field(default_factory=list)

    def send(self, envelope: Envelope, now: int) -> None:
        msg = envelope.msg
        self.sent += 1
        if (msg.src, msg.dst) in self.cut or self.rng.random() < self.faults.drop:
            self.lost.append(envelope)
            return
        self._enqueue(envelope, now)
        if self.rng.random() < self.faults.duplicate:
            self._enqueue(envelope, now)

    def _enqueue(self, envelope: Envelope, now: int) -> None:
        due = now + self.rng.randint(0, self.faults.max_delay)
        if self.faults.reorder and self.rng.random() < self.faults.reorder:
            due += self.rng.randint(0, 2)
        else:
            link = (envelope.msg.src, envelope.msg.dst)
            due = max(due, self._link_due.get(link, 0))
            self._link_due[link] = due
        self._seq += 1
        heapq.heappush(self._queue, (due, self._seq, envelope))

    def next_due(self, now: int) -> Envelope | None:
        """Pop one message due by `now`; None when none is due. Lost ones go to `lost`."""
        queue = self._queue
        while queue and queue[0][0] <= now:
            envelope = heapq.heappop(queue)[2]
            msg = envelope.msg
            if (msg.src, msg.dst) in self.cut:
                self.lost.append(envelope)
                continue
            return envelope
        return None

    def partition(self, groups: list[set[str]]) -> None:
        self.cut.clear()
        for group in groups:
            for other in groups:
                if other is not group:
                    self.cut.update((a, b) for a in group for b in other)

    def isolate(self, node: str, everyone: set[str]) -> None:
        self.cut.update((node, other) for other in everyone if other != node)
        self.cut.update((other, node) for other in everyone if other != node)

    def heal(self) -> None:
        self.cut.clear()

    def in_flight(self) -> int:
        return len(self._queue)
