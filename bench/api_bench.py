"""Line API throughput: requests per second through ApiServer, on uvloop, medians of runs.

The handler answers at once (no Raft, no FSM), so this measures what the API layer itself
costs: splitting, parsing, one task per request, ordered replies, escaping.

Run: .venv/bin/python bench/api_bench.py
"""

from __future__ import annotations

import asyncio
import statistics
import time

import uvloop

from graft.api.protocol import LineReader, Ok, Reply, Request, format_reply, parse_request
from graft.api.server import ApiServer

RUNS = 5
REQUESTS = 50_000


class Echo:
    async def handle(self, request: Request) -> Reply:
        return Ok(request.command_bytes())


async def pipelined(port: int, line: bytes, depth: int) -> float:
    """Requests per second with `depth` requests in flight on one connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.perf_counter()
    for _ in range(REQUESTS // depth):
        writer.write(line * depth)
        for _ in range(depth):
            await reader.readline()
    elapsed = time.perf_counter() - start
    writer.close()
    return (REQUESTS // depth) * depth / elapsed


async def measure() -> dict[str, list[float]]:
    server = ApiServer(host="127.0.0.1", port=0, handler=Echo(), max_line=1 << 20)
    await server.start()
    cases = {
        "PING, depth 1": (b"PING\n", 1),
        "APPLY, depth 1": (b"APPLY SET a 1\n", 1),
        "APPLY, depth 100": (b"APPLY SET a 1\n", 100),
        "PING, depth 1000": (b"PING\n", 1000),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(RUNS):
        for name, (line, depth) in cases.items():
            results[name].append(await pipelined(server.port, line, depth))
    await server.close()
    return results


def sans_io_us() -> float:
    """Microseconds to split, parse and render one APPLY with no sockets at all."""
    data = b"APPLY SET key value\n" * 10_000
    start = time.perf_counter()
    reader = LineReader(1 << 20)
    reader.feed(data)
    while (line := reader.next_line()) is not None:
        assert isinstance(line, bytes)
        request = parse_request(line)
        format_reply(Ok(request.command_bytes()), request)
    return (time.perf_counter() - start) / 10_000 * 1e6


def main() -> None:
    results = uvloop.run(measure())
    for name, rates in results.items():
        print(f"{name:18} {statistics.median(rates):>10,.0f} req/s (median of {RUNS})")
    pure = statistics.median(sans_io_us() for _ in range(RUNS))
    print(f"{'sans-IO per APPLY':18} {pure:>10.2f} us (split + parse + render, median)")


if __name__ == "__main__":
    main()
