"""The in-memory Raft log: the entries since the last compaction and the indexes along it.

Theory of operation. Entries live in one Python list; the entry at list position `p` has index
`base + 1 + p`, where `base` is the last index the log no longer holds (0 for a fresh log, the
compaction point afterwards) and `base_term` is its term. Nothing is ever copied as a whole:
appends extend the list, conflicts cut its tail, compaction cuts its head.

Four indexes move along the log, and only forward except where noted:

    base <= applied <= commit <= last_index,  stable <= last_index

- `commit`: highest index known committed (§5.3). Never decreases.
- `applied`: highest committed index handed to the host and acknowledged by `advance`.
- `stable`: highest index the host reported durable. A conflict that cuts entries the host
  already stored lowers it, so that the replacement entries are handed out again; the host
  then truncates its stored suffix (see graft/raft/ready.py).

This module knows nothing about roles, terms of office or messages.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from graft.raft.ready import InvariantViolation
from graft.raft.types import Entry


def _term_of(entry: Entry) -> int:
    return entry.term


class RaftLog:
    __slots__ = ("entries", "base", "base_term", "commit", "applied", "stable")

    def __init__(
        self, base: int, base_term: int, entries: Sequence[Entry], commit: int, applied: int
    ) -> None:
        self.entries: list[Entry] = list(entries)
        self.base = base
        self.base_term = base_term
        self._check_contiguous()

        last = self.last_index()
        self.stable = last
        # The persisted commit is a hint (HardState); entries the host applied were committed.
        self.commit = min(max(commit, applied, base), last)
        self.applied = min(max(applied, base), self.commit)

    def _check_contiguous(self) -> None:
        expected = self.base + 1
        for entry in self.entries:
            if entry.index != expected:
                raise InvariantViolation(
                    f"log entries are not contiguous: expected index {expected}, "
                    f"got {entry.index} (base {self.base})"
                )
            expected += 1

    # -- reading -----------------------------------------------------------------------------

    def first_index(self) -> int:
        return self.base + 1

    def last_index(self) -> int:
        return self.base + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.base_term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at `index`, or None when the log does not know it."""
        offset = index - self.base
        if offset == 0:
            return self.base_term
        if 0 < offset <= len(self.entries):
            return self.entries[offset - 1].term
        return None

    def entry(self, index: int) -> Entry:
        offset = index - self.base - 1
        if offset < 0 or offset >= len(self.entries):
            last = self.last_index()
            raise IndexError(f"index {index} outside the log ({self.base + 1}..{last})")
        return self.entries[offset]

    def between(self, first: int, last: int) -> tuple[Entry, ...]:
        """Entries `first..last` inclusive (both inside the log)."""
        return tuple(self.entries[first - self.base - 1 : last - self.base])

    def batch_from(self, first: int, max_bytes: int) -> tuple[Entry, ...]:
        """Entries from `first` on, at least one and at most `max_bytes` of data (§10.2.1)."""
        entries = self.entries
        start = first - self.base - 1
        end = len(entries)
        size = 0
        stop = start
        while stop < end:
            size += len(entries[stop].data)
            if size > max_bytes and stop > start:
                break
            stop += 1
        return tuple(entries[start:stop])

    def unstable(self) -> tuple[Entry, ...]:
        """Entries the host has not reported durable yet."""
        return tuple(self.entries[self.stable - self.base :])

    def to_apply(self) -> tuple[Entry, ...]:
        """Committed entries the host has not applied yet, in order."""
        return tuple(self.entries[self.applied - self.base : self.commit - self.base])

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a log with a later last term, or the same term and not shorter, wins."""
        own_term = self.last_term()
        return last_term > own_term or (last_term == own_term and last_index >= self.last_index())

    def last_index_of_term(self, term: int) -> int | None:
        """The last index holding `term`, or None if the log holds no entry of that term.

        Terms never decrease along a log, so a binary search finds it.
        """
        position = bisect_right(self.entries, term, key=_term_of)
        if position > 0 and self.entries[position - 1].term == term:
            return self.base + position
        if position == 0 and self.base_term == term and self.base > 0:
            return self.base
        return None

    def conflict_hint(self, prev_index: int) -> tuple[int, int]:
        """(conflict_index, conflict_term) for an AppendEntries whose prev entry did not match.

        The end of §5.3: name the term found at `prev_index` and the first index of that term
        here, so the leader can skip the whole term in one round trip.
        """
        if prev_index > self.last_index():
            return self.last_index() + 1, 0
        term = self.term_at(prev_index)
        if term is None:
            return self.base + 1, 0
        position = bisect_left(self.entries, term, key=_term_of)
        return self.base + 1 + position, term

    # -- changing ----------------------------------------------------------------------------

    def append(self, entry: Entry) -> None:
        """Append one entry the leader created (§5.3: a leader only appends)."""
        self.entries.append(entry)

    def merge(self, entries: Sequence[Entry]) -> int | None:
        """Add a leader's entries that follow a matching entry (§5.3, receiver rule 3 and 4).

        Entries already present with the same term are kept (an old, reordered message must
        not cut entries a newer one appended). Returns the index from which the log was cut
        because of a conflict, or None when nothing was cut.
        """
        last = self.last_index()
        first = entries[0].index
        if first == last + 1:
            self.entries.extend(entries)
            return None

        for position, entry in enumerate(entries):
            if entry.index <= self.base:
                continue
            if entry.index > last:
                self.entries.extend(entries[position:])
                return None
            if self.entries[entry.index - self.base - 1].term != entry.term:
                self._truncate_from(entry.index)
                self.entries.extend(entries[position:])
                return entry.index
        return None

    def _truncate_from(self, index: int) -> None:
        if index <= self.commit:
            raise InvariantViolation(
                f"a leader's entry conflicts with committed index {index} (commit {self.commit})"
            )
        del self.entries[index - self.base - 1 :]
        self.stable = min(self.stable, index - 1)

    def commit_to(self, index: int) -> None:
        if index > self.last_index():
            raise InvariantViolation(f"commit {index} beyond last index {self.last_index()}")
        if index > self.commit:
            self.commit = index

    def stable_to(self, index: int, term: int) -> None:
        """The host made entries up to (`index`, `term`) durable.

        Ignored when the log no longer holds that entry: a conflict replaced it after the
        host was handed it, and the replacement will be handed out again.
        """
        if index > self.stable and self.term_at(index) == term:
            self.stable = index

    def applied_to(self, index: int) -> None:
        if index > self.commit:
            raise InvariantViolation(f"applied {index} beyond commit {self.commit}")
        if index > self.applied:
            self.applied = index

    def compact(self, index: int) -> None:
        """Forget entries up to `index`; a snapshot covers them (§7)."""
        if index <= self.base:
            return
        if index > self.applied:
            raise InvariantViolation(f"compaction to {index} beyond applied {self.applied}")
        term = self.term_at(index)
        assert term is not None  # base < index <= applied <= last
        del self.entries[: index - self.base]
        self.base = index
        self.base_term = term

    def restore(self, index: int, term: int) -> bool:
        """Restart the log after a snapshot of (`index`, `term`) that is newer than `commit`.

        §7: if the log holds that very entry, the entries after it stay (the follower may
        have acknowledged them); otherwise the whole log goes. Returns True if entries stayed.
        """
        kept = index <= self.last_index() and self.term_at(index) == term
        if kept:
            del self.entries[: index - self.base]
        else:
            self.entries.clear()
        self.base = index
        self.base_term = term
        self.commit = index
        self.applied = index
        self.stable = max(self.stable, index) if kept else index
        return kept
