"""Small helpers for durable file operations, shared by the log and the snapshot store."""

from __future__ import annotations

import os
from pathlib import Path

from graft.storage.errors import StorageError


def write_all(fd: int, data: bytes | memoryview, path: Path) -> None:
    """os.write until every byte is written (a regular file rarely writes short, but may)."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except OSError as exc:
            raise StorageError(f"write to {path} failed: {exc.strerror}") from exc
        view = view[n:]


def fsync_dir(directory: Path) -> None:
    """Make a create, rename or unlink in `directory` durable (the entry lives in the dir)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise StorageError(f"cannot open directory {directory}: {exc.strerror}") from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        raise StorageError(f"fsync of directory {directory} failed: {exc.strerror}") from exc
    finally:
        os.close(fd)


def cut_file(path: Path, size: int) -> None:
    """Truncate `path` to `size` bytes durably."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"cannot cut {path} to {size} bytes: {exc.strerror}") from exc
