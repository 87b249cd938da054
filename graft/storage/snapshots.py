"""The snapshot store: one file per snapshot, written and read as a stream.

A snapshot file is the state bytes followed by a trailer:

    state | meta JSON | meta length u32 | crc32(meta JSON) u32 | b"GRAFTSN1"

The meta JSON holds index, term, membership, size, checksum ("sha256:<hex>" of the state)
and app_meta (base64). A writer streams into `<name>.tmp`, appends the trailer, fsyncs,
renames to `<index>-<term>.snap` and fsyncs the directory: a crash leaves either no
snapshot or a whole one, plus perhaps a .tmp file that the next open removes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from graft.raft.types import Membership, SnapshotMeta
from graft.storage.errors import StorageError
from graft.storage.fileio import fsync_dir, write_all

log = logging.getLogger("graft.storage")

SNAP_MAGIC = b"GRAFTSN1"
_TRAILER = struct.Struct("<II8s")  # meta length, crc32(meta), magic
_NAME = re.compile(r"^(\d{20})-(\d{20})\.snap$")
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class StoredSnapshot:
    meta: SnapshotMeta  # index, term, membership
    size: int  # bytes of state
    checksum: str  # "sha256:<64 hex digits>" of the state bytes
    app_meta: bytes  # opaque bytes the host stores with the snapshot (e.g. its dedup table)


def snapshot_name(meta: SnapshotMeta) -> str:
    return f"{meta.index:020d}-{meta.term:020d}.snap"


class SnapshotStore:
    """Not thread-safe by itself; `Storage` guards it."""

    def __init__(self, directory: Path, keep: int) -> None:
        if keep < 1:
            raise ValueError(f"keep_snapshots must be at least 1, not {keep}")
        self.dir = directory
        self.keep = keep
        self._snapshots: list[StoredSnapshot] = []  # newest first

    def recover(self) -> None:
        """Remove temporary files; find the newest snapshot whose bytes match its checksum."""
        for path in self.dir.glob("*.tmp"):
            log.warning("removed %s, an unfinished snapshot left by a crash", path)
            path.unlink()
        found = []
        for path in self.dir.iterdir():
            if _NAME.match(path.name):
                found.append(path)
        found.sort(reverse=True)  # zero-padded index then term: newest first
        for path in found:
            snap = self._load(path, verify=not self._snapshots)
            if snap is not None:
                self._snapshots.append(snap)

    def _load(self, path: Path, *, verify: bool) -> StoredSnapshot | None:
        try:
            snap = read_trailer(path)
            if verify:
                check_state(path, snap)
        except StorageError as exc:
            bad = path.with_name(path.name + ".corrupt")
            path.rename(bad)
            log.warning("ignored snapshot %s, renamed to %s: %s", path, bad.name, exc)
            return None
        return snap

    def newest(self) -> StoredSnapshot | None:
        return self._snapshots[0] if self._snapshots else None

    def path(self, snap: StoredSnapshot) -> Path:
        return self.dir / snapshot_name(snap.meta)

    def holds(self, snap: StoredSnapshot) -> bool:
        return snap in self._snapshots

    def create(
        self, meta: SnapshotMeta, app_meta: bytes, on_commit: Callable[[StoredSnapshot], None]
    ) -> SnapshotWriter:
        newest = self.newest()
        if newest is not None and meta.index < newest.meta.index:
            raise ValueError(
                f"snapshot at index {meta.index} is older than the stored one at "
                f"{newest.meta.index}"
            )
        final = self.dir / snapshot_name(meta)
        tmp = final.with_name(f"{final.name}.{os.urandom(6).hex()}.tmp")
        return SnapshotWriter(tmp, final, meta, app_meta, on_commit)

    def open(self, snap: StoredSnapshot) -> BinaryIO:
        path = self.path(snap)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise StorageError(f"cannot open snapshot {path}: {exc.strerror}") from exc
        return io.BufferedReader(_StateReader(fd, path, snap), _READ_CHUNK)

    def add(self, snap: StoredSnapshot) -> list[Path]:
        """Record a committed snapshot; return the files of those beyond `keep`, which the
        caller deletes with `prune` (outside its lock: readers need not wait for it)."""
        self._snapshots = [s for s in self._snapshots if s.meta != snap.meta]
        self._snapshots.append(snap)
        self._snapshots.sort(key=lambda s: (s.meta.index, s.meta.term), reverse=True)
        pruned, self._snapshots = self._snapshots[self.keep :], self._snapshots[: self.keep]
        return [self.path(old) for old in pruned]

    def prune(self, paths: list[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)
            log.info("pruned snapshot %s", path.name)
        if paths:
            fsync_dir(self.dir)

    def usage(self) -> int:
        return sum(self.path(s).stat().st_size for s in self._snapshots)


class SnapshotWriter:
    """Streams one snapshot to disk; state never needs to fit in memory.

    Use it as a context manager, or call commit() or abort() exactly once.
    """

    def __init__(
        self,
        tmp: Path,
        final: Path,
        meta: SnapshotMeta,
        app_meta: bytes,
        on_commit: Callable[[StoredSnapshot], None],
    ) -> None:
        self._tmp = tmp
        self._final = final
        self._meta = meta
        self._app_meta = app_meta
        self._on_commit = on_commit
        self._hash = hashlib.sha256()
        self._size = 0
        try:
            self._fd: int | None = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644
            )
        except OSError as exc:
            raise StorageError(f"cannot create {tmp}: {exc.strerror}") from exc

    def write(self, chunk: bytes) -> None:
        fd = self._open_fd()
        write_all(fd, chunk, self._tmp)
        self._hash.update(chunk)
        self._size += len(chunk)

    def commit(self, expected_checksum: str | None = None) -> StoredSnapshot:
        """fsync the file, rename it into place, fsync the directory, prune old ones.

        With `expected_checksum` (a snapshot received from the leader), a mismatch aborts the
        snapshot and raises StorageError.
        """
        fd = self._open_fd()
        checksum = "sha256:" + self._hash.hexdigest()
        if expected_checksum is not None and expected_checksum != checksum:
            self.abort()
            raise StorageError(
                f"snapshot {self._meta.index} term {self._meta.term} has checksum {checksum}, "
                f"expected {expected_checksum}: the transfer was damaged; request it again"
            )

        snap = StoredSnapshot(self._meta, self._size, checksum, self._app_meta)
        write_all(fd, encode_trailer(snap), self._tmp)
        try:
            os.fsync(fd)
        except OSError as exc:
            self.abort()
            raise StorageError(f"fsync of {self._tmp} failed: {exc.strerror}") from exc
        os.close(fd)
        self._fd = None
        os.replace(self._tmp, self._final)
        fsync_dir(self._final.parent)
        self._on_commit(snap)
        log.info(
            "stored snapshot %d term %d (%d bytes)", snap.meta.index, snap.meta.term, snap.size
        )
        return snap

    def abort(self) -> None:
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        self._tmp.unlink(missing_ok=True)

    def _open_fd(self) -> int:
        if self._fd is None:
            raise ValueError("snapshot writer is already committed or aborted")
        return self._fd

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()  # a no-op after commit()


def encode_trailer(snap: StoredSnapshot) -> bytes:
    body = {
        "index": snap.meta.index,
        "term": snap.meta.term,
        "membership": snap.meta.membership.encode().decode(),
        "size": snap.size,
        "checksum": snap.checksum,
        "app_meta": base64.b64encode(snap.app_meta).decode(),
    }
    meta = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return meta + _TRAILER.pack(len(meta), zlib.crc32(meta), SNAP_MAGIC)


def read_trailer(path: Path) -> StoredSnapshot:
    """Parse the trailer of a snapshot file; StorageError when it is damaged."""
    try:
        with path.open("rb") as f:
            total = f.seek(0, os.SEEK_END)
            if total < _TRAILER.size:
                raise StorageError(f"snapshot {path} is too short ({total} bytes)")
            f.seek(total - _TRAILER.size)
            length, crc, magic = _TRAILER.unpack(f.read(_TRAILER.size))
            if magic != SNAP_MAGIC or length > total - _TRAILER.size:
                raise StorageError(
                    f"snapshot {path} has no valid trailer at offset {total - _TRAILER.size}"
                )
            f.seek(total - _TRAILER.size - length)
            meta = f.read(length)
    except OSError as exc:
        raise StorageError(f"cannot read snapshot {path}: {exc.strerror}") from exc
    if zlib.crc32(meta) != crc:
        raise StorageError(f"snapshot {path}: trailer checksum mismatch")
    body = json.loads(meta)
    snap = StoredSnapshot(
        SnapshotMeta(body["index"], body["term"], Membership.decode(body["membership"])),
        body["size"],
        body["checksum"],
        base64.b64decode(body["app_meta"]),
    )
    if snap.size != total - _TRAILER.size - length:
        raise StorageError(f"snapshot {path}: size {snap.size} disagrees with the file")
    return snap


def check_state(path: Path, snap: StoredSnapshot) -> None:
    """Read the whole state and compare its checksum; StorageError on a mismatch."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            remaining = snap.size
            while remaining:
                chunk = f.read(min(_READ_CHUNK, remaining))
                if not chunk:
                    break
                digest.update(chunk)
                remaining -= len(chunk)
    except OSError as exc:
        raise StorageError(f"cannot read snapshot {path}: {exc.strerror}") from exc
    if "sha256:" + digest.hexdigest() != snap.checksum:
        raise StorageError(f"snapshot {path}: state does not match checksum {snap.checksum}")


class _StateReader(io.RawIOBase):
    """Reads the state part of a snapshot file and checks its checksum on reaching the end."""

    def __init__(self, fd: int, path: Path, snap: StoredSnapshot) -> None:
        self._fd = fd
        self._path = path
        self._snap = snap
        self._remaining = snap.size
        self._hash = hashlib.sha256()
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._remaining == 0:
            self._check()
            return 0
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._remaining)
        n = os.readv(self._fd, [view[:want]])
        if n == 0:
            raise StorageError(
                f"snapshot {self._path} ends {self._remaining} bytes early; it was damaged "
                "after it was stored"
            )
        self._hash.update(view[:n])
        self._remaining -= n
        return n

    def _check(self) -> None:
        if self._checked:
            return
        self._checked = True
        if "sha256:" + self._hash.hexdigest() != self._snap.checksum:
            raise StorageError(
                f"snapshot {self._path} does not match its checksum {self._snap.checksum}; it "
                "was damaged after it was stored: remove it and take or fetch a new one"
            )

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()
