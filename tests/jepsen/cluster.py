"""A local cluster of real `graft start` processes behind the fault proxy (DESIGN §2, §6).

Each node gets its own copy of graft.yaml: its own entry keeps its real ports, and every
other peer's p2p port is the proxy's port for the link (this node -> that peer), so all
peer traffic, including forwarded client requests, crosses the proxy.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from .fsm_harness import fsm_command
from .proxy import FaultProxy

NODE_NAMES = ["n1", "n2", "n3", "n4", "n5", "n6", "n7"]


def free_ports(count: int) -> list[int]:
    """Ports the kernel says are free now (bound together so that they are distinct)."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def graft_command() -> list[str]:
    """The installed `graft` entry next to the interpreter, else `python -m graft.cli.main`."""
    entry = Path(sys.executable).with_name("graft")
    if entry.exists():
        return [sys.executable, str(entry)]
    return [sys.executable, "-m", "graft.cli.main"]


@dataclass
class Timeouts:
    election: int = 300
    heartbeat: int = 30


@dataclass
class Node:
    id: str
    p2p: int
    api: int
    config: Path
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False
    log_file: IO[bytes] | None = None


@dataclass
class Cluster:
    """N graft nodes, their proxy and their files under directory."""

    directory: Path
    size: int = 3
    timeouts: Timeouts = field(default_factory=Timeouts)
    snapshot_every: int = 300
    keep_log: int = 50
    env: dict[str, str] = field(default_factory=dict)
    # Sections of graft.yaml to update, e.g. {"fsm": {"timeout": 500}, "api": {"forward": False}}
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    proxy: FaultProxy | None = None

    # -- files ----------------------------------------------------------------------------

    def plan(self) -> None:
        """Pick ports and paths for every node."""
        ports = free_ports(2 * self.size)
        for position, name in enumerate(NODE_NAMES[: self.size]):
            home = self.directory / name
            home.mkdir(parents=True, exist_ok=True)
            self.nodes[name] = Node(
                name,
                ports[2 * position],
                ports[2 * position + 1],
                home / "graft.yaml",
                home / "data",
                home / "node.log",
            )

    def config_for(self, node: Node, proxy_port: Any) -> dict[str, Any]:
        """node's own copy of graft.yaml. proxy_port(src, dst) gives the link's port."""
        peers = {}
        for other in self.nodes.values():
            p2p = other.p2p if other.id == node.id else proxy_port(node.id, other.id)
            peers[other.id] = {"host": "127.0.0.1", "ports": {"p2p": p2p, "api": other.api}}
        config: dict[str, Any] = {
            "cluster": "jepsen",
            "timeouts": {"election": self.timeouts.election, "heartbeat": self.timeouts.heartbeat},
            "peers": peers,
            "fsm": {"command": fsm_command(), "mode": "exec", "timeout": 10000},
            "snapshot": {"every": self.snapshot_every, "keep_log": self.keep_log},
            "api": {"forward": True},
            "log_level": "INFO",
        }
        for section, values in self.overrides.items():
            config[section] = {**config.get(section, {}), **values}
        return config

    def write_configs(self) -> None:
        assert self.proxy is not None
        for node in self.nodes.values():
            text = yaml.safe_dump(self.config_for(node, self.proxy.port), sort_keys=False)
            node.config.write_text(text)

    # -- processes ------------------------------------------------------------------------

    async def start(self, ready_within: float = 30.0) -> None:
        self.plan()
        self.proxy = FaultProxy(
            {node.id: node.p2p for node in self.nodes.values()},
            reserved={node.api for node in self.nodes.values()},
        )
        await self.proxy.start()
        self.write_configs()
        for node in self.nodes.values():
            self.launch(node)
        await self.wait_ready(ready_within)

    def launch(self, node: Node) -> None:
        """Start node on its data dir (the same one after a kill), appending to its log."""
        if node.log_file is None:
            node.log_file = node.log_path.open("ab")
        node.log_file.write(f"=== start {time.strftime('%H:%M:%S')} ===\n".encode())
        node.log_file.flush()
        command = [
            *graft_command(),
            "start",
            node.id,
            "--config",
            str(node.config),
            "--data-dir",
            str(node.data_dir),
        ]
        node.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=node.log_file,
            stderr=node.log_file,
            env={**os.environ, **self.env},
        )
        node.paused = False

    def kill(self, name: str) -> None:
        """kill -9, as a crash."""
        node = self.nodes[name]
        if node.process is not None and node.process.poll() is None:
            if node.paused:
                os.kill(node.process.pid, signal.SIGCONT)
            node.process.kill()
            node.process.wait()
        node.paused = False

    def restart(self, name: str) -> None:
        node = self.nodes[name]
        if node.process is None or node.process.poll() is not None:
            self.launch(node)

    def pause(self, name: str) -> None:
        node = self.nodes[name]
        if node.process is not None and node.process.poll() is None:
            os.kill(node.process.pid, signal.SIGSTOP)
            node.paused = True

    def resume(self, name: str) -> None:
        node = self.nodes[name]
        if node.paused and node.process is not None and node.process.poll() is None:
            os.kill(node.process.pid, signal.SIGCONT)
        node.paused = False

    def running(self) -> list[str]:
        return [n.id for n in self.nodes.values() if n.process and n.process.poll() is None]

    def exited(self) -> dict[str, int]:
        """Nodes that exited on their own (not killed by the suite): id -> status."""
        return {
            node.id: node.process.returncode
            for node in self.nodes.values()
            if node.process is not None and node.process.poll() not in (None, -9)
        }

    async def stop(self) -> None:
        """Kill every node by PID (resuming paused ones first) and stop the proxy."""
        for node in self.nodes.values():
            self.kill(node.id)
            if node.log_file is not None:
                node.log_file.close()
                node.log_file = None
        if self.proxy is not None:
            await self.proxy.stop()

    # -- api ------------------------------------------------------------------------------

    @property
    def api_ports(self) -> dict[str, int]:
        return {node.id: node.api for node in self.nodes.values()}

    async def request(self, name: str, line: str, within: float = 1.0) -> str | None:
        """One request on a fresh connection; None when the node did not answer."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.nodes[name].api), within
            )
        except (OSError, TimeoutError):
            return None
        try:
            writer.write(line.encode() + b"\n")
            raw = await asyncio.wait_for(reader.readline(), within)
            return raw.decode().rstrip("\r\n") or None
        except (OSError, TimeoutError):
            return None
        finally:
            writer.close()

    async def wait_ready(self, within: float) -> None:
        """Every node answers PING with OK PONG, then some node knows a leader."""
        deadline = time.monotonic() + within
        pending = set(self.nodes)
        while pending:
            self.raise_if_exited()
            for name in list(pending):
                if await self.request(name, "PING", 0.5) == "OK PONG":
                    pending.discard(name)
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes not answering PING: {sorted(pending)}")
            await asyncio.sleep(0.05)
        await self.wait_leader(deadline - time.monotonic())

    async def status(self, name: str) -> dict[str, Any] | None:
        reply = await self.request(name, "STATUS", 0.5)
        if reply is None or not reply.startswith("OK "):
            return None
        try:
            parsed = json.loads(reply[3:])
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None

    async def leader(self) -> str | None:
        """The node that says it leads in the highest term, among those answering."""
        best: tuple[int, str] | None = None
        for name in self.running():
            if self.nodes[name].paused:
                continue
            status = await self.status(name)
            if status and status.get("role") == "leader":
                term = int(status.get("term", 0))
                if best is None or term > best[0]:
                    best = (term, name)
        return best[1] if best else None

    async def wait_leader(self, within: float) -> str:
        deadline = time.monotonic() + max(within, 1.0)
        while time.monotonic() < deadline:
            leader = await self.leader()
            if leader is not None:
                return leader
            await asyncio.sleep(0.1)
        raise TimeoutError("no leader elected")

    def raise_if_exited(self) -> None:
        exited = self.exited()
        if exited:
            tails = {name: self.log_tail(name) for name in exited}
            raise RuntimeError(f"nodes exited on their own: {exited}\n{tails}")

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.nodes[name].log_path
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
