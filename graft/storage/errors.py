"""The exceptions storage raises. Expected outcomes are small typed classes (see STYLE §8)."""

from __future__ import annotations


class StorageError(Exception):
    """Stored data cannot be trusted or written: corruption, an I/O failure, a bad layout.

    The message names the file, the byte offset when there is one, and what the operator can
    do about it. A node must stop rather than carry on with a damaged log.
    """


class DataDirLocked(StorageError):
    """Another process (or another Storage in this one) already holds the data directory."""

    def __init__(self, path: str, pid: int | None) -> None:
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"data directory {path} is locked by {holder}; stop that node first, or give this "
            "one its own --data-dir"
        )
        self.path = path
        self.pid = pid


class LogCompacted(LookupError):
    """The entry asked for is below the first index: a snapshot covers it (§7)."""

    def __init__(self, index: int, first_index: int) -> None:
        super().__init__(f"entry {index} is compacted; the log starts at {first_index}")
        self.index = index
        self.first_index = first_index


class LogUnavailable(LookupError):
    """The entry asked for is above the last stored index."""

    def __init__(self, index: int, last_index: int) -> None:
        super().__init__(f"entry {index} is not stored; the log ends at {last_index}")
        self.index = index
        self.last_index = last_index
