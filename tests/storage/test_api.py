"""Storage behaviour through its public interface: log, hard state, compaction, lock."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from graft.raft.types import Entry, EntryKind, HardState, SnapshotMeta
from graft.storage import DataDirLocked, LogCompacted, LogUnavailable, Storage
from graft.storage import records as rec

from .helpers import all_entries, make, payload, segments

ROOT = Path(__file__).resolve().parents[2]


def test_empty_store_starts_at_index_one(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as store:
        assert (store.first_index(), store.last_index()) == (1, 0)
        assert store.term(0) == 0
        assert store.hard_state == HardState()
        assert store.snapshot() is None
        assert store.entries(1, 1) == []


def test_saved_entries_and_hard_state_survive_reopen(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as store:
        store.save(HardState(3, "ritchie", 0), make(1, 11, 3))
        store.save(HardState(3, "ritchie", 7), [])

    with Storage.open(tmp_path) as store:
        assert store.hard_state == HardState(3, "ritchie", 7)
        assert all_entries(store) == make(1, 11, 3)
        assert [store.term(i) for i in range(0, 11)] == [0] + [3] * 10


def test_vote_none_and_empty_vote_are_distinct(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as store:
        store.save(HardState(1, "", 0), [])
    with Storage.open(tmp_path) as store:
        assert store.hard_state.vote == ""
        store.save(HardState(2, None, 0), [])
    with Storage.open(tmp_path) as store:
        assert store.hard_state.vote is None


def test_overlapping_save_truncates_the_suffix_durably(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as store:
        store.save(None, make(1, 21, 1))
        store.save(None, make(15, 18, 2))  # §5.3: a conflicting suffix is replaced
        assert store.last_index() == 17
        assert all_entries(store) == make(1, 15, 1) + make(15, 18, 2)

    with Storage.open(tmp_path) as store:
        assert store.last_index() == 17
        assert all_entries(store) == make(1, 15, 1) + make(15, 18, 2)


def test_truncation_reaching_into_an_older_segment(tmp_path: Path) -> None:
    with Storage.open(tmp_path, segment_bytes=4096) as store:
        for lo in range(1, 301, 10):
            store.save(None, make(lo, lo + 10, 1))
        assert len(segments(tmp_path)) > 3
        store.save(None, make(5, 8, 4))
        assert all_entries(store) == make(1, 5, 1) + make(5, 8, 4)

    with Storage.open(tmp_path, segment_bytes=4096) as store:
        assert all_entries(store) == make(1, 5, 1) + make(5, 8, 4)
        store.save(None, make(8, 10, 4))
        assert store.last_index() == 9


def test_bad_appends_are_refused(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as store:
        store.save(None, make(1, 5, 1))
        with pytest.raises(ValueError, match="gap"):
            store.save(None, make(7, 8, 1))
        with pytest.raises(ValueError, match="contiguous"):
            store.save(None, [Entry(5, 1, EntryKind.NOOP), Entry(7, 1, EntryKind.NOOP)])
        assert store.last_index() == 4


def test_out_of_range_reads_raise_typed_errors(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as store:
        store.save(None, make(1, 11, 1))
        with pytest.raises(LogUnavailable):
            store.term(11)
        with pytest.raises(LogUnavailable):
            store.entries(5, 12)
        _snapshot(store, 6, 1)
        store.compact(6)
        with pytest.raises(LogCompacted):
            store.term(5)
        with pytest.raises(LogCompacted):
            store.entries(6, 8)
        assert store.term(6) == 1  # the compaction point still answers


def test_max_bytes_limits_but_returns_at_least_one(tmp_path: Path) -> None:
    with Storage.open(tmp_path, cache_entries=0) as store:
        entries = [Entry(i, 1, EntryKind.COMMAND, b"x" * 100) for i in range(1, 11)]
        store.save(None, entries)
        assert store.entries(1, 11, max_bytes=1) == entries[:1]
        assert store.entries(1, 11, max_bytes=350) == entries[:3]
        assert store.entries(1, 11, max_bytes=10_000) == entries


def test_old_entries_are_read_from_disk_with_a_bounded_cache(tmp_path: Path) -> None:
    with Storage.open(tmp_path, cache_entries=8, segment_bytes=8192) as store:
        for lo in range(1, 1001, 50):
            store.save(None, make(lo, lo + 50, 2))
        cache = store._log._cache
        assert len(cache) <= 8 + 8 // 4 + 50  # one batch above the bound at most
        assert all_entries(store) == make(1, 1001, 2)
        assert store.entries(400, 403) == make(400, 403, 2)


def test_compact_needs_a_snapshot_and_deletes_whole_segments(tmp_path: Path) -> None:
    with Storage.open(tmp_path, segment_bytes=4096) as store:
        for lo in range(1, 501, 20):
            store.save(HardState(2, "a", lo), make(lo, lo + 20, 2))
        before = len(segments(tmp_path))
        with pytest.raises(ValueError, match="no snapshot covers"):
            store.compact(400)

        _snapshot(store, 400, 2)
        store.compact(400)
        after = len(segments(tmp_path))
        assert after < before
        assert store.first_index() == 401
        assert store.usage()["segments"] == after

    with Storage.open(tmp_path, segment_bytes=4096) as store:
        assert store.first_index() == 401
        assert all_entries(store) == make(401, 501, 2)
        assert store.hard_state == HardState(2, "a", 481)


def test_keep_log_compaction_below_the_snapshot_survives_reopen(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as store:
        store.save(None, make(1, 101, 1))
        _snapshot(store, 90, 1)
        store.compact(50)  # DESIGN §2 snapshot.keep_log: keep entries for slow followers

    with Storage.open(tmp_path) as store:
        assert (store.first_index(), store.last_index()) == (51, 100)
        assert store.term(50) == 1 and store.term(90) == 1


def test_many_compactions_keep_segment_count_small(tmp_path: Path) -> None:
    with Storage.open(tmp_path, segment_bytes=4096) as store:
        for lo in range(1, 3001, 30):
            store.save(None, make(lo, lo + 30, 1))
            if lo > 200 and lo % 300 == 1:
                _snapshot(store, lo - 100, 1)
                store.compact(lo - 100)
        # no segment wholly below the compaction point is left behind
        base = store.first_index() - 1
        files = segments(tmp_path)
        assert store.usage()["segments"] == len(files)
        assert all(max(entry_indices(f), default=0) > base for f in files[:-1])
        assert min(entry_indices(files[0])) <= base + 1

    with Storage.open(tmp_path, segment_bytes=4096) as store:
        assert store.last_index() == 3000
        assert all_entries(store) == make(store.first_index(), 3001, 1)


def test_a_lost_middle_segment_is_reported(tmp_path: Path) -> None:
    with Storage.open(tmp_path, segment_bytes=4096) as store:
        for lo in range(1, 301, 10):
            store.save(None, make(lo, lo + 10, 1))
    files = segments(tmp_path)
    files[1].unlink()

    with pytest.raises(Exception, match=r"log entries \d+\.\.\d+ are missing") as info:
        Storage.open(tmp_path, segment_bytes=4096)
    assert "restore" in str(info.value)


def test_second_open_in_another_process_is_refused_with_the_pid(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from graft.storage import Storage, DataDirLocked\n"
        "try:\n"
        "    Storage.open(Path(sys.argv[1]))\n"
        "except DataDirLocked as exc:\n"
        "    print(exc.pid); print(exc)\n"
    )
    with Storage.open(tmp_path):
        out = subprocess.run(
            [sys.executable, "-S", "-c", code, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=True,
        ).stdout.splitlines()
    assert out[0] == str(os.getpid())
    assert str(tmp_path) in out[1] and "locked by process" in out[1]

    with Storage.open(tmp_path):  # released by close
        pass


def test_second_open_in_this_process_is_refused(tmp_path: Path) -> None:
    with Storage.open(tmp_path), pytest.raises(DataDirLocked):
        Storage.open(tmp_path)


def test_a_failed_write_makes_the_store_refuse_further_writes(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as store:
        store.save(None, make(1, 3, 1))
        assert store._log._active_fd is not None
        os.close(store._log._active_fd)  # the next write fails with EBADF
        with pytest.raises(Exception, match="failed"):
            store.save(None, make(3, 4, 1))
        with pytest.raises(Exception, match="refused a write after an earlier failure"):
            store.save(None, make(3, 4, 1))
        store._log._active_fd = None
    with Storage.open(tmp_path) as store:
        assert store.last_index() == 2


def test_readers_never_see_half_a_save(tmp_path: Path) -> None:
    """A writer thread saves while a reader thread checks that every read is consistent."""
    problems: list[str] = []
    done = threading.Event()

    with Storage.open(tmp_path, cache_entries=16, segment_bytes=8192) as store:

        def reader() -> None:
            while not done.is_set():
                first, last = store.first_index(), store.last_index()
                got = store.entries(max(first, last - 40), last + 1)
                for e in got:
                    if e.data != payload(e.index, e.term):
                        problems.append(f"entry {e.index} has wrong data")
                if got and got[-1].index < last:
                    problems.append(f"read ended at {got[-1].index}, last was {last}")

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            term = 1
            for lo in range(1, 2001, 25):
                start = lo if lo % 200 else max(1, lo - 30)  # now and then a truncation
                term += 0 if lo % 200 else 1
                store.save(HardState(term, None, 0), make(start, lo + 25, term))
        finally:
            done.set()
            thread.join()
    assert problems == []


def entry_indices(path: Path) -> list[int]:
    found: list[int] = []
    buf = path.read_bytes()
    rec.scan(buf, len(rec.MAGIC), lambda batch: found.extend(r.index for r in batch if r.index))
    return found


def _snapshot(store: Storage, index: int, term: int) -> None:
    writer = store.create_snapshot(SnapshotMeta(index, term))
    writer.write(b"state at %d" % index)
    writer.commit()
