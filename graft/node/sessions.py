"""The client session table: applies a retried APPLY at most once.

A client that sends APPLY with a client id and a sequence number may retry it after a timeout
or a dropped connection. Each node records, per client, the highest sequence number applied
and its outcome. The table changes only when a committed entry is applied, so it is the same
on every node at the same applied index; it is saved with each snapshot.

The table is bounded: past `max_clients`, the client whose last command is oldest (lowest
index) is forgotten. Eviction depends only on the log, so every node evicts the same client.
A forgotten client's retry is applied again; docs/limitations.md says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an applied command answered: its output, or the FSM's deterministic error."""

    ok: bool
    output: bytes
    status: int = 0
    stderr: bytes = b""


@dataclass(slots=True)
class _Record:
    seq: int
    index: int
    outcome: Outcome


class Sessions:
    def __init__(self, max_clients: int = 10_000) -> None:
        self._max_clients = max_clients
        self._records: dict[str, _Record] = {}

    def __len__(self) -> int:
        return len(self._records)

    def seen(self, client: str, seq: int) -> Outcome | None:
        """The recorded outcome when `seq` was applied already, else None.

        A sequence number below the last applied one also counts as applied; its own
        outcome is gone, so the caller gets the newest recorded one with that caveat noted
        in docs/api.md.
        """
        record = self._records.get(client)
        if record is None or seq > record.seq:
            return None
        return record.outcome

    def record(self, client: str, seq: int, index: int, outcome: Outcome) -> None:
        self._records.pop(client, None)
        self._records[client] = _Record(seq, index, outcome)

        # Insertion order is index order, because entries are applied in log order.
        while len(self._records) > self._max_clients:
            del self._records[next(iter(self._records))]

    def encode(self) -> bytes:
        rows = [
            [
                c,
                r.seq,
                r.index,
                r.outcome.ok,
                r.outcome.output.hex(),
                r.outcome.status,
                r.outcome.stderr.hex(),
            ]
            for c, r in self._records.items()
        ]
        return orjson.dumps({"sessions": rows})

    @classmethod
    def decode(cls, data: bytes, max_clients: int = 10_000) -> Sessions:
        sessions = cls(max_clients)
        if not data:
            return sessions

        for client, seq, index, ok, output, status, stderr in orjson.loads(data)["sessions"]:
            outcome = Outcome(ok, bytes.fromhex(output), status, bytes.fromhex(stderr))
            sessions._records[client] = _Record(seq, index, outcome)
        return sessions
