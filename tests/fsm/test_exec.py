"""Exec mode against real child processes (DESIGN §3)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path

import psutil
import pytest

from graft.fsm import ApplyCall, ExecStateMachine, FsmError, FsmFault, open_state_machine

from .conftest import Settings

ECHO_ENV = """
import os, sys
data = sys.stdin.buffer.read()
names = ("GRAFT_NODE_ID", "GRAFT_STATE_DIR", "GRAFT_INDEX", "GRAFT_TERM")
env = {k: os.environ.get(k) for k in names}
sys.stdout.write(f"{sys.argv[1:]}|{data!r}|{env}")
"""


def machine(command: str, tmp_path: Path, **kw: object) -> ExecStateMachine:
    sm = open_state_machine(Settings(command, **kw), node_id="turing", state_dir=tmp_path / "st")  # type: ignore[arg-type]
    assert isinstance(sm, ExecStateMachine)
    return sm


async def test_apply_gets_verb_stdin_and_environment(
    script: Callable[[str], str], tmp_path: Path
) -> None:
    sm = machine(script(ECHO_ENV), tmp_path)

    out = await sm.apply(b"SET a 1\n", index=42, term=7)

    state_dir = str((tmp_path / "st").resolve())
    expected_env = {
        "GRAFT_NODE_ID": "turing",
        "GRAFT_STATE_DIR": state_dir,
        "GRAFT_INDEX": "42",
        "GRAFT_TERM": "7",
    }
    sent = repr(b"SET a 1\n")
    assert out == f"['apply']|{sent}|{expected_env}".encode()
    assert (tmp_path / "st").is_dir()


async def test_query_has_no_index_or_term(script: Callable[[str], str], tmp_path: Path) -> None:
    out = await machine(script(ECHO_ENV), tmp_path).query(b"GET a")

    assert out.startswith(b"['query']|b'GET a'|")
    assert b"'GRAFT_INDEX': None, 'GRAFT_TERM': None" in out


async def test_per_verb_command_replaces_command_verb(
    script: Callable[[str], str], tmp_path: Path
) -> None:
    override = script(ECHO_ENV, "other.py") + " custom-arg"
    sm = machine("/bin/false", tmp_path, verbs={"query": override})

    assert (await sm.query(b"x")).startswith(b"['custom-arg']|b'x'|")
    with pytest.raises(FsmError):
        await sm.apply(b"x", 1, 1)


async def test_exit_1_to_125_is_a_deterministic_error(
    script: Callable[[str], str], tmp_path: Path
) -> None:
    cmd = script(
        "import sys\nsys.stdout.write('partial')\nsys.stderr.write('bad key')\nsys.exit(125)"
    )

    with pytest.raises(FsmError) as caught:
        await machine(cmd, tmp_path).apply(b"x", 1, 1)

    assert (caught.value.status, caught.value.stdout, caught.value.stderr) == (
        125,
        b"partial",
        b"bad key",
    )
    assert "status 125: bad key" in str(caught.value)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("sys.exit(126)", "status 126"),
        ("sys.exit(127)", "not found"),
        ("sys.exit(130)", "above 125"),
        ("os.kill(os.getpid(), signal.SIGKILL)", "killed by signal 9 (SIGKILL)"),
    ],
)
async def test_other_statuses_are_faults(
    script: Callable[[str], str], tmp_path: Path, code: str, reason: str
) -> None:
    cmd = script(f"import os, signal, sys\n{code}")

    with pytest.raises(FsmFault) as caught:
        await machine(cmd, tmp_path).apply(b"x", 1, 1)

    assert reason in caught.value.reason


async def test_a_missing_program_is_a_fault(tmp_path: Path) -> None:
    with pytest.raises(FsmFault, match="could not be started"):
        await machine(str(tmp_path / "nope.sh"), tmp_path).apply(b"x", 1, 1)


async def test_timeout_kills_the_whole_process_tree(
    script: Callable[[str], str], tmp_path: Path
) -> None:
    pidfile = tmp_path / "grandchild.pid"
    cmd = script(
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen(['sleep', '30'])\nopen({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(30)\n"
    )

    with pytest.raises(FsmFault, match="timed out after 300 ms"):
        await machine(cmd, tmp_path, timeout_ms=300).apply(b"x", 1, 1)

    grandchild = int(pidfile.read_text())
    assert (
        not psutil.pid_exists(grandchild)
        or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
    )


async def test_dump_streams_stdout_in_chunks(script: Callable[[str], str], tmp_path: Path) -> None:
    cmd = script(
        "import sys\nfor i in range(40):\n    sys.stdout.buffer.write(bytes([i]) * 100_000)\n"
    )

    chunks = [chunk async for chunk in machine(cmd, tmp_path).dump()]

    assert len(chunks) > 1
    assert b"".join(chunks) == b"".join(bytes([i]) * 100_000 for i in range(40))


async def test_a_failed_dump_is_a_fault(script: Callable[[str], str], tmp_path: Path) -> None:
    cmd = script("import sys\nsys.stdout.write('half')\nsys.stderr.write('disk full')\nsys.exit(1)")

    with pytest.raises(FsmFault, match="exited with status 1: disk full"):
        _ = [chunk async for chunk in machine(cmd, tmp_path).dump()]


async def test_closing_a_dump_early_kills_its_process(
    script: Callable[[str], str], tmp_path: Path
) -> None:
    cmd = script("import os, sys\nprint(os.getpid(), flush=True)\nimport time\ntime.sleep(30)\n")

    async with aclosing(machine(cmd, tmp_path).dump()) as chunks:
        pid = int(await anext(chunks))

    assert not psutil.pid_exists(pid)


async def _parts(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_load_feeds_chunks_and_none_is_empty_stdin(
    script: Callable[[str], str], tmp_path: Path
) -> None:
    out = tmp_path / "loaded"
    sm = machine(
        script(f"import sys\nopen({str(out)!r}, 'wb').write(sys.stdin.buffer.read())"), tmp_path
    )

    await sm.load(_parts(b"abc", b"", b"def" * 100_000))
    assert out.read_bytes() == b"abc" + b"def" * 100_000

    await sm.load(None)
    assert out.read_bytes() == b""


async def test_a_failed_load_is_a_fault(script: Callable[[str], str], tmp_path: Path) -> None:
    cmd = script("import sys\nsys.stderr.write('not a dump')\nsys.exit(3)")

    with pytest.raises(FsmFault, match="status 3: not a dump"):
        await machine(cmd, tmp_path).load(_parts(b"x" * 1_000_000))


async def test_calls_may_overlap(script: Callable[[str], str], tmp_path: Path) -> None:
    sm = machine(
        script("import sys, time\ntime.sleep(0.3)\nsys.stdout.write(sys.stdin.read())"), tmp_path
    )

    started = asyncio.get_running_loop().time()
    outs = await asyncio.gather(*(sm.query(b"%d" % i) for i in range(4)))

    assert outs == [b"0", b"1", b"2", b"3"]
    assert asyncio.get_running_loop().time() - started < 1.1


def test_no_leftover_children() -> None:
    assert [
        p for p in psutil.Process(os.getpid()).children() if p.status() != psutil.STATUS_ZOMBIE
    ] == []


async def test_apply_many_runs_one_process_per_call_in_order(
    script: Callable[[str], str], tmp_path: Path
) -> None:
    counter = """
import os, sys
path = os.path.join(os.environ["GRAFT_STATE_DIR"], "n")
n = int(open(path).read()) if os.path.exists(path) else 0
command = sys.stdin.read()
if command == "bad":
    sys.exit(4)
open(path, "w").write(str(n + 1))
print(f"{n + 1}@{os.environ['GRAFT_INDEX']}", end="")
"""
    sm = machine(script(counter), tmp_path)
    calls = [ApplyCall(b"x", 5, 1), ApplyCall(b"bad", 6, 1), ApplyCall(b"x", 7, 1)]

    first, error, last = await sm.apply_many(calls)

    assert (first, last) == (b"1@5", b"2@7")
    assert isinstance(error, FsmError) and error.status == 4
