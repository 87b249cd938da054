"""kill -9 of every node during a write load, then a restart of all: no acknowledged write
is lost (DESIGN: a cluster never loses a write it acknowledged)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from jepsen.blocking import LineClient

from .conftest import Live, LoopThread, fsm_kv_command, running_cluster, wait_for

CLIENTS = 4
MIN_ACKED = 12  # writes acknowledged before the crash, so that the check means something


class Writer(threading.Thread):
    """Writes distinct keys on one connection until stopped or cut; records what was acked."""

    def __init__(self, number: int, port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.number = number
        self.port = port
        self.stop = stop
        self.acked: dict[str, str] = {}
        self.attempts = 0

    def run(self) -> None:
        try:
            with LineClient(self.port, timeout=3.0) as client:
                while not self.stop.is_set():
                    self.attempts += 1
                    key, value = f"w{self.number}-{self.attempts}", f"v{self.attempts}"
                    if client.request(f"APPLY SET {key} {value}") == "OK OK":
                        self.acked[key] = value
        except (OSError, ConnectionError):
            return  # the node was killed: the outcome of the write in flight is unknown


def all_state(live: Live, name: str) -> dict[str, str]:
    reply = live.ask(name, "QUERY ALL", 10.0)
    assert reply is not None and reply.startswith("OK "), (name, reply)
    state = json.loads(reply[3:])
    assert isinstance(state, dict)
    return state


def test_kill_all_nodes_under_load_loses_no_acknowledged_write(
    tmp_path: Path, loop_thread: LoopThread
) -> None:
    overrides = {"fsm": {"command": fsm_kv_command()}}
    with running_cluster(tmp_path, loop_thread, overrides=overrides) as live:
        live.wait_leader()
        stop = threading.Event()
        writers = [
            Writer(number, live.node(live.names[number % len(live.names)]).api, stop)
            for number in range(CLIENTS)
        ]
        for writer in writers:
            writer.start()
        wait_for(
            lambda: sum(len(writer.acked) for writer in writers) >= MIN_ACKED,
            30.0,
            f"{MIN_ACKED} acknowledged writes",
        )
        time.sleep(0.1)  # a few more writes in flight

        for name in live.names:  # while the writers are still writing
            live.kill(name)
        stop.set()
        for writer in writers:
            writer.join(10)
        acked = {key: value for writer in writers for key, value in writer.acked.items()}
        print(f"acknowledged before the crash: {len(acked)} writes by {CLIENTS} clients")
        assert len(acked) >= MIN_ACKED

        for name in live.names:
            live.restart(name)
        live.wait_leader(within=20.0)
        for name in live.names:
            state = all_state(live, name)  # QUERY: reflects every write acknowledged
            missing = {key for key in acked if state.get(key) != acked[key]}
            assert not missing, f"{name} lost acknowledged writes {sorted(missing)}"

        live.wait_converged()
        for name in live.names:
            sample = sorted(acked)[:: max(1, len(acked) // 5)]
            for key in sample:
                assert live.ask(name, f"LOCAL GET {key}") == f"OK {acked[key]}", (name, key)
