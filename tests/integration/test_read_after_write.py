"""QUERY after an acknowledged APPLY sees it, whichever node the QUERY is sent to (§4)."""

from __future__ import annotations

import pytest

from .conftest import Live


@pytest.mark.parametrize(
    ("leader_delay", "rounds"), [(0.0, 3), (0.15, 1)], ids=["fast-links", "slow-leader-links"]
)
def test_query_on_every_other_node_sees_an_acknowledged_apply(
    calm: Live, leader_delay: float, rounds: int
) -> None:
    """With the leader's outgoing links slowed, followers learn each commit well after the
    client was answered, so a follower that answered QUERY from its own state would be
    caught (GRAFT_TEST_UNSAFE=stale-reads makes this test fail)."""
    leader = calm.wait_leader()
    proxy = calm.cluster.proxy
    assert proxy is not None
    pairs = [(leader, name) for name in calm.names if name != leader]
    calm.proxy_call(lambda: proxy.set_delay(leader_delay, pairs))
    clients = {name: calm.client(name) for name in calm.names}
    try:
        for round_number in range(rounds):
            for writer in calm.names:
                key = f"raw-{writer}"
                value = f"{round_number}-{writer}-{leader_delay}"
                assert clients[writer].request(f"APPLY SET {key} {value}") == "OK OK"

                # Sent only after the acknowledgement: a linearizable read must see it.
                for reader in calm.names:
                    if reader != writer:
                        reply = clients[reader].request(f"QUERY GET {key}")
                        assert reply == f"OK {value}", (writer, reader, reply)
    finally:
        for client in clients.values():
            client.close()
        calm.proxy_call(proxy.heal)
