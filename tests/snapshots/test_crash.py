"""kill -9 at the risky moments of a snapshot's life; nothing acknowledged may be lost.

One cluster serves every scenario (each leaves it whole again): a node is killed while
its FSM is dumping, while a snapshot streams to a follower (the receiver, then the sender),
and just after a snapshot file was committed, before the log is compacted. A writer keeps
applying during each scenario; afterwards every key it saw acknowledged must be readable
through QUERY on every node and, once they caught up, through LOCAL on every node.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .fsm_state import blob_digest
from .harness import STATE_PY, Live, python_fsm, wait_for

MB = 1 << 20
BLOB = 6 * MB


class Writer:
    """Applies SET <prefix>N N in a loop on any node that answers; records what was OK."""

    def __init__(self, live: Live, prefix: str) -> None:
        self.live = live
        self.prefix = prefix
        self.acked: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        counter = itertools.count()
        for name in itertools.cycle(self.live.names):
            if self._stop.is_set():
                return
            try:
                with self.live.client(name, 3.0) as line:
                    while not self._stop.is_set():
                        key = f"{self.prefix}{next(counter)}"
                        if line.request(f"APPLY SET {key} {key}") == "OK OK":
                            self.acked[key] = key
                        time.sleep(0.005)
            except (OSError, ConnectionError):
                time.sleep(0.05)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    directory = tmp_path_factory.mktemp("crash")
    cluster = Live(directory, python_fsm(STATE_PY), every=1_000_000, keep_log=0).start()
    try:
        assert cluster.ask(cluster.leader(), f"APPLY BLOB {BLOB}", 30.0) == "OK OK"
        yield cluster
    finally:
        cluster.stop()


def everything_acked_is_there(live: Live, acked: dict[str, str]) -> None:
    assert len(acked) >= 20, f"the writer got only {len(acked)} acknowledgements"
    live.caught_up(live.names, within=90.0)
    keys = sorted(acked)
    expected = [f"OK {acked[key]}" for key in keys]
    for name in live.names:
        assert live.local_values(name, keys, verb="QUERY") == expected, f"QUERY via {name}"
        assert live.local_values(name, keys) == expected, f"LOCAL on {name}"
        assert live.ask(name, "LOCAL DIGEST") in ("OK none", f"OK {blob_digest(BLOB)}")


def back(live: Live, name: str) -> dict[str, Any]:
    """Wait until a restarted node answers STATUS; its status."""
    return wait_for(lambda: live.status(name), 60.0, f"{name} to answer after its restart")


def snapshot_everywhere(live: Live, names: list[str]) -> None:
    """SNAPSHOT on each node; with keep_log 0 their logs then start after it."""
    for name in names:
        reply = live.ask(name, "SNAPSHOT", 60.0)
        assert reply is not None and reply.startswith("OK "), (name, reply)


def partial_snapshot(live: Live, name: str) -> int:
    """Bytes in `name`'s unfinished (.tmp) snapshot files."""
    total = 0
    for path in (live.data_dir(name) / "snap").glob("*.tmp"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total


def test_kill_during_dump(live: Live) -> None:
    victim = live.leader()
    state_dir = live.data_dir(victim) / "fsm"
    flag = state_dir / "dumping"
    flag.unlink(missing_ok=True)
    (state_dir / "pause-dump").write_text("5")
    before = live.status(victim)
    assert before is not None

    with Writer(live, "dump") as writer:
        time.sleep(0.5)
        asking = threading.Thread(target=live.ask, args=(victim, "SNAPSHOT", 10.0))
        asking.start()
        wait_for(flag.exists, 20.0, f"{victim}'s FSM to start dumping")
        live.kill(victim)
        asking.join()
        (state_dir / "pause-dump").unlink()
        time.sleep(1.0)
        live.restart(victim)
        back(live, victim)

    after = back(live, victim)
    assert after["snapshot"] == before["snapshot"]  # the interrupted one never counted
    assert "unfinished snapshot left by a crash" in live.log(victim)
    everything_acked_is_there(live, writer.acked)


def kill_mid_transfer(live: Live, *, kill_sender: bool) -> None:
    leader = live.leader()
    receiver = next(name for name in live.names if name != leader)
    live.caught_up()
    before = live.status(receiver)
    assert before is not None
    live.kill(receiver)

    with Writer(live, f"transfer{int(kill_sender)}-") as writer:
        # The receiver must need the snapshot: the appends the leader had in flight or queued
        # for it when it died (at most a window of 64 messages) may still reach it after its
        # restart, so the gap must be wider than that before the others snapshot.
        wait_for(
            lambda: applied(live, leader) > before["last_index"] + 300, 60.0, "300 new entries"
        )
        snapshot_everywhere(live, [name for name in live.names if name != receiver])
        # Slow every link into the receiver, not only the leader's: leadership may move
        # during the test, and an undelayed transfer can finish between two polls.
        into_receiver = [(name, receiver) for name in live.names if name != receiver]
        live.proxy(lambda proxy: proxy.set_delay(0.3, into_receiver))
        live.restart(receiver)
        try:
            wait_for(lambda: partial_snapshot(live, receiver) > 1 * MB, 60.0, "a transfer")
        except AssertionError as exc:
            statuses = {n: live.status(n) for n in live.names}
            tails = "\n".join(f"--- {n} ---\n{live.log(n)[-6000:]}" for n in live.names)
            raise AssertionError(f"{exc}\nSTATUS {statuses}\n{tails}") from None
        assert partial_snapshot(live, receiver) < BLOB, "the transfer was not interrupted"
        live.kill(leader if kill_sender else receiver)
        live.proxy(lambda proxy: proxy.heal())
        time.sleep(1.0)
        live.restart(leader if kill_sender else receiver)
        back(live, leader if kill_sender else receiver)
        time.sleep(0.5)

    everything_acked_is_there(live, writer.acked)
    assert live.ask(receiver, "LOCAL DIGEST") == f"OK {blob_digest(BLOB)}"


def applied(live: Live, name: str) -> int:
    status = live.status(name)
    return int(status["applied"]) if status is not None else 0


def test_kill_receiver_mid_transfer(live: Live) -> None:
    kill_mid_transfer(live, kill_sender=False)


def test_kill_sender_mid_transfer(live: Live) -> None:
    kill_mid_transfer(live, kill_sender=True)


def kill_on_new_snapshot_file(live: Live, victim: str) -> int:
    """SNAPSHOT on victim; kill -9 it the moment the new snapshot file is renamed into place.

    That is after the snapshot is durable and before (or while) the log is compacted.
    Returns the index of the snapshot it was killed after.
    """
    snap_dir = live.data_dir(victim) / "snap"
    before = {p.name for p in snap_dir.iterdir() if not p.name.endswith(".tmp")}
    asking = threading.Thread(target=live.ask, args=(victim, "SNAPSHOT", 30.0))
    asking.start()

    deadline = time.monotonic() + 30.0
    new: set[str] = set()
    while not new and time.monotonic() < deadline:
        new = {p for p in os.listdir(snap_dir) if not p.endswith(".tmp")} - before
    live.kill(victim)
    asking.join()
    assert new, f"{victim} committed no snapshot file"
    return max(int(name.split("-")[0]) for name in new)


def test_kill_right_after_snapshot_is_stored(live: Live) -> None:
    with Writer(live, "compact") as writer:
        for round_ in range(2):
            leader = live.leader()
            victim = leader if round_ == 0 else next(n for n in live.names if n != leader)
            time.sleep(0.5)
            index = kill_on_new_snapshot_file(live, victim)
            live.restart(victim)
            status = back(live, victim)
            assert status["snapshot"]["index"] >= index
            live.caught_up(within=60.0)

    everything_acked_is_there(live, writer.acked)
