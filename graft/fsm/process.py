"""Starting and killing child processes. Each FSM call runs in its own session, so that a
timed-out call can be killed with everything it started."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence

import psutil

from graft.fsm.errors import FsmFault

PIPE = asyncio.subprocess.PIPE
DEVNULL = asyncio.subprocess.DEVNULL
TAIL_LIMIT = 64 * 1024


async def spawn(
    verb: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    stdin: int | None = PIPE,
    stdout: int | None = PIPE,
    stderr: int | None = PIPE,
) -> asyncio.subprocess.Process:
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=dict(env),
            start_new_session=True,
        )
    except OSError as exc:
        raise FsmFault(verb, f"could not be started ({argv[0]}: {exc.strerror or exc})") from exc


def kill_tree(pid: int) -> None:
    """SIGKILL the process's descendants, then the process and the rest of its session's
    process group (descendants that were reparented are out of the tree but still in it)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()

    # start_new_session made the process the leader of group `pid`.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


async def kill_and_reap(proc: asyncio.subprocess.Process) -> None:
    # Only a process not yet reaped is killed: once reaped, its pid may belong to another.
    if proc.returncode is None:
        kill_tree(proc.pid)
    await proc.wait()


def describe_status(status: int) -> str:
    """Why an exit status is a fault rather than a result (DESIGN §3)."""
    if status < 0:
        name = signal.Signals(-status).name if -status in signal.valid_signals() else "?"
        return f"was killed by signal {-status} ({name})"
    if status == 126:
        return "exited with status 126 (the command was found but could not be run)"
    if status == 127:
        return "exited with status 127 (the command was not found)"
    return f"exited with status {status} (above 125: not a deterministic error)"


async def read_tail(stream: asyncio.StreamReader | None, limit: int = TAIL_LIMIT) -> bytes:
    """Drain `stream` to EOF, keeping its last `limit` bytes (the part worth reporting)."""
    if stream is None:
        return b""
    tail = b""
    while chunk := await stream.read(limit):
        tail = (tail + chunk)[-limit:]
    return tail
