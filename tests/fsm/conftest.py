"""Helpers for FSM tests: real child processes, Python ones run with sys.executable -S."""

from __future__ import annotations

import asyncio
import inspect
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvloop

ROOT = Path(__file__).resolve().parents[2]
BINDINGS = ROOT / "bindings" / "python"
KV = ROOT / "examples" / "fsm-scripts" / "kv.sh"


@dataclass(frozen=True)
class Settings:
    """Shaped like graft.config.FsmConfig (the fsm layer only sees this protocol)."""

    command: str | None
    mode: str = "exec"
    timeout_ms: int = 5000
    verbs: Mapping[str, str] = field(default_factory=dict)


def python_command(script: Path) -> str:
    return shlex.join([sys.executable, "-S", str(script)])


@pytest.fixture
def script(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write a Python FSM script; return the command that runs it."""

    def write(source: str, name: str = "fsm.py") -> str:
        path = tmp_path / name
        prelude = f"import sys\nsys.path.insert(0, {str(BINDINGS)!r})\n"
        path.write_text(prelude + source)
        return python_command(path)

    return write


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture(params=sorted(LOOPS), autouse=True)
def loop_name(request: pytest.FixtureRequest) -> str:
    """Every async test runs on both loops: plain asyncio, and uvloop as the node uses."""
    return str(request.param)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    factory = LOOPS[str(pyfuncitem.funcargs["loop_name"])]
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(asyncio.wait_for(pyfuncitem.obj(**kwargs), 30))
    return True
