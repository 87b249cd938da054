"""The README's quick start, as written, in a fresh copy of the repository:

    ./install.sh            a new virtual environment with Graft (pip's cache is allowed)
    .venv/bin/graft up      three nodes from the built-in graft.yaml, with kv.sh

`graft up` uses the default ports (api 8080-8082, p2p 8880-8882): the integration tests run
one at a time, so nothing else of the suite holds them; if something else on the machine
does, the test fails and says so.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from .conftest import REPO, wait_for

DEFAULT_PORTS = [8080, 8081, 8082, 8880, 8881, 8882]
INSTALL_BOUND_S = 240.0

pytestmark = pytest.mark.timeout(420)


def copy_checkout(destination: Path) -> None:
    """The tracked files only, as a fresh clone would have them."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if not source.is_file():
            continue  # deleted in the work tree, not yet committed
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
        target.chmod(source.stat().st_mode)


def assert_ports_free() -> None:
    for port in DEFAULT_PORTS:
        with socket.socket() as sock:
            # As the nodes' servers do: a connection of an earlier run in TIME_WAIT is fine.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                pytest.fail(f"port {port} of the default graft.yaml is taken: {exc}")


def cluster_status(checkout: Path) -> list[dict[str, object]] | None:
    result = subprocess.run(
        [".venv/bin/graft", "status", "--json"],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        return None
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    leaders = [row for row in rows if row.get("role") == "leader"]
    terms = {row.get("term") for row in rows}
    if len(rows) == 3 and len(leaders) == 1 and len(terms) == 1:
        return rows
    return None


def test_readme_quick_start_works_as_written(tmp_path: Path) -> None:
    checkout = tmp_path / "graft"
    copy_checkout(checkout)
    started = time.monotonic()
    install = subprocess.run(
        ["./install.sh"], cwd=checkout, capture_output=True, text=True, timeout=INSTALL_BOUND_S
    )
    took = time.monotonic() - started
    print(f"./install.sh in a fresh copy: {took:.1f} s")
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-4000:]
    assert (checkout / ".venv" / "bin" / "graft").exists()

    assert_ports_free()
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [".venv/bin/graft", "up"], cwd=checkout, stdout=log, stderr=subprocess.STDOUT
    )
    nodes: list[psutil.Process] = []
    try:
        rows = wait_for(lambda: cluster_status(checkout), 60.0, "graft status: one leader", 0.5)
        nodes = psutil.Process(up.pid).children()
        assert len(nodes) == 3
        assert sorted(str(row["id"]) for row in rows) == ["lovelace", "ritchie", "turing"]
        applied = subprocess.run(
            [".venv/bin/graft", "apply", "SET greeting hello"],
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert applied.stdout.strip() == "OK", applied.stderr

        up.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal does
        assert up.wait(timeout=60) == 0, (tmp_path / "up.log").read_text()[-3000:]
        wait_for(lambda: not any(node.is_running() for node in nodes), 10.0, "nodes to exit")
    finally:
        # graft up starts its nodes in their own sessions: after a failure, kill them by
        # PID (they are no longer this process's children once graft up is gone).
        if up.poll() is None:
            nodes = nodes or psutil.Process(up.pid).children()
            up.kill()
            up.wait()
        for node in nodes:
            with contextlib.suppress(psutil.NoSuchProcess):
                node.kill()
        log.close()
    text = (tmp_path / "up.log").read_text()
    for name in ("turing", "ritchie", "lovelace"):
        assert f"node {name} stopped" in text, text[-3000:]
