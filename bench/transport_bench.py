"""Peer transport over loopback: one-way frame throughput and ping-pong round-trip time.

Two Transports in one process on uvloop (as the node runs), 127.0.0.1, plain TCP:
- throughput: node a streams AppendEntries frames (N entries of 100 bytes each) to node b,
  waiting on `drain` whenever `send` reports its queue full; frames/s counted at b.
- RTT: a sends a small ForwardRequest, b answers ForwardReply from on_frame, a awaits it.
Each figure is the median of several runs.

Run: .venv/bin/python bench/transport_bench.py
"""

from __future__ import annotations

import asyncio
import statistics
import time

import uvloop

from graft.raft.messages import AppendEntries
from graft.raft.types import Entry, EntryKind
from graft.transport import ForwardReply, ForwardRequest, Frame, Transport

RUNS = 5
FRAMES_PER_RUN = 20_000
PINGS_PER_RUN = 2_000


class Pair:
    def __init__(self) -> None:
        self.received = 0
        self.target = 0
        self.done: asyncio.Future[None] | None = None
        self.pong: asyncio.Future[None] | None = None
        self.a = Transport(
            node_id="a",
            cluster="bench",
            listen=("127.0.0.1", 0),
            peers={},
            on_frame=self._at_a,
        )
        self.b = Transport(
            node_id="b",
            cluster="bench",
            listen=("127.0.0.1", 0),
            peers={},
            on_frame=self._at_b,
        )

    async def start(self) -> None:
        await self.a.start()
        await self.b.start()
        self.a.set_peers({"b": self.b.listen_address})
        self.b.set_peers({"a": self.a.listen_address})
        assert await self.a.wait_connected("b") and await self.b.wait_connected("a")

    async def close(self) -> None:
        await self.a.close()
        await self.b.close()

    def _at_a(self, peer: str, frame: Frame) -> None:
        if isinstance(frame, ForwardReply) and self.pong is not None:
            self.pong.set_result(None)

    def _at_b(self, peer: str, frame: Frame) -> None:
        if isinstance(frame, ForwardRequest):
            self.b.send("a", ForwardReply(frame.request_id, frame.body))
            return
        self.received += 1
        if self.received == self.target and self.done is not None:
            self.done.set_result(None)


async def one_way(pair: Pair, frame: AppendEntries) -> float:
    """Frames per second for FRAMES_PER_RUN frames from a to b."""
    loop = asyncio.get_running_loop()
    pair.received, pair.target = 0, FRAMES_PER_RUN
    pair.done = loop.create_future()

    start = time.perf_counter()
    sent = 0
    while sent < FRAMES_PER_RUN:
        if pair.a.send("b", frame):
            sent += 1
        else:
            await pair.a.drain("b")
    await pair.done
    return FRAMES_PER_RUN / (time.perf_counter() - start)


async def round_trips(pair: Pair) -> list[float]:
    loop = asyncio.get_running_loop()
    samples = []
    for i in range(PINGS_PER_RUN):
        pair.pong = loop.create_future()
        start = time.perf_counter()
        pair.a.send("b", ForwardRequest(i, b"ping"))
        await pair.pong
        samples.append(time.perf_counter() - start)
    return samples


def append_entries(count: int) -> AppendEntries:
    entries = tuple(Entry(1 + i, 1, EntryKind.COMMAND, bytes(100)) for i in range(count))
    return AppendEntries(1, "a", "b", 0, 0, entries, 0)


async def main() -> None:
    pair = Pair()
    await pair.start()
    try:
        for count in (1, 16, 64):
            frame = append_entries(count)
            rates = [await one_way(pair, frame) for _ in range(RUNS)]
            rate = statistics.median(rates)
            print(
                f"one way, AppendEntries of {count:2d} x 100 B entries: {rate:9.0f} frames/s"
                f"  ({rate * count:9.0f} entries/s, {rate * count * 100 / 1e6:6.1f} MB/s payload)"
            )

        p50s, p99s = [], []
        for _ in range(RUNS):
            samples = sorted(await round_trips(pair))
            p50s.append(samples[len(samples) // 2])
            p99s.append(samples[int(len(samples) * 0.99)])
        print(
            f"ping-pong RTT, small frames: p50 {statistics.median(p50s) * 1e6:.0f} us,"
            f" p99 {statistics.median(p99s) * 1e6:.0f} us"
        )
    finally:
        await pair.close()


if __name__ == "__main__":
    print(f"uvloop, loopback TCP, medians of {RUNS} runs")
    uvloop.run(main())
