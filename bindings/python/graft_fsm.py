"""graft_fsm: a Graft state machine in a few lines of Python (standard library only).

    import graft_fsm

    class Counter(graft_fsm.StateMachine):
        def __init__(self) -> None:
            self.n = 0

        def apply(self, command: bytes, index: int, term: int) -> str:
            self.n += int(command or b"1")
            return str(self.n)

        def query(self, command: bytes) -> str:
            return str(self.n)

        def dump(self) -> bytes:
            return str(self.n).encode()

        def load(self, data: BinaryIO) -> None:
            self.n = int(data.read() or b"0")   # empty: reset

    graft_fsm.run(Counter())

Run it as `fsm: {command: python3 counter.py, mode: stream}`. The same file also works in
exec mode (one process per call), where it must keep its state in GRAFT_STATE_DIR itself.

- apply/query return bytes, str (sent as UTF-8) or None (no output).
- Raise FsmError(message, status=1) for a deterministic error (status 1..125): the client
  gets ERR FSM with the message. Any other exception is reported the same way with status
  1, as an uncaught exception in an exec-mode Python script would be.
- dump returns bytes or yields chunks of bytes (a large state need not sit in memory).
- load gets a binary file object holding a former dump; empty means reset to the initial
  state.
- In stream mode, stdout carries frames, so this module sends print() and anything else
  written to stdout (fd 1) to stderr.

The framing is documented in docs/fsm.md; this file is its reference implementation on the
FSM side.
"""

from __future__ import annotations

import io
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import BinaryIO

__all__ = ["FsmError", "StateMachine", "run"]

Result = bytes | str | None


class FsmError(Exception):
    """A deterministic error: the entry still counts as applied."""

    def __init__(self, message: str, status: int = 1) -> None:
        if not 1 <= status <= 125:
            raise ValueError(f"status must be 1..125, got {status}")
        super().__init__(message)
        self.status = status


class StateMachine:
    """Override the verbs your state machine needs; the others refuse with an FsmError."""

    def apply(self, command: bytes, index: int, term: int) -> Result:
        raise FsmError("apply is not implemented")

    def query(self, command: bytes) -> Result:
        raise FsmError("query is not implemented")

    def dump(self) -> bytes | Iterable[bytes]:
        raise FsmError("dump is not implemented")

    def load(self, data: BinaryIO) -> None:
        raise FsmError("load is not implemented")


def run(fsm: StateMachine, argv: list[str] | None = None) -> None:
    """Serve the verb Graft gave on the command line, then exit."""
    args = sys.argv[1:] if argv is None else argv
    verb = args[0] if args else ""
    if verb == "stream":
        sys.exit(_serve(fsm))
    if verb in ("apply", "query", "dump", "load"):
        sys.exit(_once(fsm, verb))
    sys.stderr.write("usage: PROGRAM apply|query|dump|load|stream (run by graft)\n")
    sys.exit(2)


# --- exec mode: one verb, stdin in, stdout out ---------------------------------------------


def _once(fsm: StateMachine, verb: str) -> int:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    if verb == "apply":
        index, term = int(os.environ["GRAFT_INDEX"]), int(os.environ["GRAFT_TERM"])
        status, out, err = _call(lambda: fsm.apply(stdin.read(), index, term))
    elif verb == "query":
        status, out, err = _call(lambda: fsm.query(stdin.read()))
    elif verb == "load":
        status, out, err = _call(lambda: fsm.load(stdin))
    else:
        status, out, err = _call(lambda: stdout.writelines(_chunks(fsm.dump())))
    stdout.write(out)
    stdout.flush()
    sys.stderr.buffer.write(err)
    return status


# --- stream mode: framed requests on stdin, framed replies on stdout -----------------------


def _serve(fsm: StateMachine) -> int:
    stdin = sys.stdin.buffer
    # Frames own fd 1: keep a private copy, and point fd 1 (print, child processes) at stderr.
    frames = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    while line := stdin.readline():
        _serve_one(fsm, stdin, frames, line)
    return 0  # EOF: Graft is stopping this process


def _serve_one(fsm: StateMachine, stdin: BinaryIO, frames: BinaryIO, line: bytes) -> None:
    verb, index, term, length = line.split()
    payload = _exact(stdin, int(length))
    if verb == b"apply":
        _reply(frames, *_call(lambda: fsm.apply(payload, int(index), int(term))))
    elif verb == b"query":
        _reply(frames, *_call(lambda: fsm.query(payload)))
    elif verb == b"dump":
        _reply(frames, *_call(lambda: _send_dump(frames, fsm.dump())))
    elif verb == b"load":
        reader = _LoadReader(stdin)
        reply = _call(lambda: fsm.load(io.BufferedReader(reader)))
        reader.drain()
        _reply(frames, *reply)
    else:
        raise SystemExit(f"graft_fsm: unexpected frame {line!r}")


def _send_dump(frames: BinaryIO, dumped: bytes | Iterable[bytes]) -> None:
    for chunk in _chunks(dumped):
        frames.write(b"data %d 0\n" % len(chunk))
        frames.write(chunk)


def _reply(frames: BinaryIO, status: int, out: bytes, err: bytes) -> None:
    frames.write(b"%d %d %d\n" % (status, len(out), len(err)))
    frames.write(out)
    frames.write(err)
    frames.flush()


class _LoadReader(io.RawIOBase):
    """The `data` frames of a load, read as one stream that ends at the `end` frame."""

    def __init__(self, stdin: BinaryIO) -> None:
        self._stdin = stdin
        self._left = 0  # bytes of the current data frame not yet read
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while self._left == 0 and not self._ended:
            verb, _, _, length = self._stdin.readline().split()
            self._ended = verb == b"end"
            self._left = int(length)
        n = min(len(buffer), self._left)
        data = _exact(self._stdin, n)
        buffer[:n] = data
        self._left -= n
        return n

    def drain(self) -> None:
        """Skip what the user's load did not read, up to the `end` frame."""
        while self.readinto(bytearray(65536)):
            pass


# --- helpers -------------------------------------------------------------------------------


def _call(step: Callable[[], object]) -> tuple[int, bytes, bytes]:
    """Run one verb: (status, stdout, stderr) as an exec-mode process would give them."""
    try:
        value = step()
    except FsmError as exc:
        return exc.status, b"", _line(str(exc))
    except Exception:  # an uncaught exception is exit status 1 in exec mode too
        text = traceback.format_exc()
        sys.stderr.write(text)
        return 1, b"", text.encode()
    if isinstance(value, str):
        return 0, value.encode(), b""
    return 0, value if isinstance(value, bytes) else b"", b""


def _chunks(dumped: bytes | Iterable[bytes]) -> Iterable[bytes]:
    if isinstance(dumped, bytes | bytearray):
        return [bytes(dumped)] if dumped else []
    return (bytes(chunk) for chunk in dumped if chunk)


def _exact(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n) if n else b""
    if len(data) != n:
        raise SystemExit("graft_fsm: stdin ended inside a frame")
    return data


def _line(text: str) -> bytes:
    return text.encode() + (b"" if text.endswith("\n") else b"\n")
