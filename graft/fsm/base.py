"""What the node sees of a state machine, whatever mode runs it."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from graft.fsm.errors import FsmError


@dataclass(frozen=True, slots=True)
class ApplyCall:
    """One committed entry for `apply`: the command and its GRAFT_INDEX and GRAFT_TERM."""

    data: bytes
    index: int
    term: int


async def apply_each(
    apply: Callable[[bytes, int, int], Awaitable[bytes]], calls: Sequence[ApplyCall]
) -> list[bytes | FsmError]:
    """`apply_many` for a state machine that cannot pipeline: one call after the other, each
    seeing the state the one before left; a deterministic error stays in its place."""
    results: list[bytes | FsmError] = []
    for call in calls:
        try:
            results.append(await apply(call.data, call.index, call.term))
        except FsmError as error:
            results.append(error)
    return results


class FsmSettings(Protocol):
    """The `fsm` section of graft.yaml, as graft.config.FsmConfig provides it.

    Written as a protocol so that this layer does not import graft.config (layer rule).
    """

    @property
    def command(self) -> str | None: ...

    @property
    def mode(self) -> str: ...

    @property
    def timeout_ms(self) -> int: ...

    @property
    def verbs(self) -> Mapping[str, str]: ...


class StateMachine(Protocol):
    """The user's program behind the FSM contract (DESIGN §3).

    Every method raises `FsmError` for a deterministic error (exit 1..125) and `FsmFault`
    for anything that is not a result.
    """

    @property
    def pipelines(self) -> bool:
        """True when `apply_many` overlaps its calls (one round trip for the batch)."""
        ...

    async def apply(self, data: bytes, index: int, term: int) -> bytes:
        """Apply one committed entry; return its stdout."""
        ...

    async def apply_many(self, calls: Sequence[ApplyCall]) -> list[bytes | FsmError]:
        """Apply several committed entries in order: each one's stdout or FsmError.

        The same as calling `apply` for each, but a mode that can pipeline (stream mode)
        sends them all before it reads the first reply. A fault aborts the rest.
        """
        ...

    async def query(self, data: bytes) -> bytes:
        """Answer a read-only query; return its stdout."""
        ...

    def dump(self) -> AsyncIterator[bytes]:
        """Stream the whole state as chunks: `async for chunk in sm.dump()`.

        Close it (contextlib.aclosing) when stopping early, so the child process is killed
        at once. A failed dump raises FsmFault: the snapshot is abandoned.
        """
        ...

    async def load(self, chunks: AsyncIterable[bytes] | None) -> None:
        """Replace the whole state with a former dump; None (empty stdin) resets it."""
        ...

    async def close(self) -> None:
        """Stop every child process this state machine started."""
        ...
