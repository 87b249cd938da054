"""A three-node Graft cluster of real `graft start` processes on 127.0.0.1, for bench/.

Every node gets free ports, its own data directory under one work directory and its log
file there. Only the PIDs this module started are ever signalled, and `stop()` is safe to
call twice (from a `finally` and from a signal handler).

Run as a script it starts a cluster that outlives it (for bench/anchors.sh) and stops it
again, by the PIDs written to a PID file:

    python bench/_cluster.py up --fsm kv.py --dir DIR --pidfile FILE   # prints the endpoints
    python bench/_cluster.py down --pidfile FILE
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from jepsen.cluster import free_ports, graft_command  # noqa: E402  (the tests' harness)

SCRIPTS = ROOT / "examples" / "fsm-scripts"
NODE_IDS = ("n1", "n2", "n3")
STOP_WITHIN = 10.0  # seconds a node gets after SIGTERM before it is killed


def fsm_settings(name: str) -> dict[str, object]:
    """The `fsm` section for one of the two example FSMs."""
    if name == "kv.sh":
        return {"command": str(SCRIPTS / "kv.sh"), "mode": "exec", "timeout": 10000}
    if name == "kv.py":
        # The real interpreter with -S: the venv's python shim costs nothing here, but a
        # `python3` from PATH may be a slow shim (team rule), and kv.py needs no site.
        command = f"{sys.executable} -S {SCRIPTS / 'kv.py'}"
        return {"command": command, "mode": "stream", "timeout": 10000}
    raise ValueError(f"unknown FSM {name!r}; expected kv.sh or kv.py")


@dataclass
class NodeProc:
    id: str
    p2p: int
    api: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> tuple[str, int]:
        return ("127.0.0.1", self.api)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class LocalCluster:
    """Three graft nodes sharing one graft.yaml in `directory`."""

    directory: Path
    fsm: str
    election_ms: int = 350
    heartbeat_ms: int = 35
    nodes: dict[str, NodeProc] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.directory / "graft.yaml"

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        return [node.endpoint for node in self.nodes.values()]

    def plan(self) -> None:
        """Pick ports and paths, and write graft.yaml (the defaults but for ports and FSM)."""
        ports = free_ports(2 * len(NODE_IDS))
        for position, node_id in enumerate(NODE_IDS):
            self.nodes[node_id] = NodeProc(
                node_id,
                ports[2 * position],
                ports[2 * position + 1],
                self.directory / node_id / "data",
                self.directory / node_id / "node.log",
            )
        peers = {
            n.id: {"host": "127.0.0.1", "ports": {"p2p": n.p2p, "api": n.api}}
            for n in self.nodes.values()
        }
        config = {
            "cluster": "bench",
            "timeouts": {"election": self.election_ms, "heartbeat": self.heartbeat_ms},
            "peers": peers,
            "fsm": fsm_settings(self.fsm),
            "snapshot": {"every": 10000, "keep_log": 1000},
            "api": {"forward": True},
            "log_level": "INFO",
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self) -> None:
        self.plan()
        for node in self.nodes.values():
            self.launch(node.id)

    def launch(self, node_id: str) -> None:
        """Start (or restart, on the same data dir) one node; its log is appended to."""
        node = self.nodes[node_id]
        node.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [*graft_command(), "start", node.id, "--config", str(self.config_path)]
        argv += ["--data-dir", str(node.data_dir)]
        with node.log_path.open("ab") as log:
            # Own session: a Ctrl-C in the terminal reaches the bench only, which then stops
            # the nodes itself, by PID.
            node.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=ROOT,
                start_new_session=True,
            )

    def kill(self, node_id: str) -> None:
        """kill -9 one node (a crash) and reap it."""
        node = self.nodes[node_id]
        if node.alive():
            assert node.process is not None
            node.process.kill()
            node.process.wait()

    def node_at(self, endpoint: tuple[str, int]) -> NodeProc:
        return next(n for n in self.nodes.values() if n.endpoint == endpoint)

    def stop(self) -> None:
        """SIGTERM every node still running, wait, then SIGKILL the ones that did not exit."""
        running = [n.process for n in self.nodes.values() if n.alive()]
        for process in running:
            assert process is not None
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WITHIN
        for process in running:
            assert process is not None
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def rss_mib(pid: int | None) -> float | None:
    """VmRSS of a process in MiB, None if it is gone."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def ask(endpoint: tuple[str, int], line: str, within: float = 2.0) -> str:
    """One request on a fresh connection; the reply line without its newline."""
    async with asyncio.timeout(within):
        reader, writer = await asyncio.open_connection(*endpoint)
        try:
            writer.write(line.encode() + b"\n")
            return (await reader.readline()).decode().rstrip("\n")
        finally:
            writer.close()


# -- the script: a cluster that outlives this process, for bench/anchors.sh ---------------


def _ours(pid: int, directory: str) -> bool:
    """Is pid still a graft node of this work directory (and not a zombie)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    zombie = any(line.startswith("State:") and "Z" in line for line in status.splitlines())
    return " start " in cmdline and directory in cmdline and not zombie


def _up(args: argparse.Namespace) -> int:
    cluster = LocalCluster(Path(args.dir).resolve(), args.fsm)
    cluster.start()
    pids = [str(n.pid) for n in cluster.nodes.values()]
    Path(args.pidfile).write_text("\n".join(pids) + "\n")
    Path(args.pidfile + ".dir").write_text(str(cluster.directory) + "\n")
    print(",".join(f"{host}:{port}" for host, port in cluster.endpoints))
    return 0


def _down(args: argparse.Namespace) -> int:
    pidfile = Path(args.pidfile)
    if not pidfile.exists():
        return 0
    directory = Path(args.pidfile + ".dir").read_text().strip()
    pids = [int(p) for p in pidfile.read_text().split()]
    for pid in pids:
        if _ours(pid, directory):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WITHIN
    while time.monotonic() < deadline and any(_ours(p, directory) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if _ours(pid, directory):
            os.kill(pid, signal.SIGKILL)
    pidfile.unlink()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start three nodes in the background; print the endpoints")
    up.add_argument("--fsm", choices=["kv.sh", "kv.py"], default="kv.py")
    up.add_argument("--dir", required=True, help="work directory (configs, data, logs)")
    up.add_argument("--pidfile", required=True)
    down = sub.add_parser("down", help="stop the nodes of a PID file written by `up`")
    down.add_argument("--pidfile", required=True)
    args = parser.parse_args()
    return _up(args) if args.cmd == "up" else _down(args)


if __name__ == "__main__":
    sys.exit(main())
