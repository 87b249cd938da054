"""How a core is tuned, and the one source of randomness it is given.

The core never imports `random`: the host passes an object with `randrange` (a seeded
`random.Random` does), so that a simulation replays exactly from its seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Jitter(Protocol):
    """Injected randomness, used only to spread election timeouts (§5.2)."""

    def randrange(self, start: int, stop: int) -> int: ...


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Tunables of one core. Times are counted in ticks; the host decides how long a tick is.

    invariant: heartbeat_ticks < election_ticks, so a healthy leader is never suspected.
    """

    id: str
    election_ticks: int = 10  # randomised election timeout in [e, 2e) ticks (§5.2)
    heartbeat_ticks: int = 1
    max_inflight: int = 64  # AppendEntries in flight per follower while pipelining
    max_entries_bytes: int = 1 << 20  # bytes of entry data per AppendEntries (at least 1 entry)
    pre_vote: bool = True  # thesis §9.6
    check_quorum: bool = True  # thesis §6.2: a leader cut off from a majority steps down

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("CoreConfig.id must be a non-empty node id")
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise ValueError(
                f"need 1 <= heartbeat_ticks < election_ticks, got heartbeat_ticks="
                f"{self.heartbeat_ticks} election_ticks={self.election_ticks}"
            )
        if self.max_inflight < 1 or self.max_entries_bytes < 1:
            raise ValueError(
                f"max_inflight and max_entries_bytes must be >= 1, got {self.max_inflight} "
                f"and {self.max_entries_bytes}"
            )
