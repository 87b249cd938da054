"""What the CLI says and how it exits when something is wrong, before any node is involved.

The commands run in-process through typer's runner; the "cluster" is a port on 127.0.0.1
that nobody listens on, so every client call fails to connect.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from graft.cli.main import app

HINT = "is the cluster running? Start it with 'graft up'"


@pytest.fixture
def dead_port() -> int:
    """A port that was free a moment ago: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_status_exits_1_when_no_member_answers(dead_port: int) -> None:
    code, output = run("status", "--cluster", f"127.0.0.1:{dead_port}", "--timeout", "1")

    assert code == 1
    assert "unreachable" in output
    assert f"no member answered; {HINT}" in output


def test_apply_to_a_stopped_cluster_says_not_applied_and_what_to_do(dead_port: int) -> None:
    code, output = run("apply", "SET a 1", "--cluster", f"127.0.0.1:{dead_port}")

    assert code == 1
    assert "UNREACHABLE" in output
    assert "(outcome: not applied)" in output
    assert HINT in output


def test_a_bad_config_is_named_by_the_path_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("staging.yaml").write_text("peers:\n  a: {host: 127.0.0.1, ports: {p2p: 9001, api: x}}\n")

    code, output = run("start", "a", "--config", "staging.yaml")

    assert code == 2
    assert "staging.yaml: peers.a.ports.api: must be an integer 1..65535 (got 'x')" in output
    assert not Path("data").exists()  # refused before anything was opened


def test_an_unknown_node_id_names_the_built_in_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    code, output = run("start", "zed")

    assert code == 2
    assert "the built-in graft.yaml: peers: 'zed' is not a peer" in output
    assert "known: turing, ritchie, lovelace" in output
    assert not Path("data").exists()
