"""Storage: the log, the hard state and the snapshots of one node, in one data directory.

    <data_dir>/LOCK                   flock held while open; the holder's pid inside
    <data_dir>/wal/<seq>.wal          log segments, 20-digit sequence numbers
    <data_dir>/snap/<index>-<term>.snap   snapshots, newest `keep_snapshots` kept

Thread-safety: writes (save, compact, install_snapshot) are serialised by a writer lock
and do their write and fdatasync WITHOUT holding the reader lock; only the short in-memory
update that follows takes it. Readers (term, entries, snapshot, open_snapshot, ...) take the
reader lock, so a read sees the state either before a save or after it, never a mix, and is
never held up by an fsync. The node may call save() from one worker thread and read from its
event loop, as the design asks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from graft.raft.types import Entry, HardState, SnapshotMeta
from graft.storage.dirlock import DirLock
from graft.storage.errors import StorageError
from graft.storage.fileio import fsync_dir
from graft.storage.log import RESTORE_HINT, Plan, SegmentedLog
from graft.storage.snapshots import SnapshotStore, SnapshotWriter, StoredSnapshot

log = logging.getLogger("graft.storage")


class Storage:
    def __init__(self, path: Path, lock: DirLock, wal: SegmentedLog, snaps: SnapshotStore):
        self.path = path
        self._dirlock = lock
        self._log = wal
        self._snaps = snaps
        self._lock = threading.Lock()  # guards the in-memory state that readers see
        self._write_lock = threading.Lock()  # one writer at a time; held across fsync
        # Once a write or fsync has failed, what reached the disk is unknown (and a retried
        # fsync may report success for lost pages), so the store refuses further writes.
        self._failed: str | None = None
        self._closed = False

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        segment_bytes: int = 64 << 20,
        cache_entries: int = 4096,
        keep_snapshots: int = 2,
    ) -> Storage:
        """Create the directory if needed, lock it, and recover the log and snapshots."""
        if segment_bytes < 4096 or cache_entries < 0 or keep_snapshots < 1:
            raise ValueError(
                f"bad storage limits: segment_bytes={segment_bytes} (>= 4096), "
                f"cache_entries={cache_entries} (>= 0), keep_snapshots={keep_snapshots} (>= 1)"
            )
        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create data directory {path}: {exc.strerror}") from exc
        lock = DirLock.acquire(path)
        wal = SegmentedLog(path / "wal", segment_bytes, cache_entries)
        try:
            _make_dirs(path)
            snaps = SnapshotStore(path / "snap", keep_snapshots)
            snaps.recover()
            wal.recover()
            storage = cls(path, lock, wal, snaps)
            storage._reconcile()
        except BaseException:
            wal.close()
            lock.release()
            raise
        return storage

    # ---------------------------------------------------------------- what the core reads

    @property
    def hard_state(self) -> HardState:
        return self._log.hard_state

    def snapshot(self) -> StoredSnapshot | None:
        with self._lock:
            return self._snaps.newest()

    def first_index(self) -> int:
        with self._lock:
            return self._log.first

    def last_index(self) -> int:
        with self._lock:
            return self._log.last_index

    def term(self, index: int) -> int:
        """Term of entry `index`; also answers for the compaction point and the snapshot.

        Raises LogCompacted below the compaction point, LogUnavailable above the last index.
        """
        with self._lock:
            snap = self._snaps.newest()
            if snap is not None and index == snap.meta.index:
                return snap.meta.term
            return self._log.term(index)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi). With max_bytes, as many as fit in that many bytes of data, but
        at least one."""
        with self._lock:
            return self._log.entries(lo, hi, max_bytes)

    # ---------------------------------------------------------------- writes

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        """Persist hard state and entries with one fdatasync (group commit).

        When entries[0].index <= last_index the stored suffix from there on is replaced, in
        the same durable write. After a crash the whole save is present or none of it.
        """
        with self._write_lock:
            self._check_writable()
            plan = self._log.plan_save(hard_state, entries)
            if plan is None:
                return
            self._write(plan)
            with self._lock:
                self._log.apply_save(plan)

    def compact(self, index: int) -> None:
        """Forget entries <= index, which a stored snapshot covers (§7); delete segments
        wholly below. Durable before any segment is deleted."""
        with self._write_lock:
            self._check_writable()
            if index <= self._log.base_index:
                return
            if index > self._log.last_index:
                raise ValueError(f"compact({index}): the log ends at {self._log.last_index}")
            snap = self._snaps.newest()
            if snap is None or snap.meta.index < index:
                covered = 0 if snap is None else snap.meta.index
                raise ValueError(f"compact({index}): no snapshot covers it (newest: {covered})")
            self._write_base(index, self._log.term(index), reset=False)

    def create_snapshot(self, meta: SnapshotMeta, app_meta: bytes = b"") -> SnapshotWriter:
        with self._lock:
            return self._snaps.create(meta, app_meta, self._snapshot_committed)

    def open_snapshot(self, snap: StoredSnapshot) -> BinaryIO:
        """A stream of the state bytes; reading to the end verifies them."""
        with self._lock:
            if not self._snaps.holds(snap):
                raise ValueError(
                    f"snapshot {snap.meta.index} term {snap.meta.term} is not stored (pruned?)"
                )
            return self._snaps.open(snap)

    def install_snapshot(self, snap: StoredSnapshot) -> None:
        """Make the log continue after a committed snapshot from the leader (§7): entries
        up to it are dropped; if the log holds the snapshot's last entry with the same term
        the entries after it are kept, otherwise they are all discarded. Durable."""
        with self._write_lock:
            self._check_writable()
            with self._lock:
                stored = self._snaps.holds(snap)
            if not stored:
                raise ValueError(f"install_snapshot: snapshot {snap.meta.index} is not stored")
            self._install(snap)
            log.info("installed snapshot %d term %d", snap.meta.index, snap.meta.term)

    def usage(self) -> dict[str, int]:
        with self._lock:
            log_bytes, segments = self._log.usage()
            return {
                "log_bytes": log_bytes,
                "snapshot_bytes": self._snaps.usage(),
                "segments": segments,
            }

    def close(self) -> None:
        """Release the directory lock. Idempotent."""
        with self._write_lock, self._lock:
            if self._closed:
                return
            self._closed = True
            self._log.close()
            self._dirlock.release()

    def __enter__(self) -> Storage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---------------------------------------------------------------- internals

    def _check_writable(self) -> None:
        if self._closed:
            raise ValueError(f"storage {self.path} is closed")
        if self._failed is not None:
            raise StorageError(
                f"storage {self.path} refused a write after an earlier failure ({self._failed});"
                " restart the node so that it recovers from what is on disk"
            )

    def _write(self, plan: Plan) -> None:
        try:
            self._log.write(plan)
        except StorageError as exc:
            self._failed = str(exc)
            raise

    def _write_base(self, index: int, term: int, *, reset: bool) -> None:
        plan = self._log.plan_base(index, term, reset=reset)
        self._write(plan)
        with self._lock:
            gone = self._log.apply_base(plan)
        for seg in gone:  # oldest first, so that a crash leaves a suffix of segments
            seg.unlink(missing_ok=True)
            log.debug("deleted segment %s", seg)
        if gone:
            fsync_dir(self._log.dir)

    def _install(self, snap: StoredSnapshot) -> None:
        index, term = snap.meta.index, snap.meta.term
        if index <= self._log.base_index:
            return  # the log is already compacted at or past it
        keep = index <= self._log.last_index and self._log.term(index) == term
        self._write_base(index, term, reset=not keep)

    def _snapshot_committed(self, snap: StoredSnapshot) -> None:
        with self._lock:
            pruned = self._snaps.add(snap)
        self._snaps.prune(pruned)

    def _reconcile(self) -> None:
        """Check that the newest snapshot and the log fit together; finish an install that a
        crash interrupted (snapshot stored, log not yet reset)."""
        snap = self._snaps.newest()
        covered = 0 if snap is None else snap.meta.index
        if covered < self._log.base_index:
            raise StorageError(
                f"the log in {self._log.dir} is compacted through {self._log.base_index} but "
                f"the newest valid snapshot covers only {covered}; " + RESTORE_HINT
            )
        if snap is None or covered == self._log.base_index:
            return
        in_log = covered <= self._log.last_index and self._log.term(covered) == snap.meta.term
        if not in_log:
            log.warning(
                "log (last index %d) does not continue snapshot %d term %d; resetting it "
                "after the snapshot (an install interrupted by a crash)",
                self._log.last_index,
                covered,
                snap.meta.term,
            )
            self._install(snap)


def _make_dirs(path: Path) -> None:
    created = False
    for sub in ("wal", "snap"):
        if not (path / sub).is_dir():
            (path / sub).mkdir()
            created = True
    if created:
        fsync_dir(path)
