"""The command envelope and the client session table."""

from __future__ import annotations

import pytest

from graft.node.envelope import Command, EnvelopeError, unwrap, wrap
from graft.node.sessions import Outcome, Sessions


@pytest.mark.parametrize(
    "command",
    [Command(b""), Command(b"SET a 1\n"), Command(b"\x00\x01raw", "client-7", 2**40)],
)
def test_envelope_round_trip_keeps_the_payload_exact(command: Command) -> None:
    assert unwrap(wrap(command.payload, command.client, command.seq)) == command


@pytest.mark.parametrize("data", [b"", b"\x09payload", b"\x01\x00\x05ab"])
def test_unreadable_envelopes_are_refused(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        unwrap(data)


def test_a_seen_sequence_number_returns_the_recorded_outcome() -> None:
    sessions = Sessions()
    outcome = Outcome(True, b"OK")
    sessions.record("c", 3, index=10, outcome=outcome)

    assert sessions.seen("c", 3) == outcome
    assert sessions.seen("c", 2) == outcome
    assert sessions.seen("c", 4) is None
    assert sessions.seen("other", 1) is None


def test_the_oldest_client_is_forgotten_first_and_the_table_survives_encoding() -> None:
    sessions = Sessions(max_clients=2)
    sessions.record("a", 1, 1, Outcome(True, b"1"))
    sessions.record("b", 1, 2, Outcome(False, b"", 3, b"err"))
    sessions.record("a", 2, 3, Outcome(True, b"2"))
    sessions.record("c", 1, 4, Outcome(True, b"3"))

    restored = Sessions.decode(sessions.encode(), max_clients=2)

    assert restored.seen("b", 1) is None
    assert restored.seen("a", 2) == Outcome(True, b"2")
    assert restored.seen("c", 1) == Outcome(True, b"3")
    assert len(restored) == 2
