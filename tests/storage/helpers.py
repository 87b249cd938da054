"""Shared helpers for the storage tests: deterministic entries and store inspection."""

from __future__ import annotations

from pathlib import Path

from graft.raft.types import Entry, EntryKind
from graft.storage import Storage


def payload(index: int, term: int) -> bytes:
    """Deterministic command bytes of varying length, so a test can check any entry."""
    return b"%d:%d;" % (index, term) * (1 + (index * 7 + term) % 13)


def make(lo: int, hi: int, term: int) -> list[Entry]:
    """Entries [lo, hi) of one term, with payload() as data."""
    return [Entry(i, term, EntryKind.COMMAND, payload(i, term)) for i in range(lo, hi)]


def all_entries(store: Storage) -> list[Entry]:
    return store.entries(store.first_index(), store.last_index() + 1)


def segments(path: Path) -> list[Path]:
    return sorted((path / "wal").glob("*.wal"))
