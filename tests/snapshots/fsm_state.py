"""The snapshot tests' stream-mode FSM: a key-value store plus a large generated blob.

    python -S fsm_state.py stream

SET k v -> OK; GET k -> v (exit 1 when missing); BLOB n -> makes the state carry n
deterministic bytes (blob_bytes below); DIGEST (query) -> "<bytes> <sha256>" of the blob
the last `load` received, or "none" when no load carried one.

The blob is never held: `dump` generates it chunk by chunk, and `load` reads it in chunks
and keeps only its length and hash, so a 50 MB state costs this process a few MB. When the
file `pause-dump` in GRAFT_STATE_DIR holds a number of seconds, `dump` writes `dumping` there
after its first chunk and sleeps that long, so that a test can kill one node mid-dump.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Iterator
from typing import BinaryIO

BINDINGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../bindings/python")
sys.path.insert(0, BINDINGS)

import graft_fsm  # noqa: E402

BLOCK = 1 << 20


def _block() -> bytes:
    return random.Random(20240607).randbytes(BLOCK)


def blob_bytes(size: int) -> Iterator[bytes]:
    """The blob of `size` bytes in 1 MiB chunks; chunk i starts with i, so no two repeat."""
    block = _block()
    for number, start in enumerate(range(0, size, BLOCK)):
        chunk = number.to_bytes(8, "big") + block[8:]
        yield chunk[: min(BLOCK, size - start)]


def blob_digest(size: int) -> str:
    """What DIGEST answers after a load of a state whose blob has `size` bytes."""
    digest = hashlib.sha256()
    for chunk in blob_bytes(size):
        digest.update(chunk)
    return f"{size} {digest.hexdigest()}"


class State(graft_fsm.StateMachine):
    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.blob = 0
        self.loaded = "none"

    def apply(self, command: bytes, index: int, term: int) -> str:
        verb, _, rest = command.decode().rstrip("\n").partition(" ")
        key, _, value = rest.partition(" ")
        if verb == "SET" and key:
            self.data[key] = value
            return "OK"
        if verb == "BLOB" and key.isdigit():
            self.blob = int(key)
            return "OK"
        return self.query(command)

    def query(self, command: bytes) -> str:
        verb, _, key = command.decode().rstrip("\n").partition(" ")
        if verb == "DIGEST":
            return self.loaded
        if verb == "GET" and key in self.data:
            return self.data[key]
        raise graft_fsm.FsmError(f"no such key: {key}")

    def dump(self) -> Iterator[bytes]:
        yield json.dumps({"data": self.data, "blob": self.blob}).encode() + b"\n"
        _pause_if_asked()
        yield from blob_bytes(self.blob)

    def load(self, data: BinaryIO) -> None:
        header = data.readline()
        if not header:
            self.data, self.blob, self.loaded = {}, 0, "none"
            return
        parsed = json.loads(header)
        digest = hashlib.sha256()
        length = 0
        while chunk := data.read(BLOCK):
            digest.update(chunk)
            length += len(chunk)
        if length != parsed["blob"]:
            raise graft_fsm.FsmError(f"blob of {length} bytes, header says {parsed['blob']}")
        self.data, self.blob = parsed["data"], parsed["blob"]
        self.loaded = f"{length} {digest.hexdigest()}" if length else "none"


def _pause_if_asked() -> None:
    state_dir = os.environ["GRAFT_STATE_DIR"]
    try:
        with open(os.path.join(state_dir, "pause-dump")) as asked:
            seconds = float(asked.read())
    except FileNotFoundError:
        return
    with open(os.path.join(state_dir, "dumping"), "w") as flag:
        flag.write(str(os.getpid()))
    time.sleep(seconds)


if __name__ == "__main__":
    graft_fsm.run(State())
