"""A key-value store as a stream-mode Graft FSM: the same commands as kv.sh, in one process.

    fsm:
      command: python3 -S examples/fsm-scripts/kv.py
      mode: stream

SET k v -> OK, GET k -> v (exit 1 when missing), DEL k -> OK, INCR k -> the new value.
The state lives in memory; Graft keeps it durable through its log and snapshots (dump/load).
"""

from __future__ import annotations

import json
import os
import sys
from typing import BinaryIO

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../bindings/python"))

import graft_fsm  # noqa: E402


class KeyValue(graft_fsm.StateMachine):
    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def apply(self, command: bytes, index: int, term: int) -> str:
        verb, _, rest = command.decode().rstrip("\n").partition(" ")
        key, _, value = rest.partition(" ")
        verb = verb.upper()
        if verb == "SET" and key:
            self.data[key] = value
            return "OK"
        if verb == "DEL" and key:
            self.data.pop(key, None)
            return "OK"
        if verb == "INCR" and key:
            current = self.data.get(key, "0")
            if not current.lstrip("-").isdigit():
                raise graft_fsm.FsmError(f"value of {key} is not an integer")
            self.data[key] = str(int(current) + 1)
            return self.data[key]
        return self.query(command)

    def query(self, command: bytes) -> str:
        verb, _, key = command.decode().rstrip("\n").partition(" ")
        if verb.upper() != "GET" or not key:
            raise graft_fsm.FsmError("usage: SET k v | GET k | DEL k | INCR k")
        if key not in self.data:
            raise graft_fsm.FsmError(f"no such key: {key}")
        return self.data[key]

    def dump(self) -> bytes:
        return json.dumps(self.data, sort_keys=True).encode()

    def load(self, data: BinaryIO) -> None:
        raw = data.read()
        self.data = json.loads(raw) if raw else {}


if __name__ == "__main__":
    graft_fsm.run(KeyValue())
