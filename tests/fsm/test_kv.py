"""examples/fsm-scripts/kv.sh through the exec runner: real bash and jq processes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from graft.fsm import FsmError, open_state_machine
from graft.fsm.exec_mode import ExecStateMachine

from .conftest import KV, Settings


@pytest.fixture
def kv(tmp_path: Path) -> ExecStateMachine:
    sm = open_state_machine(Settings(str(KV)), node_id="n1", state_dir=tmp_path / "kv")
    assert isinstance(sm, ExecStateMachine)
    return sm


async def _dump(sm: ExecStateMachine) -> bytes:
    return b"".join([chunk async for chunk in sm.dump()])


async def _parts(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_set_get_del_incr(kv: ExecStateMachine) -> None:
    assert await kv.apply(b"SET name ada  lovelace\n", 1, 1) == b"OK\n"
    assert await kv.query(b"GET name\n") == b"ada  lovelace\n"
    assert await kv.apply(b"incr hits\r\n", 2, 1) == b"1\n"
    assert await kv.apply(b"INCR hits\n", 3, 1) == b"2\n"
    assert await kv.apply(b"DEL name\n", 4, 1) == b"1\n"
    assert await kv.apply(b"DEL name\n", 5, 1) == b"0\n"

    assert json.loads(await _dump(kv)) == {"hits": "2"}


@pytest.mark.parametrize(
    ("verb", "command", "message"),
    [
        ("apply", b"SET n x\nINCR n\n", None),
        ("query", b"GET nope\n", b"no such key: nope"),
        ("query", b"SET a b\n", b"a query may only GET"),
        ("apply", b"FLY a\n", b"unknown command 'FLY'"),
        ("apply", b"SET a\n", b"usage: SET key value"),
        ("apply", b"\n", b"empty command"),
    ],
)
async def test_errors_exit_1_and_leave_the_state_alone(
    kv: ExecStateMachine, verb: str, command: bytes, message: bytes | None
) -> None:
    await kv.apply(b"SET n x\n", 1, 1)

    if message is None:  # the first line only: SET n x again, which succeeds
        assert await kv.apply(command, 2, 1) == b"OK\n"
        command, message = b"INCR n\n", b"INCR n: not an integer: x"
    with pytest.raises(FsmError) as caught:
        await (kv.query(command) if verb == "query" else kv.apply(command, 3, 1))

    assert caught.value.status == 1
    assert message in caught.value.stderr
    assert json.loads(await _dump(kv)) == {"n": "x"}


async def test_dump_load_and_reset(kv: ExecStateMachine, tmp_path: Path) -> None:
    assert await _dump(kv) == b"{}\n"
    await kv.apply(b"SET a 1\n", 1, 1)
    saved = await _dump(kv)

    await kv.load(None)
    assert await _dump(kv) == b"{}\n"
    await kv.load(_parts(saved[:3], saved[3:]))
    assert await kv.query(b"GET a\n") == b"1\n"

    with pytest.raises(Exception, match="not a kv.sh dump"):
        await kv.load(_parts(b"[1, 2]"))
    assert await kv.query(b"GET a\n") == b"1\n"
    assert sorted(p.name for p in (tmp_path / "kv").iterdir()) == ["kv.json"]
