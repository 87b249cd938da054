"""A partitioned minority acknowledges no write; the majority keeps serving; after the heal
every node agrees (Raft §5.2, §5.4; the proxy cuts peer links, including forwarding)."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from .conftest import Live, LoopThread, fsm_kv_command, running_cluster

# fsm.timeout bounds how long an APPLY waits (fsm.timeout + 5 election timeouts): 3.5 s here.
OVERRIDES = {"fsm": {"command": fsm_kv_command(), "timeout": 2000}}
CERTAINLY_NOT_APPLIED = ("ERR NOLEADER", "ERR NOTLEADER")


def isolate(live: Live, name: str) -> None:
    proxy = live.cluster.proxy
    assert proxy is not None
    live.proxy_call(lambda: proxy.isolate(name))


def heal(live: Live) -> None:
    proxy = live.cluster.proxy
    assert proxy is not None
    live.proxy_call(proxy.heal)


def assert_not_acknowledged(reply: str | None, what: str) -> None:
    assert reply is None or not reply.startswith("OK"), f"{what} was acknowledged: {reply}"


def assert_everywhere(live: Live, key: str, expected: str | None) -> None:
    """After convergence: every node's applied state has key = expected (None: absent)."""
    want = (
        f"OK {expected}" if expected is not None else f"ERR FSM exit status 1: no such key: {key}"
    )
    for name in live.names:
        assert live.ask(name, f"LOCAL GET {key}") == want, (name, key)


def test_isolated_follower_acknowledges_nothing_and_catches_up(
    tmp_path: Path, loop_thread: LoopThread
) -> None:
    with running_cluster(tmp_path, loop_thread, overrides=OVERRIDES) as live:
        leader = live.wait_leader()
        follower = next(name for name in live.names if name != leader)
        majority = [name for name in live.names if name != follower]

        isolate(live, follower)
        with ThreadPoolExecutor(2) as pool:
            minority: Future[str | None] = pool.submit(
                live.ask, follower, "APPLY SET via-follower lost", 10.0
            )
            assert live.apply_until_ok(majority, "APPLY SET majority-1 yes") == "OK OK"
            reply = minority.result()
        assert_not_acknowledged(reply, "an APPLY sent to the isolated follower")
        status = live.status(follower)
        assert status is not None and status["role"] != "leader"  # PreVote: no disruption
        assert live.leader(majority) == leader

        heal(live)
        live.wait_converged()
        assert live.leader() == leader
        assert_everywhere(live, "majority-1", "yes")
        if reply is not None and reply.startswith(CERTAINLY_NOT_APPLIED):
            assert_everywhere(live, "via-follower", None)


def test_isolated_leader_acknowledges_nothing_and_majority_elects_a_new_one(
    tmp_path: Path, loop_thread: LoopThread
) -> None:
    with running_cluster(tmp_path, loop_thread, overrides=OVERRIDES) as live:
        old = live.wait_leader()
        old_term = live.status(old)["term"]  # type: ignore[index]
        majority = [name for name in live.names if name != old]
        assert live.ask(old, "APPLY SET before yes") == "OK OK"

        isolate(live, old)
        with ThreadPoolExecutor(2) as pool:
            # Sent at once: the old leader still believes it leads and appends the entry.
            pending = pool.submit(live.ask, old, "APPLY SET via-old-leader-1 lost", 10.0)
            assert live.apply_until_ok(majority, "APPLY SET majority-2 yes") == "OK OK"
            new = live.wait_leader(majority)
            # Sent after the majority moved on: the old leader must not serve it either.
            late = pool.submit(live.ask, old, "APPLY SET via-old-leader-2 lost", 10.0)
            replies = [pending.result(), late.result()]
        for reply in replies:
            assert_not_acknowledged(reply, "an APPLY sent to the isolated old leader")
        assert new != old
        assert live.status(new)["term"] > old_term  # type: ignore[index]

        heal(live)
        live.wait_converged()
        assert live.wait_leader() == new
        assert_everywhere(live, "before", "yes")
        assert_everywhere(live, "majority-2", "yes")
        # Only the isolated node ever had these entries: they cannot have committed, and the
        # new leader's log replaced them.
        assert_everywhere(live, "via-old-leader-1", None)
        assert_everywhere(live, "via-old-leader-2", None)
        print(f"replies from the isolated old leader: {replies}")
