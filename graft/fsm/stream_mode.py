"""Stream mode: one long-lived `command stream` process, framed requests over its stdin and
replies over its stdout (graft/fsm/framing.py, docs/fsm.md).

One exchange at a time. An exchange that does not complete (timeout, broken framing, the
process died, the caller was cancelled) leaves the stream out of step, so the process is
killed and its in-memory state is counted lost: later calls raise FsmStateLost until `load`
starts a fresh process. The FSM's stderr is Graft's stderr; per-call error text travels in
the reply frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Sequence
from pathlib import Path
from typing import TypeVar

from graft.fsm.base import ApplyCall, FsmSettings
from graft.fsm.errors import FsmError, FsmFault, FsmStateLost
from graft.fsm.exec_mode import base_env, result
from graft.fsm.framing import FramingError, ReplyHeader, encode_request, parse_reply_header
from graft.fsm.process import PIPE, kill_and_reap, spawn

log = logging.getLogger("graft.fsm")

T = TypeVar("T")
Process = asyncio.subprocess.Process


class StreamStateMachine:
    def __init__(self, settings: FsmSettings, *, node_id: str, state_dir: Path) -> None:
        if settings.command is None:
            raise ValueError("fsm: stream mode needs fsm.command")
        self._argv = [*shlex.split(settings.command), "stream"]
        self._env = base_env(node_id, state_dir)
        self._timeout_ms = settings.timeout_ms
        self._lock = asyncio.Lock()
        self._proc: Process | None = None
        self._lost: str | None = None  # why the state of the current process is gone

    async def apply(self, data: bytes, index: int, term: int) -> bytes:
        return await self._call("apply", encode_request("apply", data, index, term))

    pipelines = True

    async def apply_many(self, calls: Sequence[ApplyCall]) -> list[bytes | FsmError]:
        """All requests in one write, then the replies in order: one round trip, not N.

        The FSM still applies them one at a time and in order; only the waiting between
        them is gone.
        """
        frames = b"".join(encode_request("apply", c.data, c.index, c.term) for c in calls)
        results: list[bytes | FsmError] = []
        async with self._lock:
            proc = await self._process("apply")
            async with self._exchange("apply", proc):
                await self._within(self._send(proc, frames))
                for _ in calls:
                    header, body = await self._within(self._receive(proc))
                    if header.status is None:
                        raise FramingError("a data frame answered apply")
                    try:
                        out, err = body[: header.out_len], body[header.out_len :]
                        results.append(result("apply", header.status, out, err))
                    except FsmError as error:
                        results.append(error)
        return results

    async def query(self, data: bytes) -> bytes:
        return await self._call("query", encode_request("query", data))

    async def dump(self) -> AsyncIterator[bytes]:
        async with self._lock:
            proc = await self._process("dump")
            async with self._exchange("dump", proc):
                await self._within(self._send(proc, encode_request("dump")))
                header, body = await self._within(self._receive(proc))
                while header.status is None:
                    yield body
                    header, body = await self._within(self._receive(proc))
        if header.status != 0:
            stderr = body[header.out_len :]
            raise FsmFault("dump", f"replied status {header.status}", stderr)

    async def load(self, chunks: AsyncIterable[bytes] | None) -> None:
        async with self._lock:
            proc = await self._fresh_process()
            async with self._exchange("load", proc):
                await self._within(self._send(proc, encode_request("load")))
                if chunks is not None:
                    async for chunk in chunks:
                        await self._within(self._send(proc, encode_request("data", chunk)))
                await self._within(self._send(proc, encode_request("end")))
                header, body = await self._within(self._receive(proc))
        if header.status != 0:
            # A state that failed to load is no state at all: a fault, whatever the status.
            self._lost = f"its load replied status {header.status}"
            raise FsmFault("load", f"replied status {header.status}", body)

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        self._lost = None
        if proc is None or proc.returncode is not None:
            return

        # EOF on stdin asks the process to exit; it gets one timeout to do so.
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), self._timeout_ms / 1000)
        except TimeoutError:
            log.warning("fsm stream process %d did not exit on EOF; killing it", proc.pid)
        await kill_and_reap(proc)

    async def _call(self, verb: str, request: bytes) -> bytes:
        async with self._lock:
            proc = await self._process(verb)
            async with self._exchange(verb, proc):
                await self._within(self._send(proc, request))
                header, body = await self._within(self._receive(proc))
                if header.status is None:
                    raise FramingError(f"a data frame answered {verb}")
        return result(verb, header.status, body[: header.out_len], body[header.out_len :])

    async def _process(self, verb: str) -> Process:
        """The running process; the first call starts it."""
        if self._proc is not None and self._proc.returncode is not None and self._lost is None:
            self._lost = f"its process exited with status {self._proc.returncode}"
        if self._lost is not None:
            raise FsmStateLost(
                verb, f"cannot run: {self._lost}; load() a snapshot to start a fresh process"
            )
        if self._proc is None:
            self._proc = await self._start()
        return self._proc

    async def _fresh_process(self) -> Process:
        """The process for a load: a lost one is replaced, since load sets the whole state."""
        if self._proc is not None and (self._lost is not None or self._proc.returncode is not None):
            await kill_and_reap(self._proc)
            self._proc = None
        if self._proc is None:
            self._proc = await self._start()
            self._lost = None
        return self._proc

    async def _start(self) -> Process:
        proc = await spawn("stream", self._argv, self._env, stdin=PIPE, stdout=PIPE, stderr=None)
        log.info("fsm stream process %d started: %s", proc.pid, shlex.join(self._argv))
        return proc

    @contextlib.asynccontextmanager
    async def _exchange(self, verb: str, proc: Process) -> AsyncIterator[None]:
        """One request and its reply. Leaving early, by any exception, breaks the stream."""
        try:
            yield
        except TimeoutError:
            raise await self._lose(verb, proc, f"timed out after {self._timeout_ms} ms") from None
        except (OSError, EOFError, asyncio.LimitOverrunError, FramingError) as exc:
            raise await self._lose(verb, proc, f"lost its stream process ({exc})") from exc
        except BaseException:
            # Cancelled, or the caller's chunks failed mid-load: the stream is out of step.
            await self._lose(verb, proc, "was interrupted mid-exchange")
            raise

    async def _lose(self, verb: str, proc: Process, reason: str) -> FsmFault:
        await kill_and_reap(proc)
        self._lost = f"fsm {verb} {reason} (process status {proc.returncode})"
        log.warning("fsm stream process %d lost: %s", proc.pid, self._lost)
        return FsmFault(verb, f"{reason}; its in-memory state is lost")

    async def _within(self, step: Awaitable[T]) -> T:
        return await asyncio.wait_for(step, self._timeout_ms / 1000)

    @staticmethod
    async def _send(proc: Process, frame: bytes) -> None:
        assert proc.stdin is not None
        if proc.stdin.is_closing():  # the process exited; uvloop would raise RuntimeError
            raise BrokenPipeError("the stream process closed its stdin")
        proc.stdin.write(frame)
        await proc.stdin.drain()

    @staticmethod
    async def _receive(proc: Process) -> tuple[ReplyHeader, bytes]:
        assert proc.stdout is not None
        header = parse_reply_header(await proc.stdout.readuntil(b"\n"))
        body = await proc.stdout.readexactly(header.body_len) if header.body_len else b""
        return header, body
