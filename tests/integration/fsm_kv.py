"""The integration tests' state machine: a small key-value store (exec mode, DESIGN §3).

Run as ``python -S fsm_kv.py [--hang-flag PATH] VERB``. Commands, one per call on stdin:

    SET key value   -> OK               the value is the rest of the line
    INCR key        -> the new value    adds 1 to an integer value (a missing key counts as 0),
                                        so the result tells how many times it was applied
    GET key         -> the value        a missing key: exit 1, "no such key" on stderr
    ALL             -> the whole state   one JSON object, keys sorted
    FAIL message    -> exit 1           a deterministic error, with message on stderr
    WHERE           -> "INDEX TERM"     GRAFT_INDEX and GRAFT_TERM of this apply

``query`` accepts GET and ALL only. While the file named by ``--hang-flag`` exists, every ``apply``
starts a grandchild (so that a kill must reach the whole process group) and then sleeps far
past any ``fsm.timeout`` the tests set: a hanging FSM. The state is one JSON file in
$GRAFT_STATE_DIR, replaced atomically; it needs no fsync because a restarted node resets it
with ``load`` and replays the log.
"""

import json
import os
import subprocess
import sys
import time

HANG_SECONDS = 120


def state_path() -> str:
    return os.path.join(os.environ["GRAFT_STATE_DIR"], "kv.json")


def read_state() -> dict[str, str]:
    try:
        with open(state_path(), "rb") as handle:
            state: dict[str, str] = json.loads(handle.read())
            return state
    except FileNotFoundError:
        return {}


def write_state(state: dict[str, str]) -> None:
    os.makedirs(os.environ["GRAFT_STATE_DIR"], exist_ok=True)
    temp = state_path() + ".tmp"
    with open(temp, "w") as handle:
        handle.write(json.dumps(state))
    os.replace(temp, state_path())


def hang(flag: str) -> None:
    """Sleep past the timeout with a grandchild whose command line names the flag file."""
    code = f"import time; time.sleep({HANG_SECONDS})"
    subprocess.Popen([sys.executable, "-S", "-c", code, flag])
    time.sleep(HANG_SECONDS)


def fail(message: str) -> int:
    sys.stderr.write(message + "\n")
    return 1


def run(verb: str, line: str) -> int:
    op, _, rest = line.partition(" ")
    op = op.upper()
    if verb == "query" and op not in ("GET", "ALL"):
        return fail("a query may only GET or ALL")
    state = read_state()
    if op == "ALL":
        sys.stdout.write(json.dumps(state, sort_keys=True) + "\n")
        return 0
    if op == "GET":
        if rest not in state:
            return fail("no such key: " + rest)
        sys.stdout.write(state[rest] + "\n")
        return 0
    if op == "SET" and " " in rest:
        key, _, value = rest.partition(" ")
        state[key] = value
        write_state(state)
        sys.stdout.write("OK\n")
        return 0
    if op == "INCR" and rest:
        state[rest] = str(int(state.get(rest, "0")) + 1)
        write_state(state)
        sys.stdout.write(state[rest] + "\n")
        return 0
    if op == "FAIL":
        return fail(rest)
    if op == "WHERE":
        sys.stdout.write(os.environ["GRAFT_INDEX"] + " " + os.environ["GRAFT_TERM"] + "\n")
        return 0
    return fail("bad command: " + line)


def main(argv: list[str]) -> int:
    flag = None
    if len(argv) == 4 and argv[1] == "--hang-flag":
        flag = argv[2]
        argv = [argv[0], argv[3]]
    if len(argv) != 2:
        return fail("usage: fsm_kv.py [--hang-flag PATH] apply|query|dump|load")
    verb = argv[1]
    data = sys.stdin.buffer.read()

    if verb == "dump":
        sys.stdout.write(json.dumps(read_state()))
        return 0
    if verb == "load":
        # Empty stdin resets to the initial state (DESIGN §3).
        write_state(json.loads(data) if data.strip() else {})
        return 0
    if verb not in ("apply", "query"):
        return fail("unknown verb " + verb)
    if verb == "apply" and flag is not None and os.path.exists(flag):
        hang(flag)
    return run(verb, data.decode().rstrip("\r\n"))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
