"""Clients that drive the line API (DESIGN §4) and record every operation in a history."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .history import APPEND, CAS, FAIL, LIST_READ, OK, READ, UNKNOWN, WRITE, Op

# Replies that mean "certainly not applied" (DESIGN §4).
DEFINITE_ERRORS = ("NOLEADER", "BADREQUEST", "TOOLARGE", "NOTLEADER")


def unescape(result: str) -> str:
    """Undo the reply escaping of DESIGN §4: \\\\, \\r and \\n."""
    out, chars = [], iter(result)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        following = next(chars, "")
        out.append({"n": "\n", "r": "\r", "\\": "\\"}.get(following, following))
    return "".join(out)


def classify(reply: str) -> tuple[str, str | None, str]:
    """(outcome, result, error) for one reply line."""
    if reply == "OK" or reply.startswith("OK "):
        return OK, unescape(reply[3:]), ""
    if reply.startswith("REDIRECT"):
        return FAIL, None, reply
    words = reply.split()
    if len(words) >= 2 and words[0] == "ERR" and words[1] in DEFINITE_ERRORS:
        return FAIL, None, reply
    # TIMEOUT, FSM (applied, effect unknown to the model) or anything unexpected.
    return UNKNOWN, None, reply


def request_for(op: Op) -> str:
    if op.kind == WRITE:
        return f"APPLY W {op.key} {op.value}"
    if op.kind == READ:
        return f"QUERY R {op.key}"
    if op.kind == CAS:
        old, new = op.value  # type: ignore[misc]
        return f"APPLY CAS {op.key} {old} {new}"
    if op.kind == APPEND:
        return f"APPLY A {op.key} {op.value}"
    return f"QUERY L {op.key}"


def interpret(op: Op, outcome: str, result: str | None, error: str) -> None:
    """Fill op's outcome and result from the reply, with the FSM's meaning of the result."""
    op.outcome, op.error = outcome, error
    if outcome != OK or result is None:
        if op.kind in (READ, LIST_READ):
            # A read has no effect: an unanswered read is as good as a failed one.
            op.outcome = FAIL if outcome != OK else op.outcome
        return
    if op.kind == READ:
        op.result = None if result == "NIL" else result
    elif op.kind == LIST_READ:
        op.result = result.split()
    elif op.kind == CAS:
        op.result = result
        op.outcome = OK if result == "OK" else FAIL
    else:
        op.result = result
        if result != "OK":
            op.outcome = UNKNOWN


@dataclass
class Connection:
    """One TCP connection to some node's api port; requests strictly one at a time."""

    ports: dict[str, int]
    home: str
    timeout: float
    node: str = ""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None

    async def connect(self) -> bool:
        order = [self.home] + [node for node in self.ports if node != self.home]
        for node in order:
            try:
                self.reader, self.writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.ports[node]), self.timeout
                )
            except (OSError, TimeoutError):
                continue
            self.node = node
            return True
        return False

    def drop(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def call(self, line: str) -> tuple[str, str | None, str]:
        """Send one request: (outcome, result, error). Drops the connection on doubt."""
        if self.writer is None and not await self.connect():
            return FAIL, None, "no node accepted a connection"  # nothing was sent
        assert self.reader is not None and self.writer is not None
        try:
            self.writer.write(line.encode() + b"\n")
            await self.writer.drain()
            raw = await asyncio.wait_for(self.reader.readline(), self.timeout)
        except TimeoutError:
            self.drop()  # a late reply would be mistaken for the next one's
            return UNKNOWN, None, "client timeout"
        except (ConnectionError, OSError) as error:
            self.drop()
            return UNKNOWN, None, f"connection lost: {error}"
        if not raw.endswith(b"\n"):
            self.drop()
            return UNKNOWN, None, "connection closed"
        return classify(raw.decode().rstrip("\r\n"))


@dataclass
class Workload:
    """Keys and operation mix. Values are unique across the run (the checker relies on it)."""

    registers: list[str] = field(default_factory=lambda: [f"r{i}" for i in range(4)])
    lists: list[str] = field(default_factory=lambda: [f"l{i}" for i in range(2)])
    mix: dict[str, float] = field(
        default_factory=lambda: {WRITE: 0.3, READ: 0.35, CAS: 0.1, APPEND: 0.15, LIST_READ: 0.1}
    )
    think: float = 0.005
    _counter: int = 0

    def fresh(self) -> str:
        self._counter += 1
        return str(self._counter)

    def next_op(self, rng: random.Random, process: int, seen: dict[str, str | None]) -> Op:
        kind = rng.choices(list(self.mix), weights=list(self.mix.values()))[0]
        if kind in (APPEND, LIST_READ):
            return Op(
                process, kind, rng.choice(self.lists), self.fresh() if kind == APPEND else None
            )
        key = rng.choice(self.registers)
        if kind == WRITE:
            return Op(process, WRITE, key, self.fresh())
        if kind == CAS:
            return Op(process, CAS, key, [seen.get(key) or "NIL", self.fresh()])
        return Op(process, READ, key)


@dataclass
class Recorder:
    """Collects the history; times are seconds since the recorder started."""

    ops: list[Op] = field(default_factory=list)
    origin: float = field(default_factory=time.monotonic)
    next_process: int = 0

    def now(self) -> float:
        return time.monotonic() - self.origin

    def new_process(self) -> int:
        self.next_process += 1
        return self.next_process - 1


async def run_client(
    recorder: Recorder,
    workload: Workload,
    connection: Connection,
    rng: random.Random,
    running: Callable[[], bool],
) -> None:
    """Issue operations back to back until running() is false.

    After an unknown outcome the client continues as a new process (the old one may still
    have its operation in flight, as far as the checker knows), as Jepsen does.
    """
    process = recorder.new_process()
    seen: dict[str, str | None] = {}
    try:
        while running():
            op = workload.next_op(rng, process, seen)
            await perform(recorder, connection, op)
            if op.kind == READ and op.outcome == OK:
                seen[op.key] = op.result  # type: ignore[assignment]
            if op.outcome == UNKNOWN:
                process = recorder.new_process()
                await asyncio.sleep(0.05)  # do not spin on a node that is down
            await asyncio.sleep(workload.think)
    finally:
        connection.drop()


async def perform(recorder: Recorder, connection: Connection, op: Op) -> Op:
    op.invoke = recorder.now()
    recorder.ops.append(op)
    outcome, result, error = await connection.call(request_for(op))
    op.complete = recorder.now()
    op.node = connection.node
    interpret(op, outcome, result, error)
    return op
