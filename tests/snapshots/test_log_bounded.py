"""SNAPSHOT, `graft snapshot`, the STATUS snapshot keys, and a log that stays bounded."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from jepsen.cluster import graft_command

from .harness import KV_PY, Live, python_fsm

EVERY = 1000
KEEP = 100
COMMANDS = 20_000


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    directory = tmp_path_factory.mktemp("bounded")
    cluster = Live(directory, python_fsm(KV_PY), every=EVERY, keep_log=KEEP).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_snapshot_verb_cli_and_status(live: Live) -> None:
    leader = live.leader()
    assert live.apply_all(leader, [f"APPLY SET s{i} {i}" for i in range(50)], 1) == ["OK OK"] * 50
    follower = next(name for name in live.names if name != leader)
    live.caught_up()

    reply = live.ask(follower, "SNAPSHOT", 30.0)
    assert reply is not None and reply.startswith("OK "), reply
    index = int(reply[3:])
    status = live.status(follower)
    assert status is not None
    assert index == status["applied"] >= 50
    assert status["snapshot"]["index"] == index
    assert status["snapshot"]["size"] > len("s49 49")  # at least the FSM's dump
    assert status["snapshot_bytes"] >= status["snapshot"]["size"]
    assert isinstance(status["log_bytes"], int) and status["log_bytes"] > 0
    assert status["first_index"] == max(1, index - KEEP + 1)  # the kept tail

    # A second SNAPSHOT with nothing applied in between answers the same index.
    assert live.ask(follower, "snapshot", 30.0) == f"OK {index}"

    assert live.ask(leader, "APPLY SET s50 50") == "OK OK"
    port = live.cluster.nodes[leader].api
    cli = subprocess.run(
        [*graft_command(), "snapshot", "--cluster", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    cli_index = int(cli.stdout.strip())  # the CLI prints the result alone
    leader_status = live.status(leader)
    assert leader_status is not None
    assert cli_index == leader_status["snapshot"]["index"] > index


class LogSampler:
    """Samples STATUS log_bytes of every node, and the bytes of each wal directory."""

    def __init__(self, live: Live, every: float = 0.2) -> None:
        self.live = live
        self.every = every
        self.peak_log_bytes = 0
        self.peak_wal_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LogSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            for name in self.live.names:
                status = self.live.status(name)
                if status is not None:
                    self.peak_log_bytes = max(self.peak_log_bytes, status["log_bytes"])
                    self.samples += 1
                self.peak_wal_bytes = max(self.peak_wal_bytes, wal_bytes(self.live, name))


def wal_bytes(live: Live, name: str) -> int:
    total = 0
    for path in (live.data_dir(name) / "wal").iterdir():
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue  # deleted by a compaction meanwhile
    return total


def test_log_stays_bounded_over_20000_commands(live: Live) -> None:
    leader = live.leader()
    started = time.monotonic()
    with LogSampler(live) as sampler:
        for start in range(0, COMMANDS, 5000):
            lines = [f"APPLY SET b{i} {i:08d}" for i in range(start, start + 5000)]
            assert set(live.apply_all(leader, lines)) == {"OK OK"}
        live.caught_up()
    took = time.monotonic() - started

    # The bytes one entry takes in the log: measured on this run's own log right after a
    # fresh snapshot would be ideal; the record overhead is bounded, so use the payload
    # plus a generous fixed allowance per record.
    entry_bytes = len("SET b19999 00019999\n") + 64
    bound = 2 * (EVERY + KEEP) * entry_bytes + 64 * 1024
    total = COMMANDS * entry_bytes
    print(
        f"{COMMANDS} commands in {took:.1f} s; peak log_bytes {sampler.peak_log_bytes}, "
        f"peak wal dir {sampler.peak_wal_bytes} bytes ({sampler.samples} samples); "
        f"bound {bound}, whole log would be ~{total}"
    )
    assert sampler.samples >= 10
    assert sampler.peak_log_bytes <= bound
    assert sampler.peak_wal_bytes <= bound
    for name in live.names:
        status = live.status(name)
        assert status is not None and status["snapshot"]["index"] >= COMMANDS - EVERY
