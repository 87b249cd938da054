"""Durable storage: the write-ahead log, hard state and snapshot store. Owns every byte on disk.

See docs/storage.md for the on-disk layout, record formats, recovery rules and fsync points.
"""

from graft.storage.dirlock import lock_holder
from graft.storage.errors import DataDirLocked, LogCompacted, LogUnavailable, StorageError
from graft.storage.snapshots import SnapshotWriter, StoredSnapshot
from graft.storage.store import Storage

__all__ = [
    "DataDirLocked",
    "LogCompacted",
    "LogUnavailable",
    "SnapshotWriter",
    "Storage",
    "StorageError",
    "StoredSnapshot",
    "lock_holder",
]
