"""The data-directory lock: one Storage per directory, across processes.

fcntl.flock on `<dir>/LOCK`, with the holder's pid written inside for the error message.
The kernel drops the lock when the holder dies, so a crashed node never leaves a stale lock
behind; the pid in the file is only a hint. flock locks belong to an open file description,
so a second open in the same process is refused too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from graft.storage.errors import DataDirLocked, StorageError


class DirLock:
    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, directory: Path) -> DirLock:
        path = directory / "LOCK"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot open lock file {path}: {exc.strerror}") from exc

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise DataDirLocked(str(directory), pid) from None

        # Only the holder writes: the pid a refused opener reads is the holder's.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor drops the flock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def lock_holder(directory: Path) -> int | None:
    """The pid of the process holding `directory`'s lock, or None when nobody holds it."""
    path = directory / "LOCK"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None

    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd)
    finally:
        os.close(fd)
    return None
