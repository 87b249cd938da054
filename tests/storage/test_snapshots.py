"""The snapshot store: streaming writes and reads, checksums, pruning, install_snapshot."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from graft.raft.types import HardState, Member, Membership, SnapshotMeta
from graft.storage import Storage, StorageError, StoredSnapshot

from .helpers import all_entries, make

MEMBERS = Membership(voters=(Member("turing", "127.0.0.1:8880"), Member("ritchie")))


def write_snapshot(store: Storage, index: int, term: int, chunks: list[bytes]) -> StoredSnapshot:
    writer = store.create_snapshot(SnapshotMeta(index, term, MEMBERS), app_meta=b"\x00dedup")
    for chunk in chunks:
        writer.write(chunk)
    return writer.commit()


def test_snapshot_round_trip_in_chunks(tmp_path: Path) -> None:
    chunks = [bytes([i]) * 100_000 for i in range(30)]  # 3 MB written 100 kB at a time
    state = b"".join(chunks)
    with Storage.open(tmp_path) as store:
        snap = write_snapshot(store, 10, 2, chunks)
        assert snap.size == len(state)
        assert snap.checksum == "sha256:" + hashlib.sha256(state).hexdigest()

    with Storage.open(tmp_path) as store:
        stored = store.snapshot()
        assert stored == snap
        assert stored.meta.membership == MEMBERS and stored.app_meta == b"\x00dedup"
        with store.open_snapshot(stored) as stream:
            got = b"".join(iter(lambda: stream.read(65536), b""))
        assert got == state
        assert store.term(10) == 2  # the snapshot answers for its own index


def test_newest_snapshots_are_kept_and_older_pruned(tmp_path: Path) -> None:
    with Storage.open(tmp_path, keep_snapshots=2) as store:
        for index in (5, 10, 15, 20):
            write_snapshot(store, index, 1, [b"s%d" % index])
        names = sorted(p.name for p in (tmp_path / "snap").iterdir())
        assert names == [f"{15:020d}-{1:020d}.snap", f"{20:020d}-{1:020d}.snap"]
        assert store.snapshot() is not None and store.snapshot().meta.index == 20
        assert store.usage()["snapshot_bytes"] == sum(
            p.stat().st_size for p in (tmp_path / "snap").iterdir()
        )


def test_an_older_snapshot_than_the_newest_is_refused(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as store:
        write_snapshot(store, 10, 1, [b"x"])
        with pytest.raises(ValueError, match="older"):
            store.create_snapshot(SnapshotMeta(9, 1))


def test_abort_and_crash_leftovers_leave_no_snapshot(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as store:
        writer = store.create_snapshot(SnapshotMeta(5, 1))
        writer.write(b"partial")
        writer.abort()
        with store.create_snapshot(SnapshotMeta(6, 1)) as writer:
            writer.write(b"partial")  # leaving the block without commit aborts
        assert store.snapshot() is None
        crashed = store.create_snapshot(SnapshotMeta(7, 1))
        crashed.write(b"never committed")  # the process "dies" here: no commit, no abort
        assert list((tmp_path / "snap").glob("*.tmp"))

    with Storage.open(tmp_path) as store:
        assert store.snapshot() is None
        assert list((tmp_path / "snap").iterdir()) == []


def test_received_snapshot_with_wrong_checksum_is_refused(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as store:
        writer = store.create_snapshot(SnapshotMeta(5, 1))
        writer.write(b"state damaged in transit")
        with pytest.raises(StorageError, match="checksum"):
            writer.commit(expected_checksum="sha256:" + "0" * 64)
        assert store.snapshot() is None
        assert list((tmp_path / "snap").iterdir()) == []

        writer = store.create_snapshot(SnapshotMeta(5, 1))
        writer.write(b"good")
        good = "sha256:" + hashlib.sha256(b"good").hexdigest()
        assert writer.commit(expected_checksum=good).checksum == good


def test_a_corrupt_newest_snapshot_falls_back_to_the_older_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Storage.open(tmp_path) as store:
        write_snapshot(store, 5, 1, [b"old state"])
        newest = write_snapshot(store, 9, 1, [b"new state"])
    path = tmp_path / "snap" / f"{9:020d}-{1:020d}.snap"
    data = bytearray(path.read_bytes())
    data[2] ^= 0xFF  # inside the state bytes: only the full checksum notices
    path.write_bytes(bytes(data))

    with Storage.open(tmp_path) as store:
        snap = store.snapshot()
        assert snap is not None and snap.meta.index == 5
    assert newest.checksum in caplog.text or "does not match" in caplog.text
    assert (tmp_path / "snap" / (path.name + ".corrupt")).exists()


def test_damage_after_open_is_caught_when_streaming(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as store:
        snap = write_snapshot(store, 5, 1, [b"abcdef" * 1000])
        path = tmp_path / "snap" / f"{5:020d}-{1:020d}.snap"
        data = bytearray(path.read_bytes())
        data[100] ^= 1
        path.write_bytes(bytes(data))
        with store.open_snapshot(snap) as stream, pytest.raises(StorageError, match="damaged"):
            stream.read()


def test_install_snapshot_discards_a_conflicting_log(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as store:
        store.save(HardState(2, None, 3), make(1, 21, 2))
        snap = write_snapshot(store, 30, 5, [b"leader state"])
        store.install_snapshot(snap)
        assert (store.first_index(), store.last_index()) == (31, 30)
        assert store.term(30) == 5
        store.save(HardState(5, None, 30), make(31, 35, 5))

    with Storage.open(tmp_path) as store:
        assert (store.first_index(), store.last_index()) == (31, 34)
        assert all_entries(store) == make(31, 35, 5)


def test_install_snapshot_keeps_entries_after_a_matching_one(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as store:
        store.save(None, make(1, 21, 2))
        store.install_snapshot(write_snapshot(store, 10, 2, [b"x"]))
        assert all_entries(store) == make(11, 21, 2)  # §7: retain entries following it


def test_an_install_interrupted_before_the_log_reset_is_finished_at_open(
    tmp_path: Path,
) -> None:
    with Storage.open(tmp_path) as store:
        store.save(None, make(1, 21, 2))
        write_snapshot(store, 40, 6, [b"from the leader"])  # crash before install_snapshot

    with Storage.open(tmp_path) as store:
        assert (store.first_index(), store.last_index()) == (41, 40)
        assert store.term(40) == 6
    with Storage.open(tmp_path) as store:  # and the reset itself was made durable
        assert (store.first_index(), store.last_index()) == (41, 40)


def test_a_log_compacted_past_every_valid_snapshot_is_refused(tmp_path: Path) -> None:
    with Storage.open(tmp_path) as store:
        store.save(None, make(1, 21, 1))
        write_snapshot(store, 15, 1, [b"x"])
        store.compact(15)
    (tmp_path / "snap" / f"{15:020d}-{1:020d}.snap").unlink()

    with pytest.raises(StorageError, match="compacted through 15"):
        Storage.open(tmp_path)


def test_open_snapshot_refuses_a_pruned_snapshot(tmp_path: Path) -> None:
    with Storage.open(tmp_path, keep_snapshots=1) as store:
        first = write_snapshot(store, 1, 1, [b"a"])
        write_snapshot(store, 2, 1, [b"b"])
        with pytest.raises(ValueError, match="not stored"):
            store.open_snapshot(first)
