"""The outcomes of a call that are not a result: a deterministic error, or a fault."""

from __future__ import annotations


def _tail(data: bytes, limit: int = 400) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text if len(text) <= limit else "..." + text[-limit:]


class FsmError(Exception):
    """The command exited 1..125: a deterministic error (DESIGN §3).

    It is a result like any other: the entry still counts as applied, and the client gets
    `ERR FSM` with `stdout` and `stderr`.
    """

    def __init__(self, verb: str, status: int, stdout: bytes, stderr: bytes) -> None:
        detail = _tail(stderr) or _tail(stdout) or "no output"
        super().__init__(f"fsm {verb} exited with status {status}: {detail}")
        self.verb = verb
        self.status = status
        self.stdout = stdout
        self.stderr = stderr


class FsmFault(Exception):
    """Not a result: killed by a signal, timed out, could not start, exit 126/127 or > 125,
    a stream process that died, a dump or load that failed. The call must be retried,
    never skipped (DESIGN §3). `reason` reads after "fsm VERB", e.g. "timed out after 50 ms".
    """

    def __init__(self, verb: str, reason: str, stderr: bytes = b"") -> None:
        detail = _tail(stderr)
        super().__init__(f"fsm {verb} {reason}" + (f": {detail}" if detail else ""))
        self.verb = verb
        self.reason = reason
        self.stderr = stderr


class FsmStateLost(FsmFault):
    """A stream-mode process died, and its in-memory state with it.

    Retrying cannot help: the node must call `load` (with its newest snapshot, or None) and
    re-apply the committed entries after it. `load` starts a fresh process.
    """
