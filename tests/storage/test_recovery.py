"""Recovery rules, shown by cutting and corrupting a real log at every record.

- A torn tail of the newest segment (an interrupted write) is cut off with a WARNING that
  names the file and offset; saves are atomic, so whole batches survive or none.
- A bad record followed by a valid batch, or any damage in an older segment, is real
  corruption: StorageError naming the file, the offset and what to do.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from graft.raft.types import Entry, HardState
from graft.storage import Storage, StorageError
from graft.storage import records as rec

from .helpers import all_entries, make, segments

SEGMENT = 4096


@dataclass
class Save:
    hard_state: HardState | None
    entries: list[Entry]
    segment: str  # file name of the segment it went to
    end: int  # size of that segment after it


def apply(saves: list[Save]) -> tuple[HardState, list[Entry]]:
    """What a correct store holds after these saves: the model recovery must match."""
    hs, log = HardState(), []
    for s in saves:
        if s.hard_state is not None:
            hs = s.hard_state
        if s.entries:
            log = [e for e in log if e.index < s.entries[0].index] + s.entries
    return hs, log


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Save]]:
    """A log of two segments or more whose newest holds several batches of every kind."""
    path = tmp_path_factory.mktemp("pristine")
    plan: list[tuple[HardState | None, list[Entry]]] = [
        (HardState(1, "a", 0), make(1, 15, 1)),
        (None, make(15, 40, 1)),
        (HardState(2, "b", 10), make(30, 45, 2)),  # truncates 30..39
        (None, make(45, 60, 2)),
        (HardState(2, "b", 20), []),
        (None, make(60, 62, 2)),
        (HardState(3, None, 30), make(55, 58, 3)),  # truncates again
        (None, make(58, 59, 3)),
        (HardState(3, "c", 40), make(59, 63, 3)),
    ]
    saves = []
    with Storage.open(path, segment_bytes=SEGMENT) as store:
        for hs, entries in plan:
            store.save(hs, entries)
            newest = segments(path)[-1]
            saves.append(Save(hs, entries, newest.name, newest.stat().st_size))
    files = segments(path)
    assert len(files) >= 2
    assert sum(s.segment == files[-1].name for s in saves) >= 4
    return path, saves


def record_offsets(path: Path) -> list[tuple[int, int, bool]]:
    """(offset, size, in the final batch) of every record in a segment file."""
    found: list[tuple[int, int]] = []
    batches: list[int] = []
    end = rec.scan(
        path.read_bytes(),
        len(rec.MAGIC),
        lambda b: batches.append(len(found)) or found.extend((r.offset, r.size) for r in b),
    )
    assert end.problem is None
    last_start = batches[-1]
    return [(off, size, i >= last_start) for i, (off, size) in enumerate(found)]


def copy(pristine: Path, tmp_path: Path, name: str) -> Path:
    dest = tmp_path / name
    shutil.copytree(pristine, dest)
    (dest / "LOCK").unlink()
    return dest


def check_store(path: Path, expected: tuple[HardState, list[Entry]]) -> None:
    with Storage.open(path, segment_bytes=SEGMENT) as store:
        assert (store.hard_state, all_entries(store)) == expected
        # the store stays writable after recovery, and what it writes is read back
        nxt = store.last_index() + 1
        store.save(None, make(nxt, nxt + 3, 9))
    with Storage.open(path, segment_bytes=SEGMENT) as store:
        assert all_entries(store) == expected[1] + make(nxt, nxt + 3, 9)


def test_cutting_the_newest_segment_anywhere_keeps_exactly_the_whole_batches(
    pristine: tuple[Path, list[Save]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src, saves = pristine
    last = segments(src)[-1]
    cuts = {0, 1, 7, 8}
    for off, size, _ in record_offsets(last):
        cuts |= {off - 1, off, off + 1, off + rec.HEADER_SIZE, off + size // 2, off + size - 1}
    batch_ends = {s.end for s in saves if s.segment == last.name}

    for cut in sorted(c for c in cuts if 0 <= c < last.stat().st_size):
        path = copy(src, tmp_path, f"cut{cut}")
        with (path / "wal" / last.name).open("r+b") as f:
            f.truncate(cut)
        kept = [s for s in saves if s.segment != last.name or s.end <= cut]
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="graft.storage"):
            check_store(path, apply(kept))

        torn = cut not in batch_ends and cut != len(rec.MAGIC)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert bool(warnings) == torn, (cut, warnings)
        if torn:
            assert last.name in warnings[0] and "offset" in warnings[0]


def test_garbage_after_the_last_record_is_a_torn_tail(
    pristine: tuple[Path, list[Save]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src, saves = pristine
    last = segments(src)[-1]
    for name, junk in [("zeros", bytes(700)), ("noise", bytes(range(256)) * 3)]:
        path = copy(src, tmp_path, name)
        with (path / "wal" / last.name).open("ab") as f:
            f.write(junk)
        with caplog.at_level(logging.WARNING, logger="graft.storage"):
            check_store(path, apply(saves))
        assert f"{last.name} at offset {last.stat().st_size}" in caplog.text


def test_a_damaged_record_in_the_final_batch_is_a_torn_write(
    pristine: tuple[Path, list[Save]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src, saves = pristine
    last = segments(src)[-1]
    final = [(off, size) for off, size, in_final in record_offsets(last) if in_final]
    for i, (off, size) in enumerate(final):
        for where in (0, 5, rec.HEADER_SIZE, size - 1):  # crc, length, payload
            path = copy(src, tmp_path, f"final{i}-{where}")
            _flip(path / "wal" / last.name, off + where)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="graft.storage"):
                check_store(path, apply(saves[:-1]))
            assert f"{last.name} at offset {saves[-2].end}" in caplog.text


def test_a_damaged_record_followed_by_a_good_batch_is_corruption(
    pristine: tuple[Path, list[Save]], tmp_path: Path
) -> None:
    src, _ = pristine
    last = segments(src)[-1]
    earlier = [(off, size) for off, size, in_final in record_offsets(last) if not in_final]
    for i, (off, size) in enumerate(earlier):
        for where in (0, 5, rec.HEADER_SIZE, size - 1):
            path = copy(src, tmp_path, f"mid{i}-{where}")
            _flip(path / "wal" / last.name, off + where)
            with pytest.raises(StorageError) as info:
                Storage.open(path, segment_bytes=SEGMENT)
            message = str(info.value)
            assert f"{last.name} at offset {off}" in message, message
            assert "valid batch follows" in message and "restore" in message


def test_any_damage_to_an_older_segment_is_corruption(
    pristine: tuple[Path, list[Save]], tmp_path: Path
) -> None:
    src, _ = pristine
    first = segments(src)[0]
    for i, (off, size, _) in enumerate(record_offsets(first)):
        path = copy(src, tmp_path, f"old{i}")
        _flip(path / "wal" / first.name, off + size // 2)
        with pytest.raises(StorageError, match=f"{first.name} at offset {off}"):
            Storage.open(path, segment_bytes=SEGMENT)

        for cut in (off, off + size // 2):  # at a record boundary, and inside a record
            path = copy(src, tmp_path, f"oldcut{i}-{cut}")
            with (path / "wal" / first.name).open("r+b") as f:
                f.truncate(cut)
            with pytest.raises(StorageError, match=first.name):
                Storage.open(path, segment_bytes=SEGMENT)


def test_a_torn_new_segment_is_removed(
    pristine: tuple[Path, list[Save]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src, saves = pristine
    path = copy(src, tmp_path, "newseg")
    nxt = int(segments(src)[-1].stem) + 1
    (path / "wal" / f"{nxt:020d}.wal").write_bytes(rec.MAGIC[:5])  # crashed while creating
    with caplog.at_level(logging.WARNING, logger="graft.storage"):
        check_store(path, apply(saves))
    assert f"{nxt:020d}.wal at offset 0" in caplog.text


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))
