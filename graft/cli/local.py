"""What the CLI does on this machine: run one node, run them all, stop one, show status."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import uvloop

from graft.client import Client, ClientError
from graft.config import Config
from graft.node.runtime import Node, NodeStartError

log = logging.getLogger("graft.cli")

STOP_WITHIN = 20.0  # seconds a clean stop may take before the process gives up on it

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr)


# -- graft start ------------------------------------------------------------------------------


def run_node(config: Config, node_id: str) -> int:
    """Run a node until SIGTERM or SIGINT; 0 after a clean stop, 1 if it could not run."""
    configure_logging(config.log_level)
    return uvloop.run(_serve(config, node_id))


async def _serve(config: Config, node_id: str) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    node = Node(config, node_id)
    try:
        await node.start()
    except NodeStartError as exc:
        log.error("%s", exc)
        return 1

    stopping = loop.create_task(stop.wait())
    failing = loop.create_task(_failure(node))
    await asyncio.wait([stopping, failing], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    failing.cancel()
    try:
        async with asyncio.timeout(STOP_WITHIN):
            await node.stop()
    except TimeoutError:
        log.error("node %s did not stop within %.0f s; exiting anyway", node_id, STOP_WITHIN)
        for task in asyncio.all_tasks():
            log.error("still running: %s", task, stack_info=False)
            task.print_stack(file=sys.stderr)
        return 1
    if node.failed.done():
        log.error(
            "node %s stopped after an error: %s. Start it again: it reloads its newest snapshot "
            "and replays its log (under supervisord or systemd that happens by itself)",
            node_id,
            node.failed.result(),
        )
        return 1
    return 0


async def _failure(node: Node) -> None:
    await asyncio.shield(node.failed)


# -- graft up ---------------------------------------------------------------------------------


def run_all(config: Config, path: Path | None, fsm: str | None) -> int:
    """Start every peer as a child process, prefix their logs, stop them all on Ctrl-C."""
    return asyncio.run(_run_all(config, path, fsm))


async def _run_all(config: Config, path: Path | None, fsm: str | None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    width = max(len(i) for i in config.peers)
    children: dict[str, asyncio.subprocess.Process] = {}
    pumps = []
    for node_id in config.peers:
        argv = [sys.executable, "-m", "graft.cli.main", "start", node_id]
        if path is not None:
            argv += ["--config", str(path)]
        if fsm is not None:
            argv += ["--fsm", fsm]
        child = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us once; we pass it on as SIGTERM
        )
        children[node_id] = child
        pumps.append(loop.create_task(_pump(node_id.ljust(width), child)))

    peers = ", ".join(f"{p.id} on {p.host}:{p.api_port}" for p in config.peers.values())
    print(f"graft up: {peers}; Ctrl-C stops them all", file=sys.stderr, flush=True)

    waits = [loop.create_task(_report_exit(i, c)) for i, c in children.items()]
    stopping = loop.create_task(stop.wait())
    # A node that exits (`graft stop ID`, a crash) leaves the others running, so that a
    # failover can be watched; Ctrl-C, or the last node exiting, ends `graft up`.
    everyone = loop.create_task(_all(waits))
    await asyncio.wait([stopping, everyone], return_when=asyncio.FIRST_COMPLETED)
    for child in children.values():
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)

    codes = [await c.wait() for c in children.values()]
    await asyncio.gather(*pumps)
    stopping.cancel()
    return 0 if stop.is_set() and all(c == 0 for c in codes) else 1


async def _all(tasks: list[asyncio.Task[None]]) -> None:
    await asyncio.gather(*tasks)


async def _report_exit(node_id: str, child: asyncio.subprocess.Process) -> None:
    code = await child.wait()
    print(f"graft up: {node_id} exited with status {code}", file=sys.stderr, flush=True)


async def _pump(prefix: str, child: asyncio.subprocess.Process) -> None:
    assert child.stdout is not None
    while line := await child.stdout.readline():
        sys.stdout.write(f"{prefix} | {line.decode(errors='replace')}")
        sys.stdout.flush()


# -- graft stop -------------------------------------------------------------------------------


def stop_node(data_dir: Path, timeout: float = 15.0) -> tuple[str, int]:
    """SIGTERM the process that holds `data_dir`, and wait for it to exit."""
    from graft.storage import lock_holder

    pid = lock_holder(data_dir)
    if pid is None:
        return f"no node is running on {data_dir}", 1

    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _exited(pid):
            return f"stopped process {pid}", 0
        time.sleep(0.05)
    return f"process {pid} did not stop within {timeout:.0f} s", 1


def _exited(pid: int) -> bool:
    """Gone, or a zombie: it exited and only waits for its parent to collect its status."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- graft status -----------------------------------------------------------------------------


def cluster_status(client: Client, timeout: float) -> list[dict[str, object]]:
    """STATUS of every member whose api address is known."""
    rows: list[dict[str, object]] = []
    for host, port in _member_endpoints(client):
        try:
            row = Client([(host, port)], timeout=timeout).status()
        except (ClientError, OSError, ValueError) as exc:
            row = {"id": f"{host}:{port}", "role": "unreachable", "error": str(exc)}
        rows.append(row)
    return rows


def _member_endpoints(client: Client) -> list[tuple[str, int]]:
    try:
        members = client.members()
    except (ClientError, OSError, ValueError):
        return list(client.endpoints)

    endpoints = [tuple(m["api"].rsplit(":", 1)) for m in members.get("addresses", [])]
    return [(h, int(p)) for h, p in endpoints] or list(client.endpoints)


def status_table(rows: list[dict[str, object]]) -> str:
    commits = [c for r in rows if isinstance(c := r.get("commit"), int)]
    top = max(commits, default=0)
    header = ("ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAG", "HEALTH")
    lines: list[tuple[str, ...]] = [header]
    for r in rows:
        applied = r.get("applied")
        lag = top - applied if isinstance(applied, int) else "-"
        health = str(r.get("health", "-"))
        if r.get("reason"):
            health += f" ({r['reason']})"
        lines.append(
            tuple(
                str(v)
                for v in (
                    r.get("id"),
                    r.get("role"),
                    r.get("term", "-"),
                    r.get("leader") or "-",
                    r.get("commit", "-"),
                    applied if applied is not None else "-",
                    lag,
                    health,
                )
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


# -- graft bench ------------------------------------------------------------------------------


def load(client: Client, *, clients: int, seconds: float, payload: str) -> str:
    from graft.cli.loadgen import run_load

    return run_load(client.endpoints, clients=clients, seconds=seconds, payload=payload)
