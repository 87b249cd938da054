"""Fixtures of the integration tests: real `graft start` processes on 127.0.0.1.

The clusters come from the fault suite's harness (tests/jepsen/cluster.py: free ports, one
graft.yaml per node, every peer link through the fault proxy). The proxy is asyncio code, so
it runs on a loop in a background thread that lives for the whole session; the tests
themselves are plain synchronous code that talks to the nodes over blocking sockets.
Nothing here skips a test: a cluster that cannot start fails the test and says why.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from jepsen.blocking import LoopThread, Requests, wait_for
from jepsen.cluster import Cluster, Node, graft_command

T = TypeVar("T")

FSM_SCRIPT = Path(__file__).with_name("fsm_kv.py")
REPO = Path(__file__).resolve().parents[2]
KV_SH = REPO / "examples" / "fsm-scripts" / "kv.sh"


def fsm_kv_command(hang_flag: Path | None = None) -> str:
    """The tests' FSM: the real interpreter with -S (fast start), optionally able to hang."""
    argv = [sys.executable, "-S", str(FSM_SCRIPT)]
    if hang_flag is not None:
        argv += ["--hang-flag", str(hang_flag)]
    return shlex.join(argv)


class Live(Requests):
    """A started harness cluster, driven from synchronous test code."""

    def __init__(self, cluster: Cluster, loop: LoopThread) -> None:
        self.cluster = cluster
        self.loop = loop
        self.hang_flag: Path | None = None  # set when the FSM was told to hang on this file

    @property
    def names(self) -> list[str]:
        return list(self.cluster.nodes)

    def node(self, name: str) -> Node:
        return self.cluster.nodes[name]

    def pid(self, name: str) -> int:
        process = self.node(name).process
        assert process is not None
        return process.pid

    # -- requests ---------------------------------------------------------------------------

    def cli(self, name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The graft CLI with `args`, pointed at name's api port."""
        command = [*graft_command(), *args, "--cluster", f"127.0.0.1:{self.node(name).api}"]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)

    def api_port(self, name: str) -> int:
        return self.node(name).api

    def statuses(self, names: list[str] | None = None) -> dict[str, dict[str, Any] | None]:
        return {name: self.status(name) for name in names or self.serving()}

    def serving(self) -> list[str]:
        """The nodes to ask by default: those the harness runs, or all when others run them
        (supervisord)."""
        if any(node.process is not None for node in self.cluster.nodes.values()):
            return self.cluster.running()
        return self.names

    def leader(self, names: list[str] | None = None) -> str | None:
        """The leader every node asked agrees on (same id, same term), else None."""
        seen = self.statuses(names)
        if any(status is None for status in seen.values()):
            return None
        views = {(status["leader"], status["term"]) for status in seen.values() if status}
        if len(views) != 1:
            return None
        leader, _term = views.pop()
        if leader is None:
            return None
        own = seen.get(leader)
        if own is not None and own["role"] != "leader":
            return None
        return str(leader)

    def wait_leader(self, names: list[str] | None = None, within: float = 10.0) -> str:
        return wait_for(lambda: self.leader(names), within, f"one agreed leader among {names}")

    def apply_until_ok(self, names: list[str], line: str, within: float = 10.0) -> str:
        """Send line to each of names in turn until one answers OK; return that reply."""
        replies: list[str | None] = []

        def attempt() -> str | None:
            for name in names:
                reply = self.ask(name, line, 3.0)
                replies.append(reply)
                if reply is not None and reply.startswith("OK"):
                    return reply
            return None

        try:
            return wait_for(attempt, within, f"{line!r} acknowledged", every=0.02)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last replies {replies[-6:]}") from None

    def wait_converged(self, names: list[str] | None = None, within: float = 15.0) -> int:
        """Wait until every node asked has applied the same, highest commit index."""

        def converged() -> int | None:
            seen = self.statuses(names)
            if None in seen.values():
                return None
            applied = {s["applied"] for s in seen.values() if s is not None}
            commits = {s["commit"] for s in seen.values() if s is not None}
            if len(applied) == 1 and applied == commits:
                return int(applied.pop())
            return None

        return wait_for(converged, within, f"nodes {names or 'all'} to converge")

    # -- processes --------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        self.cluster.kill(name)

    def restart(self, name: str) -> None:
        self.cluster.restart(name)

    def wait_serving(self, name: str, within: float = 15.0) -> None:
        wait_for(lambda: self.ask(name, "PING", 1.0) == "OK PONG", within, f"{name} to serve")

    def proxy_call(self, function: Callable[[], T]) -> T:
        return self.loop.call(function)

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{self.cluster.log_tail(n, 25)}" for n in self.names)


@contextlib.contextmanager
def running_cluster(directory: Path, loop: LoopThread, **options: Any) -> Iterator[Live]:
    """A started cluster (Cluster(**options)); every node is killed by PID on the way out."""
    cluster = Cluster(directory, **options)
    try:
        loop.run(cluster.start(ready_within=45.0), timeout=60.0)
        yield Live(cluster, loop)
    finally:
        loop.run(cluster.stop(), timeout=30.0)


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def calm(tmp_path_factory: pytest.TempPathFactory, loop_thread: LoopThread) -> Iterator[Live]:
    """A three-node cluster that the tests using it never break (no kills, no partitions).

    Its FSM hangs while `live.hang_flag` exists (fsm.timeout 500 ms), and api.max_line is
    small so that TOOLARGE is cheap to provoke.
    """
    directory = tmp_path_factory.mktemp("calm")
    flag = directory / "hang.flag"
    overrides = {
        "fsm": {"command": fsm_kv_command(flag), "timeout": 500},
        "api": {"max_line": MAX_LINE},
    }
    with running_cluster(directory, loop_thread, overrides=overrides) as live:
        live.hang_flag = flag
        yield live


MAX_LINE = 256
