"""Stream mode: the runner against the Python binding, both real processes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from graft.fsm import (
    ApplyCall,
    FsmError,
    FsmFault,
    FsmStateLost,
    StreamStateMachine,
    open_state_machine,
)
from graft.fsm.framing import FramingError, encode_request, parse_reply_header

from .conftest import Settings

COUNTER = """
import json, os, time
import graft_fsm

class Counter(graft_fsm.StateMachine):
    def __init__(self):
        self.n = 0

    def apply(self, command, index, term):
        if command == b"boom":
            raise graft_fsm.FsmError("no boom here", status=3)
        if command == b"crash":
            raise KeyError("oops")
        if command == b"die":
            os._exit(0)
        if command == b"hang":
            time.sleep(30)
        print("stray output goes to stderr")
        self.n += int(command or b"1")
        return f"{self.n} at {index}/{term}"

    def query(self, command):
        return command + b"=" + str(self.n).encode()

    def dump(self):
        yield b"%d" % self.n
        yield b"|" + b"x" * 200_000

    def load(self, data):
        raw = data.read()
        self.n = int(raw.split(b"|")[0]) if raw else 0

graft_fsm.run(Counter())
"""


def machine(command: str, tmp_path: Path, timeout_ms: int = 5000) -> StreamStateMachine:
    settings = Settings(command, mode="stream", timeout_ms=timeout_ms)
    sm = open_state_machine(settings, node_id="n1", state_dir=tmp_path / "st")
    assert isinstance(sm, StreamStateMachine)
    return sm


async def _parts(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_apply_query_dump_load_round_trip(
    script: Callable[[str], str], tmp_path: Path
) -> None:
    sm = machine(script(COUNTER), tmp_path)
    try:
        assert await sm.apply(b"5", 10, 2) == b"5 at 10/2"
        assert await sm.apply(b"2", 11, 2) == b"7 at 11/2"
        assert await sm.query(b"n") == b"n=7"
        assert await sm.query(b"a\nb\x00") == b"a\nb\x00=7"

        dumped = [chunk async for chunk in sm.dump()]
        assert b"".join(dumped) == b"7|" + b"x" * 200_000

        await sm.load(None)
        assert await sm.query(b"n") == b"n=0"
        await sm.load(_parts(*dumped))
        assert await sm.query(b"n") == b"n=7"
    finally:
        await sm.close()


async def test_errors_are_results_and_the_stream_goes_on(
    script: Callable[[str], str], tmp_path: Path
) -> None:
    sm = machine(script(COUNTER), tmp_path)
    try:
        with pytest.raises(FsmError) as caught:
            await sm.apply(b"boom", 1, 1)
        assert (caught.value.status, caught.value.stderr) == (3, b"no boom here\n")

        with pytest.raises(FsmError) as crashed:
            await sm.apply(b"crash", 2, 1)
        assert crashed.value.status == 1 and b"KeyError: 'oops'" in crashed.value.stderr

        assert await sm.apply(b"1", 3, 1) == b"1 at 3/1"
    finally:
        await sm.close()


async def test_a_dead_process_loses_its_state_until_load(
    script: Callable[[str], str], tmp_path: Path
) -> None:
    sm = machine(script(COUNTER), tmp_path)
    try:
        await sm.apply(b"4", 1, 1)

        with pytest.raises(FsmFault, match="in-memory state is lost") as died:
            await sm.apply(b"die", 2, 1)
        assert not isinstance(died.value, FsmStateLost)
        with pytest.raises(FsmStateLost, match="load"):
            await sm.query(b"n")

        await sm.load(_parts(b"4|"))
        assert await sm.query(b"n") == b"n=4"
    finally:
        await sm.close()


async def test_a_timeout_kills_the_process(script: Callable[[str], str], tmp_path: Path) -> None:
    sm = machine(script(COUNTER), tmp_path, timeout_ms=300)
    try:
        await sm.apply(b"1", 1, 1)
        pid = sm._proc.pid if sm._proc else 0

        with pytest.raises(FsmFault, match="timed out after 300 ms"):
            await sm.apply(b"hang", 2, 1)

        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the process is gone
        with pytest.raises(FsmStateLost):
            await sm.apply(b"1", 2, 1)
    finally:
        await sm.close()


async def test_garbage_on_stdout_is_a_fault(script: Callable[[str], str], tmp_path: Path) -> None:
    sm = machine(
        script(
            "import sys\nsys.stdin.readline()\nprint('hello, world', flush=True)\nsys.stdin.read()"
        ),
        tmp_path,
    )
    try:
        with pytest.raises(FsmFault, match="bad reply header"):
            await sm.query(b"x")
    finally:
        await sm.close()


async def test_close_lets_the_process_exit_on_eof(
    script: Callable[[str], str], tmp_path: Path
) -> None:
    sm = machine(script(COUNTER), tmp_path)
    await sm.apply(b"1", 1, 1)
    proc = sm._proc
    assert proc is not None

    await sm.close()

    assert proc.returncode == 0


def test_request_frames() -> None:
    assert encode_request("apply", b"a\nb", 42, 7) == b"apply 42 7 3\na\nb"
    assert encode_request("end") == b"end 0 0 0\n"
    with pytest.raises(ValueError, match="unknown stream verb"):
        encode_request("stream")


@pytest.mark.parametrize(
    "line",
    [
        b"0 1\n",
        b"0 1 2",
        b"-1 0 0\n",
        b"126 0 0\n",
        b"ok 0 0\n",
        b"0 x 0\n",
        b"0 1073741824 1\n",
        b"0 0 0 \n",
        b"0 " + b"9" * 200 + b" 0\n",
    ],
)
def test_bad_reply_headers_are_refused(line: bytes) -> None:
    with pytest.raises(FramingError):
        parse_reply_header(line)


def test_good_reply_headers() -> None:
    assert parse_reply_header(b"data 5 0\n").status is None
    header = parse_reply_header(b"3 4 5\n")
    assert (header.status, header.out_len, header.err_len, header.body_len) == (3, 4, 5, 9)


async def test_apply_many_pipelines_a_batch_and_keeps_errors_in_place(
    script: Callable[[str], str], tmp_path: Path
) -> None:
    sm = machine(script(COUNTER), tmp_path)
    try:
        calls = [ApplyCall(b"1", 1, 1), ApplyCall(b"boom", 2, 1), ApplyCall(b"2", 3, 1)]
        first, error, last = await sm.apply_many(calls)

        assert first == b"1 at 1/1"
        assert isinstance(error, FsmError) and error.status == 3
        assert last == b"3 at 3/1"
        assert await sm.query(b"n") == b"n=3"
    finally:
        await sm.close()
