"""A closed-loop load generator over the line API, for `graft bench` and bench/.

Each client holds one connection to the leader and sends its next APPLY when the previous
answer arrives, so throughput is concurrency / latency. `{n}` in the payload is replaced by
a per-request counter so writes can touch different keys.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson


@dataclass(frozen=True)
class LoadResult:
    clients: int
    seconds: float
    ok: int
    errors: int
    latencies_ms: tuple[float, ...]

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def summary(self) -> str:
        return (
            f"clients={self.clients} ok={self.ok} errors={self.errors} "
            f"throughput={self.throughput:.0f}/s p50={self.percentile(50):.2f}ms "
            f"p99={self.percentile(99):.2f}ms"
        )


async def _ask(endpoint: tuple[str, int], line: bytes) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*endpoint), 1)
    try:
        writer.write(line)
        return await asyncio.wait_for(reader.readline(), 1)
    finally:
        writer.close()


async def _members(endpoints: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """Every member's api endpoint, learned from MEMBERS on the first node that answers."""
    for endpoint in endpoints:
        try:
            line = await _ask(endpoint, b"MEMBERS\n")
        except (OSError, TimeoutError):
            continue
        if line.startswith(b"OK "):
            addresses = orjson.loads(line[3:]).get("addresses", [])
            found = [a["api"].rsplit(":", 1) for a in addresses]
            return [(h, int(p)) for h, p in found] or list(endpoints)
    return list(endpoints)


async def find_leader(
    endpoints: Sequence[tuple[str, int]], within: float = 10.0
) -> tuple[str, int]:
    """The api endpoint of the node that reports itself leader."""
    members = await _members(endpoints)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for endpoint in members:
            try:
                line = await _ask(endpoint, b"STATUS\n")
            except (OSError, TimeoutError):
                continue
            if line.startswith(b"OK ") and orjson.loads(line[3:]).get("role") == "leader":
                return endpoint
        await asyncio.sleep(0.05)
    raise TimeoutError("no leader found")


async def _client(
    endpoint: tuple[str, int], payload: str, stop_at: float, start_at: float, base: int
) -> tuple[int, int, list[float]]:
    reader, writer = await asyncio.open_connection(*endpoint)
    ok = errors = 0
    latencies: list[float] = []
    n = base
    try:
        while (now := time.monotonic()) < stop_at:
            n += 1
            writer.write(f"APPLY {payload.replace('{n}', str(n))}\n".encode())
            line = await reader.readline()
            done = time.monotonic()
            if not line:
                break
            if now < start_at:
                continue
            if line.startswith(b"OK"):
                ok += 1
                latencies.append((done - now) * 1000)
            else:
                errors += 1
    finally:
        writer.close()
    return ok, errors, latencies


async def measure(
    endpoints: Sequence[tuple[str, int]],
    *,
    clients: int,
    seconds: float,
    payload: str,
    warmup: float = 1.0,
) -> LoadResult:
    leader = await find_leader(endpoints)
    start_at = time.monotonic() + warmup
    stop_at = start_at + seconds
    runs = await asyncio.gather(
        *(_client(leader, payload, stop_at, start_at, i * 10_000_000) for i in range(clients))
    )
    latencies = tuple(x for _, _, lat in runs for x in lat)
    return LoadResult(
        clients,
        seconds,
        sum(r[0] for r in runs),
        sum(r[1] for r in runs),
        latencies,
    )


def run_load(
    endpoints: Sequence[tuple[str, int]], *, clients: int, seconds: float, payload: str
) -> str:
    result = asyncio.run(measure(endpoints, clients=clients, seconds=seconds, payload=payload))
    return result.summary()


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
