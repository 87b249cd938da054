"""Real `graft start` clusters for the snapshot tests and bench/snapshot_bench.py.

The processes, ports, configs and fault proxy come from the fault suite's harness
(tests/jepsen/cluster.py); its asyncio parts run on a loop in a background thread, so the
tests themselves are plain blocking code. Everything binds 127.0.0.1; only the PIDs started
here are ever signalled.
"""

from __future__ import annotations

import shlex
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
from jepsen.blocking import LoopThread, Requests, wait_for
from jepsen.cluster import Cluster, Timeouts

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
KV_PY = REPO / "examples" / "fsm-scripts" / "kv.py"
STATE_PY = HERE / "fsm_state.py"


def python_fsm(script: Path, *args: str) -> str:
    """A stream-mode FSM command: the real interpreter with -S (fast start)."""
    return shlex.join([sys.executable, "-S", str(script), *args])


class Live(Requests):
    """A started cluster of real nodes, driven from blocking code."""

    def __init__(
        self,
        directory: Path,
        fsm: str,
        *,
        every: int,
        keep_log: int,
        size: int = 3,
        fsm_timeout: int = 10000,
    ) -> None:
        self.loop = LoopThread()
        self.cluster = Cluster(
            directory,
            size=size,
            timeouts=Timeouts(election=400, heartbeat=40),
            snapshot_every=every,
            keep_log=keep_log,
            overrides={"fsm": {"command": fsm, "mode": "stream", "timeout": fsm_timeout}},
        )

    def start(self) -> Live:
        try:
            self.loop.run(self.cluster.start(60.0))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        try:
            self.loop.run(self.cluster.stop(), 30.0)
        finally:
            self.loop.close()

    @property
    def names(self) -> list[str]:
        return list(self.cluster.nodes)

    def pid(self, name: str) -> int:
        process = self.cluster.nodes[name].process
        assert process is not None and process.poll() is None, f"{name} is not running"
        return process.pid

    def data_dir(self, name: str) -> Path:
        return self.cluster.nodes[name].data_dir

    def log(self, name: str) -> str:
        return self.cluster.nodes[name].log_path.read_text(errors="replace")

    def kill(self, name: str) -> None:
        self.loop.call(lambda: self.cluster.kill(name))

    def restart(self, name: str) -> None:
        self.loop.call(lambda: self.cluster.restart(name))

    def proxy(self, action: Callable[[Any], None]) -> None:
        """Run action(proxy) on the loop that owns the proxy."""
        proxy = self.cluster.proxy
        assert proxy is not None
        self.loop.call(lambda: action(proxy))

    # -- requests ---------------------------------------------------------------------------

    def api_port(self, name: str) -> int:
        return self.cluster.nodes[name].api

    def leader(self, within: float = 20.0) -> str:
        """A node that says it leads, in the highest term seen."""

        def find() -> str | None:
            best: tuple[int, str] | None = None
            for name in self.cluster.running():
                status = self.status(name)
                leads = status is not None and status["role"] == "leader"
                if status and leads and (best is None or status["term"] > best[0]):
                    best = (status["term"], name)
            return best[1] if best else None

        return wait_for(find, within, "a leader", every=0.1)

    def apply_all(self, name: str, lines: Sequence[str], clients: int = 4) -> list[str]:
        """Pipeline `lines` to one node over `clients` connections; replies in line order."""
        shares = [list(lines[i::clients]) for i in range(clients)]

        def run(share: list[str]) -> list[str]:
            with self.client(name, 60.0) as line:
                return line.pipeline(share)

        with ThreadPoolExecutor(clients) as pool:
            answered = list(pool.map(run, shares))
        replies = [""] * len(lines)
        for i, share in enumerate(answered):
            replies[i::clients] = share
        return replies

    def caught_up(self, names: Sequence[str] | None = None, within: float = 60.0) -> int:
        """Wait until every node named has applied the same index as the highest commit."""
        asked = list(names or self.cluster.running())

        def check() -> int | None:
            seen = [self.status(name) for name in asked]
            if any(status is None for status in seen):
                return None
            commit = max(s["commit"] for s in seen if s)
            applied = {s["applied"] for s in seen if s}
            return commit if applied == {commit} else None

        return wait_for(check, within, f"{asked} to apply the same index", every=0.1)

    def local_values(self, name: str, keys: Sequence[str], verb: str = "LOCAL") -> list[str]:
        with self.client(name, 30.0) as line:
            return line.pipeline([f"{verb} GET {key}" for key in keys])


class RssSampler:
    """Samples a process's RSS every `every` seconds in a thread; reports the peak."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        self.process = psutil.Process(pid)
        self.every = every
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def start(self) -> RssSampler:
        self.peak = self.rss()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.peak = max(self.peak, self.rss())
                self.samples += 1
            except psutil.Error:
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak


def high_water_mark(pid: int) -> int:
    """VmHWM of a process in bytes: its peak RSS since it started."""
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def big_state_transfer(live: Live, size: int) -> dict[str, float]:
    """Give the cluster a `size`-byte state and stream it to a follower that missed it.

    The follower is down while the state is made and snapshotted (the log compacted past
    it, snapshot.keep_log 0), restarted behind a blocked link so that its resting RSS is
    measured first, then the link is healed; its RSS is sampled every 50 ms until it has
    installed the snapshot. The state then must hash the same on the follower's FSM.
    """
    from .fsm_state import blob_digest

    leader = live.leader()
    receiver = next(name for name in live.names if name != leader)
    live.caught_up()
    live.kill(receiver)

    assert live.ask(leader, f"APPLY BLOB {size}", 30.0) == "OK OK"
    assert live.ask(leader, "APPLY SET after blob", 30.0) == "OK OK"
    running = [name for name in live.names if name != receiver]
    for name in running:
        reply = live.ask(name, "SNAPSHOT", 120.0)
        assert reply is not None and reply.startswith("OK "), (name, reply)
    snapshot = live.status(leader)
    assert snapshot is not None and snapshot["snapshot"]["size"] >= size, snapshot
    index = snapshot["snapshot"]["index"]

    live.proxy(lambda proxy: proxy.isolate(receiver))
    live.restart(receiver)
    wait_for(lambda: live.ask(receiver, "PING", 1.0) == "OK PONG", 60.0, f"{receiver} up")
    time.sleep(1.0)  # let start-up allocations settle before the resting RSS is read
    sampler = RssSampler(live.pid(receiver)).start()
    resting = sampler.rss()

    started = time.monotonic()
    live.proxy(lambda proxy: proxy.heal())

    def installed() -> bool:
        status = live.status(receiver)
        return status is not None and (status["snapshot"] or {}).get("index", 0) >= index

    wait_for(installed, 300.0, f"{receiver} to install snapshot {index}", every=0.05)
    took = time.monotonic() - started
    peak = sampler.stop()
    hwm = high_water_mark(live.pid(receiver))

    live.caught_up(within=60.0)
    assert live.ask(receiver, "LOCAL DIGEST") == f"OK {blob_digest(size)}"
    assert live.ask(receiver, "LOCAL GET after") == "OK blob"
    return {
        "state_bytes": float(snapshot["snapshot"]["size"]),
        "transfer_s": took,
        "resting_rss": float(resting),
        "peak_rss": float(peak),
        "growth": float(peak - resting),
        "vm_hwm": float(hwm),
        "samples": float(sampler.samples),
    }
