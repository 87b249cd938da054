"""The safety properties of Figure 3 of the Raft paper, checked while a schedule runs.

- Election Safety: at most one leader per term.
- Leader Append-Only: a leader never overwrites or deletes entries of its log.
- Log Matching: two logs holding an entry with the same index and term hold the same entry
  there and agree on every entry before it. Checked incrementally (every persisted entry is
  registered under (index, term) with its content and the term before it; by induction that
  makes whole prefixes agree) and with a full pairwise comparison at checkpoints.
- Leader Completeness: an entry committed in some term is in the log of every later leader.
- State Machine Safety: no two servers apply different entries at the same index, and their
  state machines agree at every index both reached.

Every check raises `Violation` naming the property, so a test can assert which one fired.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graft.raft.core import RaftCore
from graft.raft.ready import Role
from graft.raft.types import Entry

ELECTION_SAFETY = "Election Safety"
LEADER_APPEND_ONLY = "Leader Append-Only"
LOG_MATCHING = "Log Matching"
LEADER_COMPLETENESS = "Leader Completeness"
STATE_MACHINE_SAFETY = "State Machine Safety"
LIVENESS = "Liveness"
LINEARIZABILITY = "Linearizability"
HOST_CONTRACT = "Host contract"


class Violation(AssertionError):
    def __init__(self, prop: str, detail: str) -> None:
        super().__init__(f"{prop} violated: {detail}")
        self.prop = prop
        self.detail = detail


@dataclass(slots=True)
class _LeaderMark:
    term: int
    last_index: int
    last_term: int


@dataclass
class Checker:
    leaders: dict[int, str] = field(default_factory=dict)  # term -> leader
    committed: dict[int, Entry] = field(default_factory=dict)  # index -> entry, all nodes
    applied: dict[int, Entry] = field(default_factory=dict)  # index -> entry applied
    digests: dict[int, int] = field(default_factory=dict)  # index -> FSM digest there
    registry: dict[tuple[int, int], tuple[int, bytes]] = field(default_factory=dict)
    previous: dict[tuple[int, int], int] = field(default_factory=dict)  # term before it
    _marks: dict[str, _LeaderMark] = field(default_factory=dict)
    _seen_commit: dict[str, int] = field(default_factory=dict)

    # -- after every step --------------------------------------------------------------------

    def check_node(self, node: str, core: RaftCore) -> None:
        self._record_commit(node, core)
        if core.role is Role.LEADER:
            self._check_leader(node, core)
        elif node in self._marks:
            del self._marks[node]

    def _check_leader(self, node: str, core: RaftCore) -> None:
        term = core.term
        holder = self.leaders.setdefault(term, node)
        if holder != node:
            raise Violation(ELECTION_SAFETY, f"{holder} and {node} both lead term {term}")

        log = core.log
        mark = self._marks.get(node)
        if mark is None or mark.term != term:
            self._check_completeness(node, core)
        else:
            known = log.term_at(mark.last_index)
            if log.last_index() < mark.last_index or (
                known is not None and known != mark.last_term
            ):
                raise Violation(
                    LEADER_APPEND_ONLY,
                    f"leader {node} of term {term} had {mark.last_index}/{mark.last_term}, "
                    f"now last {log.last_index()} with term {known} there",
                )
        self._marks[node] = _LeaderMark(term, log.last_index(), log.last_term())

    def _check_completeness(self, node: str, core: RaftCore) -> None:
        log = core.log
        for index, entry in self.committed.items():
            if index <= log.base:
                continue
            if index > log.last_index() or log.entry(index) != entry:
                found = log.entry(index) if index <= log.last_index() else None
                raise Violation(
                    LEADER_COMPLETENESS,
                    f"{node} leads term {core.term} without committed {entry}; has {found}",
                )

    def _record_commit(self, node: str, core: RaftCore) -> None:
        log = core.log
        seen = self._seen_commit.get(node, 0)
        if log.commit <= seen:
            return
        for index in range(max(seen, log.base) + 1, log.commit + 1):
            entry = log.entry(index)
            known = self.committed.setdefault(index, entry)
            if known != entry:
                raise Violation(
                    STATE_MACHINE_SAFETY,
                    f"{node} committed {entry} where {known} was committed",
                )
        self._seen_commit[node] = log.commit

    def forget_commit(self, node: str) -> None:
        """A node restarted: its commit index starts again from the persisted hint."""
        self._seen_commit.pop(node, None)
        self._marks.pop(node, None)

    # -- as hosts act ------------------------------------------------------------------------

    def on_persist(self, node: str, entries: tuple[Entry, ...], prev_term: int | None) -> None:
        registry = self.registry
        previous = self.previous
        for entry in entries:
            key = (entry.index, entry.term)
            content = (entry.kind.value, entry.data)
            known = registry.setdefault(key, content)
            if known != content:
                raise Violation(
                    LOG_MATCHING, f"{node} holds {entry}; another log holds {known} there"
                )
            if prev_term is not None:
                known_prev = previous.setdefault(key, prev_term)
                if known_prev != prev_term:
                    raise Violation(
                        LOG_MATCHING,
                        f"{node} holds {entry} after term {prev_term}; another log holds "
                        f"it after term {known_prev}",
                    )
            prev_term = entry.term

    def on_apply(self, node: str, entry: Entry, digest: int) -> None:
        known = self.applied.setdefault(entry.index, entry)
        if known != entry:
            raise Violation(
                STATE_MACHINE_SAFETY, f"{node} applied {entry} where another applied {known}"
            )
        self.check_digest(node, entry.index, digest)

    def check_digest(self, node: str, index: int, digest: int) -> None:
        known = self.digests.setdefault(index, digest)
        if known != digest:
            raise Violation(
                STATE_MACHINE_SAFETY,
                f"{node}'s state machine at index {index} differs from another's",
            )

    # -- checkpoints -------------------------------------------------------------------------

    def check_logs(self, logs: dict[str, RaftCore]) -> None:
        """Full Log Matching between every pair of logs (quadratic; run at checkpoints)."""
        names = sorted(logs)
        for n, a in enumerate(names):
            for b in names[n + 1 :]:
                _compare_logs(a, logs[a], b, logs[b])


def _compare_logs(a: str, core_a: RaftCore, b: str, core_b: RaftCore) -> None:
    log_a, log_b = core_a.log, core_b.log
    low = max(log_a.base, log_b.base) + 1
    high = min(log_a.last_index(), log_b.last_index())
    matched = False
    for index in range(high, low - 1, -1):
        entry_a = log_a.entry(index)
        entry_b = log_b.entry(index)
        if matched and entry_a != entry_b:
            raise Violation(
                LOG_MATCHING,
                f"{a} and {b} agree at a later index but differ at {index}: {entry_a} vs {entry_b}",
            )
        if entry_a.term == entry_b.term:
            if entry_a != entry_b:
                raise Violation(LOG_MATCHING, f"{a} has {entry_a}, {b} has {entry_b}")
            matched = True
