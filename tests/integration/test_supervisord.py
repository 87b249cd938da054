"""The three peers under supervisord, from examples/supervisord.conf itself.

The example is copied verbatim into a directory laid out like a checkout (examples/,
.venv/bin/graft, graft.yaml, data/), so the program sections and options tested are exactly
the shipped ones; only graft.yaml is the test's own (free ports, the tests' FSM).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml
from jepsen.cluster import Cluster, Node, free_ports

from .conftest import REPO, Live, LoopThread, fsm_kv_command, wait_for

IDS = ["turing", "ritchie", "lovelace"]  # the program names of the example
SUPERVISORD = Path(sys.executable).with_name("supervisord")
SUPERVISORCTL = Path(sys.executable).with_name("supervisorctl")

pytestmark = pytest.mark.timeout(180)


def lay_out_checkout(root: Path) -> tuple[Path, Cluster]:
    (root / "examples").mkdir(parents=True)
    conf = root / "examples" / "supervisord.conf"
    shutil.copyfile(REPO / "examples" / "supervisord.conf", conf)
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "bin" / "graft").symlink_to(Path(sys.executable).with_name("graft"))
    # supervisord does not create the folder of its log and socket (see docs/limitations.md).
    (root / "data").mkdir()

    ports = free_ports(2 * len(IDS))
    cluster = Cluster(root)
    peers = {}
    for i, name in enumerate(IDS):
        p2p, api = ports[2 * i], ports[2 * i + 1]
        peers[name] = {"host": "127.0.0.1", "ports": {"p2p": p2p, "api": api}}
        cluster.nodes[name] = Node(
            name, p2p, api, root / "graft.yaml", root / "data" / name, root / "data" / f"{name}.log"
        )
    config = {
        "timeouts": {"election": 300, "heartbeat": 30},
        "peers": peers,
        "fsm": {"command": fsm_kv_command(), "timeout": 5000},
        "data_dir": "./data/{id}",
    }
    (root / "graft.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return conf, cluster


def ctl(conf: Path, *args: str) -> str:
    result = subprocess.run(
        [str(SUPERVISORCTL), "-c", str(conf), *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def program_pid(conf: Path, name: str) -> int:
    return int(ctl(conf, "pid", f"graft:{name}").strip())


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@contextlib.contextmanager
def supervised(root: Path, conf: Path) -> Iterator[int]:
    """supervisord started from the example; yields its pid; always shut down afterwards."""
    subprocess.run([str(SUPERVISORD), "-c", str(conf)], check=True, timeout=60, cwd=root)
    pid = int((root / "data" / "supervisord.pid").read_text().strip())
    try:
        yield pid
    finally:
        if not gone(pid):
            subprocess.run([str(SUPERVISORCTL), "-c", str(conf), "shutdown"], timeout=60)
            with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
                psutil.Process(pid).wait(30)


def test_supervisord_runs_restarts_and_shuts_down_the_example_cluster(
    tmp_path: Path, loop_thread: LoopThread
) -> None:
    conf, cluster = lay_out_checkout(tmp_path)
    live = Live(cluster, loop_thread)
    pids: set[int] = set()
    with supervised(tmp_path, conf) as supervisor:
        for name in IDS:
            live.wait_serving(name, 30.0)
            pids.add(program_pid(conf, name))
        leader = live.wait_leader()
        term = live.status(leader)["term"]  # type: ignore[index]
        acked = {}
        for number in range(5):
            assert live.apply_until_ok(IDS, f"APPLY SET before{number} v{number}") == "OK OK"
            acked[f"before{number}"] = f"v{number}"

        assert f"graft:{leader}: started" in ctl(conf, "restart", f"graft:{leader}")
        restarted = program_pid(conf, leader)
        assert restarted not in pids
        pids.add(restarted)
        assert live.apply_until_ok(IDS, "APPLY SET after-restart yes") == "OK OK"
        acked["after-restart"] = "yes"
        new = live.wait_leader()
        assert live.status(new)["term"] > term  # type: ignore[index]

        live.wait_converged()
        for name in IDS:
            for key, value in acked.items():
                assert live.ask(name, f"LOCAL GET {key}") == f"OK {value}", (name, key)
        log = (tmp_path / "data" / f"{leader}.log").read_text()
        assert f"node {leader} stopped" in log, "the restart was not a clean SIGTERM stop"

        assert "Shut down" in ctl(conf, "shutdown")
        wait_for(lambda: gone(supervisor), 30.0, "supervisord to exit")
    leftover = [pid for pid in pids if not gone(pid)]
    assert not leftover, f"graft processes still running after shutdown: {leftover}"
    for name in IDS:
        assert live.ask(name, "PING", 1.0) is None
    status = subprocess.run(
        [str(SUPERVISORCTL), "-c", str(conf), "status"], capture_output=True, text=True
    )
    assert status.returncode != 0  # nobody answers on the socket any more
