"""The test FSM run as a real process, and the fault proxy in front of real echo servers."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .fsm_harness import FSM_SCRIPT, fsm_command
from .proxy import FaultProxy


def fsm(state_dir: Path, verb: str, data: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*shlex.split(fsm_command()), verb],
        input=data,
        capture_output=True,
        text=True,
        env={"GRAFT_STATE_DIR": str(state_dir), "GRAFT_NODE_ID": "n1"},
        timeout=20,
        check=False,
    )


def test_fsm_registers_lists_dump_and_load(tmp_path: Path) -> None:
    assert FSM_SCRIPT.exists()
    assert fsm(tmp_path, "apply", "R x\n").stdout == "NIL\n"
    assert fsm(tmp_path, "apply", "W x 1\n").stdout == "OK\n"
    assert fsm(tmp_path, "query", "R x\n").stdout == "1\n"
    assert fsm(tmp_path, "apply", "CAS x 2 3\n").stdout == "FAIL\n"
    assert fsm(tmp_path, "apply", "CAS x 1 3\n").stdout == "OK\n"
    assert fsm(tmp_path, "query", "R x\n").stdout == "3\n"
    assert fsm(tmp_path, "query", "L l\n").stdout == "\n"
    assert fsm(tmp_path, "apply", "A l a\n").stdout == "OK\n"
    assert fsm(tmp_path, "apply", "A l b\n").stdout == "OK\n"
    assert fsm(tmp_path, "query", "L l\n").stdout == "a b\n"

    dumped = fsm(tmp_path, "dump").stdout
    assert json.loads(dumped) == {"registers": {"x": "3"}, "lists": {"l": ["a", "b"]}}
    assert fsm(tmp_path, "load", "").returncode == 0
    assert fsm(tmp_path, "query", "R x\n").stdout == "NIL\n"
    assert fsm(tmp_path, "load", dumped).returncode == 0
    assert fsm(tmp_path, "query", "L l\n").stdout == "a b\n"
    assert not list(tmp_path.glob("*.tmp"))


def test_fsm_refuses_writes_in_query_and_bad_commands(tmp_path: Path) -> None:
    refused = fsm(tmp_path, "query", "W x 1\n")
    assert refused.returncode == 2 and "query accepts only" in refused.stderr
    assert fsm(tmp_path, "query", "R x\n").stdout == "NIL\n"
    assert fsm(tmp_path, "apply", "W x\n").returncode == 2
    assert fsm(tmp_path, "bogus").returncode == 2


def test_fsm_runs_on_the_real_interpreter_without_site() -> None:
    """Each apply on each node starts this FSM, so it must start fast: the interpreter
    itself (not a version-manager shim from PATH) with -S. The tests above show that it
    works without site-packages; what its start costs is a benchmark's business."""
    argv = shlex.split(fsm_command())

    assert argv[:2] == [sys.executable, "-S"]
    assert Path(argv[0]).resolve() == Path(sys.executable).resolve()


async def echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def round_trip(port: int, within: float = 0.5) -> bytes | None:
    """Send a line through the proxy and wait for its echo; None if nothing came back."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    try:
        writer.write(b"ping\n")
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), within) or None
    except (TimeoutError, ConnectionError):
        return None
    finally:
        writer.close()


@pytest.mark.timeout(30)
def test_proxy_partitions_delay_and_heal() -> None:
    async def scenario() -> None:
        server, port = await echo_server()
        proxy = FaultProxy({"a": port, "b": port, "c": port})
        await proxy.start()
        try:
            assert await round_trip(proxy.port("a", "b")) == b"ping\n"

            # An open connection is cut when the link is blocked.
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port("a", "b"))
            writer.write(b"x\n")
            assert await reader.readline() == b"x\n"
            proxy.isolate("a")
            assert await asyncio.wait_for(reader.read(), 2) == b""
            assert await round_trip(proxy.port("a", "b")) is None
            assert await round_trip(proxy.port("b", "a")) is None
            assert await round_trip(proxy.port("b", "c")) == b"ping\n"
            proxy.heal()
            assert await round_trip(proxy.port("a", "b")) == b"ping\n"

            # One way: a's bytes do not reach b; b's request reaches a, a's reply is lost.
            proxy.one_way("a", ["b"])
            assert await round_trip(proxy.port("a", "b")) is None
            assert await round_trip(proxy.port("b", "a")) is None
            assert await round_trip(proxy.port("a", "c")) == b"ping\n"
            proxy.heal()

            proxy.split(["a"])
            assert await round_trip(proxy.port("c", "a")) is None
            assert await round_trip(proxy.port("c", "b")) == b"ping\n"
            proxy.heal()

            proxy.set_delay(0.2, [("a", "b")])
            began = time.monotonic()
            assert await round_trip(proxy.port("a", "b"), within=2) == b"ping\n"
            assert time.monotonic() - began >= 0.2
            proxy.heal()

            proxy.flap("a", 0.2)
            results = []
            for _ in range(8):
                results.append(await round_trip(proxy.port("a", "b"), within=0.1))
                await asyncio.sleep(0.07)
            assert None in results and b"ping\n" in results
            proxy.heal()
            assert await round_trip(proxy.port("a", "b")) == b"ping\n"
        finally:
            await proxy.stop()
            server.close()

    asyncio.run(scenario())
