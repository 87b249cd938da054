"""Bad input is refused and harms nothing else: malformed configs, garbage and overlong
lines, random bytes on the peer port, an FSM that fails and an FSM that hangs."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from jepsen.cluster import free_ports, graft_command

from .conftest import MAX_LINE, Live, wait_for

# -- configuration ----------------------------------------------------------------------------


def base_config(tmp_path: Path) -> dict[str, Any]:
    ports = free_ports(6)
    peers = {
        name: {"host": "127.0.0.1", "ports": {"p2p": ports[2 * i], "api": ports[2 * i + 1]}}
        for i, name in enumerate(["a", "b", "c"])
    }
    return {
        "peers": peers,
        "fsm": {"command": "/bin/true"},
        "data_dir": str(tmp_path / "data" / "{id}"),
    }


def unknown_key(config: dict[str, Any]) -> str:
    config["api"] = {"forwad": True}
    return "api.forwad"


def duplicate_port(config: dict[str, Any]) -> str:
    config["peers"]["c"]["ports"]["api"] = config["peers"]["a"]["ports"]["api"]
    return "peers.c.ports.api"


def missing_port(config: dict[str, Any]) -> str:
    del config["peers"]["b"]["ports"]["p2p"]
    return "peers.b.ports.p2p"


def not_a_peer(config: dict[str, Any]) -> str:
    return "'ghost' is not a peer"


@pytest.mark.parametrize(
    ("node_id", "spoil"),
    [("a", unknown_key), ("a", duplicate_port), ("a", missing_port), ("ghost", not_a_peer)],
    ids=["unknown-key", "duplicate-port", "missing-port", "id-not-a-peer"],
)
def test_malformed_config_is_refused_before_anything_is_opened(
    tmp_path: Path, node_id: str, spoil: Any
) -> None:
    config = base_config(tmp_path)
    named = spoil(config)
    path = tmp_path / "graft.yaml"
    path.write_text(yaml.safe_dump(config))
    ports = [p for peer in config["peers"].values() for p in peer["ports"].values()]

    result = subprocess.run(
        [*graft_command(), "start", node_id, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode != 0
    assert named in result.stderr, result.stderr
    assert result.stderr.count("\n") <= 2, "a refusal is a message, not a traceback"
    assert not (tmp_path / "data").exists(), "a refused config must not create a data dir"
    for port in ports:  # nothing listens on them (and nothing was left bound)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


# -- the line API -----------------------------------------------------------------------------


def test_garbage_lines_get_badrequest_and_the_connection_stays_usable(calm: Live) -> None:
    leader = calm.wait_leader()
    follower = next(name for name in calm.names if name != leader)
    for name in (leader, follower):
        with calm.client(name) as client:
            for garbage in (b"FROB x", b"APPLY", b"QUERY", b"\x00\x01\xfe\xff junk", b"ADD x"):
                reply = client.request(garbage.decode(errors="replace"))
                assert reply.startswith("ERR BADREQUEST"), (garbage, reply)
                assert client.request("PING") == "OK PONG"
            assert client.request(f"APPLY SET after-garbage-{name} yes") == "OK OK"


def test_overlong_line_gets_toolarge_and_the_connection_stays_usable(calm: Live) -> None:
    leader = calm.wait_leader()
    follower = next(name for name in calm.names if name != leader)
    for name in (leader, follower):
        with calm.client(name) as client:
            big = f"APPLY SET too-big-{name} " + "x" * (MAX_LINE + 100)
            assert client.request(big).startswith("ERR TOOLARGE")
            assert client.request("PING") == "OK PONG"
            # Pipelined behind the discarded line, a normal request is still answered.
            client.send(big.encode() + b"\nAPPLY SET fits-" + name.encode() + b" yes\n")
            assert client.read_line().startswith("ERR TOOLARGE")
            assert client.read_line() == "OK OK"
            assert client.request(f"QUERY GET too-big-{name}").startswith("ERR FSM")


# -- the peer port ----------------------------------------------------------------------------


def test_random_bytes_on_the_peer_port_close_only_that_connection(calm: Live) -> None:
    leader = calm.wait_leader()
    before = calm.status(leader)
    assert before is not None
    for name in calm.names:
        with socket.create_connection(("127.0.0.1", calm.node(name).p2p), timeout=5) as sock:
            sock.sendall(os.urandom(8192))
            closed = False
            deadline = time.monotonic() + 15  # past the 5 s handshake timeout, whatever came
            while time.monotonic() < deadline:
                try:
                    if sock.recv(65536) == b"":
                        closed = True
                        break
                except ConnectionResetError:
                    closed = True
                    break
                except TimeoutError:
                    continue
            assert closed, f"{name} kept a connection that sent garbage open"

    # Nothing else noticed: same leader, same term, and forwarding still works everywhere.
    assert calm.wait_leader() == leader
    after = calm.status(leader)
    assert after is not None and after["term"] == before["term"]
    for name in calm.names:
        assert calm.ask(name, f"APPLY SET after-noise-{name} yes") == "OK OK"
        assert calm.status(name)["health"] == "ok"  # type: ignore[index]


# -- the FSM ----------------------------------------------------------------------------------


def test_fsm_exit_1_is_err_fsm_and_still_counts_as_applied(calm: Live) -> None:
    leader = calm.wait_leader()
    follower = next(name for name in calm.names if name != leader)
    calm.wait_converged()
    applied = calm.status(leader)["applied"]  # type: ignore[index]

    assert calm.ask(leader, "APPLY FAIL boom") == "ERR FSM exit status 1: boom"
    assert calm.status(leader)["applied"] == applied + 1  # type: ignore[index]
    assert calm.ask(follower, "APPLY FAIL forwarded boom") == (
        "ERR FSM exit status 1: forwarded boom"
    )
    assert calm.ask(follower, "APPLY SET after-fail yes") == "OK OK"
    assert calm.status(leader)["applied"] == applied + 3  # type: ignore[index]
    assert calm.wait_converged() == applied + 3


def fsm_processes(flag: Path) -> list[psutil.Process]:
    """Processes whose command line names the hang flag (the FSM and its grandchild)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if str(flag) in (process.info["cmdline"] or []):
            found.append(process)
    return found


def test_hanging_fsm_is_killed_at_its_timeout_degrades_and_recovers(calm: Live) -> None:
    flag = calm.hang_flag
    assert flag is not None
    calm.wait_leader()
    calm.wait_converged()
    pids = {name: calm.pid(name) for name in calm.names}
    oldest = 0.0
    flag.touch()
    try:
        reply = calm.ask(calm.names[0], "APPLY SET during-hang 1", 15.0)
        assert reply is not None and reply.startswith("ERR TIMEOUT"), reply

        def degraded() -> dict[str, str] | None:
            nonlocal oldest
            for process in fsm_processes(flag):  # each attempt dies at fsm.timeout
                with_age = time.time() - process.create_time()
                oldest = max(oldest, with_age)
            reasons = {n: calm.status(n).get("reason", "") for n in calm.names}  # type: ignore[union-attr]
            return reasons if all("timed out" in r for r in reasons.values()) else None

        reasons = wait_for(degraded, 10.0, "every node to report degraded")
        for name, reason in reasons.items():
            assert calm.status(name)["health"] == "degraded", name  # type: ignore[index]
            assert "apply" in reason, reason
        time.sleep(1.0)
        degraded()
    finally:
        flag.unlink()

    wait_for(
        lambda: all(calm.status(n)["health"] == "ok" for n in calm.names),  # type: ignore[index]
        15.0,
        "health to return to ok",
    )
    # The entry was retried, never skipped: it is applied everywhere.
    calm.wait_converged()
    for name in calm.names:
        assert calm.ask(name, "LOCAL GET during-hang") == "OK 1"
    print(f"oldest hanging FSM process seen: {oldest:.2f} s (fsm.timeout 0.5 s)")
    assert oldest < 3.0, "a hanging FSM call outlived its timeout"
    wait_for(lambda: not fsm_processes(flag), 5.0, "no hanging FSM process left")
    for name, pid in pids.items():
        children = psutil.Process(pid).children(recursive=True)
        assert all(str(flag) not in child.cmdline() for child in children), name
