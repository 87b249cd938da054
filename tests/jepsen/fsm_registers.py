"""The fault suite's own state machine: registers and append-only lists (exec mode, DESIGN §3).

Run as ``python -S fsm_registers.py VERB``. Commands (one per call, on stdin):

    W key value        write a register                 -> OK
    R key              read a register                  -> the value, or NIL
    CAS key old new    compare-and-set a register       -> OK or FAIL
    A key value        append to a list                 -> OK
    L key              read a whole list                -> values joined by spaces

Keys and values are tokens without whitespace. ``query`` accepts only R and L. The whole
state is one JSON file in $GRAFT_STATE_DIR, replaced atomically (temp file, fsync, rename,
fsync of the directory) so that a kill -9 leaves either the old or the new state.
It imports nothing outside the standard library and is meant to run with -S: every apply
on every node starts a new interpreter, so start-up time is the suite's throughput.
"""

import json
import os
import sys

STATE_FILE = "registers.json"
QUERY_VERBS = ("R", "L")


def state_path() -> str:
    return os.path.join(os.environ["GRAFT_STATE_DIR"], STATE_FILE)


def empty_state() -> dict:
    return {"registers": {}, "lists": {}}


def read_state() -> dict:
    try:
        with open(state_path(), "rb") as handle:
            return json.loads(handle.read())
    except FileNotFoundError:
        return empty_state()


def write_state(state: dict) -> None:
    path = state_path()
    temp = path + ".tmp"
    with open(temp, "wb") as handle:
        handle.write(json.dumps(state, separators=(",", ":")).encode())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)

    # The rename is only durable once the directory entry is on disk.
    directory = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def usage(message: str) -> int:
    sys.stderr.write(message + "\n")
    return 2


def run_command(state: dict, words: list, read_only: bool) -> tuple:
    """Return (output, changed, exit status) for one command against state."""
    if not words:
        return "empty command", False, 2
    verb = words[0].upper()
    if read_only and verb not in QUERY_VERBS:
        return "query accepts only R and L, not " + verb, False, 2
    registers = state["registers"]
    lists = state["lists"]
    if verb == "W" and len(words) == 3:
        registers[words[1]] = words[2]
        return "OK", True, 0
    if verb == "R" and len(words) == 2:
        return registers.get(words[1], "NIL"), False, 0
    if verb == "CAS" and len(words) == 4:
        if registers.get(words[1]) != words[2]:
            return "FAIL", False, 0
        registers[words[1]] = words[3]
        return "OK", True, 0
    if verb == "A" and len(words) == 3:
        lists.setdefault(words[1], []).append(words[2])
        return "OK", True, 0
    if verb == "L" and len(words) == 2:
        return " ".join(lists.get(words[1], [])), False, 0
    return "bad command: " + " ".join(words), False, 2


def main(argv: list) -> int:
    if len(argv) != 2:
        return usage("usage: fsm_registers.py apply|query|dump|load")
    verb = argv[1]
    data = sys.stdin.buffer.read()

    if verb == "dump":
        sys.stdout.write(json.dumps(read_state(), separators=(",", ":")))
        return 0
    if verb == "load":
        # Empty stdin resets to the initial state (DESIGN §3).
        write_state(json.loads(data) if data.strip() else empty_state())
        return 0
    if verb not in ("apply", "query"):
        return usage("unknown verb " + verb)

    state = read_state()
    output, changed, status = run_command(state, data.decode().split(), verb == "query")
    if changed:
        write_state(state)
    if status:
        sys.stderr.write(output + "\n")
        return status
    sys.stdout.write(output + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
