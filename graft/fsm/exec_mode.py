"""Exec mode: one process per call, `command VERB` (DESIGN §3).

Process start-up is the whole cost of this mode, so a call does the least around it: the
argv and environment are built once, and apply/query use a single communicate().
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from graft.fsm.base import ApplyCall, FsmSettings, apply_each
from graft.fsm.errors import FsmError, FsmFault
from graft.fsm.process import (
    DEVNULL,
    PIPE,
    describe_status,
    kill_and_reap,
    read_tail,
    spawn,
)

log = logging.getLogger("graft.fsm")

VERBS = ("apply", "query", "dump", "load")
CHUNK = 256 * 1024
T = TypeVar("T")


def verb_argvs(settings: FsmSettings) -> dict[str, list[str]]:
    """`command VERB`, or the per-verb command that replaces it, split like a shell would."""
    argvs = {}
    for verb in VERBS:
        override = settings.verbs.get(verb)
        if override is not None:
            argvs[verb] = shlex.split(override)
        elif settings.command is not None:
            argvs[verb] = [*shlex.split(settings.command), verb]
        else:
            raise ValueError(f"fsm: no command for verb {verb!r} (set fsm.command)")
    return argvs


def base_env(node_id: str, state_dir: Path) -> dict[str, str]:
    state_dir.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "GRAFT_NODE_ID": node_id,
        "GRAFT_STATE_DIR": str(state_dir.resolve()),
    }


def stdin_file(data: bytes) -> int:
    """A file descriptor holding `data`, ready to be the child's stdin.

    An in-memory file rather than a pipe: it is filled before the child starts, so there is
    no writer to schedule and no race with a child that exits without reading (uvloop then
    refuses the write), and whatever its size it never blocks.
    """
    fd = os.memfd_create("graft-fsm-stdin", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd


def result(verb: str, status: int, stdout: bytes, stderr: bytes) -> bytes:
    """Sort an exit status into a result, a deterministic error or a fault (DESIGN §3)."""
    if status == 0:
        return stdout
    if 1 <= status <= 125:
        raise FsmError(verb, status, stdout, stderr)
    raise FsmFault(verb, describe_status(status), stderr)


class ExecStateMachine:
    """Runs `command VERB` once per call; calls may overlap (each is its own process)."""

    def __init__(self, settings: FsmSettings, *, node_id: str, state_dir: Path) -> None:
        self._argv = verb_argvs(settings)
        self._env = base_env(node_id, state_dir)
        self._timeout_ms = settings.timeout_ms
        self._running: set[asyncio.subprocess.Process] = set()

    async def apply(self, data: bytes, index: int, term: int) -> bytes:
        env = {**self._env, "GRAFT_INDEX": str(index), "GRAFT_TERM": str(term)}
        return await self._call("apply", data, env)

    pipelines = False

    async def apply_many(self, calls: Sequence[ApplyCall]) -> list[bytes | FsmError]:
        """One process per call, one after the other: each sees the state the last left."""
        return await apply_each(self.apply, calls)

    async def query(self, data: bytes) -> bytes:
        return await self._call("query", data, self._env)

    async def dump(self) -> AsyncIterator[bytes]:
        proc = await self._start("dump", self._env, stdin=DEVNULL)
        assert proc.stdout is not None
        stderr = asyncio.ensure_future(read_tail(proc.stderr))
        status = None
        try:
            # The timeout bounds each wait for progress, not the whole (maybe large) dump.
            while chunk := await self._within("dump", proc.stdout.read(CHUNK)):
                yield chunk
            status = await self._within("dump", proc.wait())
        finally:
            await self._finish(proc)
            if status is None:
                stderr.cancel()
        if status != 0:
            raise FsmFault("dump", f"exited with status {status}", await stderr)

    async def load(self, chunks: AsyncIterable[bytes] | None) -> None:
        proc = await self._start("load", self._env, stdin=PIPE)
        assert proc.stdin is not None
        drains = asyncio.gather(read_tail(proc.stdout), read_tail(proc.stderr))
        status = None
        try:
            await self._feed(proc.stdin, chunks)
            status = await self._within("load", proc.wait())
        finally:
            await self._finish(proc)
            if status is None:
                drains.cancel()
        stdout, stderr = await drains
        if status != 0:
            # A state that failed to load is no state at all: a fault, whatever the status.
            raise FsmFault("load", f"exited with status {status}", stderr or stdout)

    async def close(self) -> None:
        for proc in list(self._running):
            await kill_and_reap(proc)

    async def _call(self, verb: str, data: bytes, env: Mapping[str, str]) -> bytes:
        stdin = stdin_file(data)
        try:
            proc = await self._start(verb, env, stdin=stdin)
        finally:
            os.close(stdin)
        try:
            stdout, stderr = await self._within(verb, proc.communicate())
        finally:
            await self._finish(proc)
        assert proc.returncode is not None
        return result(verb, proc.returncode, stdout, stderr)

    async def _start(
        self, verb: str, env: Mapping[str, str], *, stdin: int
    ) -> asyncio.subprocess.Process:
        proc = await spawn(verb, self._argv[verb], env, stdin=stdin)
        self._running.add(proc)
        return proc

    async def _finish(self, proc: asyncio.subprocess.Process) -> None:
        """Reap the process; one still running here timed out or was cancelled: kill it."""
        self._running.discard(proc)
        await kill_and_reap(proc)

    async def _within(self, verb: str, step: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(step, self._timeout_ms / 1000)
        except TimeoutError:
            raise FsmFault(verb, f"timed out after {self._timeout_ms} ms") from None

    async def _feed(self, stdin: asyncio.StreamWriter, chunks: AsyncIterable[bytes] | None) -> None:
        try:
            if chunks is not None:
                async for chunk in chunks:
                    # A child that exited closes the pipe; uvloop raises on a write to it.
                    if stdin.is_closing():
                        break
                    stdin.write(chunk)
                    await self._within("load", stdin.drain())
            stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            # It stopped reading: its exit status says whether that was a failure.
            log.debug("fsm load closed its stdin early")
