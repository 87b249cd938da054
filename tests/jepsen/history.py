"""Operation records of a client history, and how they are saved as JSON lines.

An operation is what one client process did: when it invoked the request, when it saw the
reply, and what the reply says about the outcome (DESIGN §4):

- ``ok``: the reply came and the operation took effect (or, for reads, returned a value);
- ``fail``: certainly not applied (NOLEADER, BADREQUEST, TOOLARGE, NOTLEADER, REDIRECT, a
  refused connection, or a CAS answered FAIL, which is a definite no-op that still observed
  the register);
- ``unknown``: TIMEOUT, a dropped connection or a client-side timeout. It may take effect at
  any time after its invocation, or never.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

OK = "ok"
FAIL = "fail"
UNKNOWN = "unknown"
OUTCOMES = (OK, FAIL, UNKNOWN)

WRITE = "write"
READ = "read"
CAS = "cas"
APPEND = "append"
LIST_READ = "list"
REGISTER_KINDS = (WRITE, READ, CAS)
LIST_KINDS = (APPEND, LIST_READ)


@dataclass
class Op:
    """One client operation. value: the written/appended value, or [old, new] for a CAS.

    result: a register read's value (None for a missing register), a list read's values,
    "OK"/"FAIL" for a CAS, or None. error: the raw error reply when there was one.
    """

    process: int
    kind: str
    key: str
    value: object = None
    result: object = None
    outcome: str = UNKNOWN
    invoke: float = 0.0
    complete: float | None = None
    node: str = ""
    error: str = ""
    index: int = field(default=-1, compare=False)

    def describe(self) -> str:
        """One readable line, used in anomaly reports."""
        end = "inf" if self.complete is None else f"{self.complete:.3f}"
        argument = "" if self.value is None else f" {self.value}"
        shown = "" if self.result is None else f" -> {self.result}"
        error = f" ({self.error})" if self.error else ""
        return (
            f"#{self.index} p{self.process} {self.kind} {self.key}{argument}{shown} "
            f"[{self.outcome}] {self.invoke:.3f}..{end}{error}"
        )


def number(ops: list[Op]) -> list[Op]:
    """Give each operation its position in the history, used to name it in reports."""
    for position, op in enumerate(ops):
        op.index = position
    return ops


def save(ops: Iterable[Op], path: Path) -> None:
    with path.open("w") as handle:
        for op in ops:
            handle.write(json.dumps(asdict(op)) + "\n")


def load(path: Path) -> list[Op]:
    with path.open() as handle:
        return number([Op(**json.loads(line)) for line in handle if line.strip()])
