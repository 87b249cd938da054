"""The segmented write-ahead log: entries, hard state and compaction marks in one stream.

Append-only: a truncation is not done in place but written as entries whose index is at or
below the last one, and replay gives them the meaning "drop the suffix from here on" (the
way etcd's WAL does). Nothing already written is ever overwritten, so the only place a crash
can leave damage is the tail of the newest segment, and one fdatasync makes a whole save
durable, truncation included.

In memory the log keeps, per live entry, its term and where its record lies (about 24 bytes
an entry, in `array`s), plus a bounded cache of recent entries; older entries are read back
from their segment.

Not thread-safe by itself: `Storage` serialises writers and guards readers (see store.py).
Writers call `plan_*`, then `write` (the I/O, no reader lock needed), then `apply_*` (the
in-memory update, under the reader lock).
"""

from __future__ import annotations

import logging
import os
import re
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from graft.raft.types import Entry, HardState
from graft.storage import records as rec
from graft.storage.errors import LogCompacted, LogUnavailable, StorageError
from graft.storage.fileio import cut_file, fsync_dir, write_all

log = logging.getLogger("graft.storage")

_SEGMENT_NAME = re.compile(r"^(\d{20})\.wal$")
READ_CHUNK = 1 << 20  # bytes read from a segment per pread when serving old entries
RESTORE_HINT = (
    "the log is damaged; restore this node's data directory from a backup, or remove it so "
    "that the node rejoins empty and receives a snapshot from the leader"
)


_Control = HardState | tuple[int, int]  # what a control record carries


@dataclass
class _Segment:
    seq: int
    path: Path
    size: int
    # invariant: the highest entry index any record in the file carries, live or not. A
    # segment may be deleted only when this is <= the compaction point (see _deletable).
    max_index: int = 0


@dataclass
class Plan:
    """One batch ready to be written: the bytes, and what they change once durable."""

    data: bytes
    seq: int  # the segment the batch goes to
    new_segment: bool
    hard_state: HardState | None = None
    entries: Sequence[Entry] = ()
    offsets: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    base: tuple[int, int] | None = None  # (index, term) for a compaction or a reset
    reset: bool = False


class SegmentedLog:
    def __init__(self, directory: Path, segment_bytes: int, cache_entries: int) -> None:
        self.dir = directory
        self.segment_bytes = segment_bytes
        self.cache_entries = cache_entries
        self.hard_state = HardState()
        # §7: the last index and term a snapshot covers; term(base_index) answers from here.
        self.base_index = 0
        self.base_term = 0
        # invariant after recovery: first == base_index + 1; entry i is at [i - first].
        self.first = 1
        self._terms = array("Q")
        self._segs = array("I")
        self._offs = array("Q")
        self._lens = array("I")
        self._segments: dict[int, _Segment] = {}  # by seq, ascending
        self._active_fd: int | None = None
        self._read_fds: dict[int, int] = {}
        # invariant: the cache is a suffix of the log: cache_first + len(cache) == last + 1.
        self._cache: list[Entry] = []
        self._cache_first = 1

    # ---------------------------------------------------------------- reading

    @property
    def last_index(self) -> int:
        return self.first + len(self._terms) - 1

    def term(self, index: int) -> int:
        if index == self.base_index:
            return self.base_term
        if index < self.base_index:
            raise LogCompacted(index, self.first)
        if index > self.last_index:
            raise LogUnavailable(index, self.last_index)
        return self._terms[index - self.first]

    def entries(self, lo: int, hi: int, max_bytes: int | None) -> list[Entry]:
        """Entries [lo, hi); with max_bytes, stop before the data would exceed it (but
        always return at least one entry when lo < hi, so a caller always progresses)."""
        if lo > hi:
            raise ValueError(f"entries({lo}, {hi}): lo is above hi")
        if lo < self.first:
            raise LogCompacted(lo, self.first)
        if hi > self.last_index + 1:
            raise LogUnavailable(hi - 1, self.last_index)

        out: list[Entry] = []
        used = 0
        index = lo
        while index < hi:
            batch = (
                self._cache[index - self._cache_first : hi - self._cache_first]
                if index >= self._cache_first
                else self._read_run(index, min(hi, self._cache_first))
            )
            for e in batch:
                used += len(e.data)
                if max_bytes is not None and out and used > max_bytes:
                    return out
                out.append(e)
            index += len(batch)
        return out

    def _read_run(self, lo: int, hi: int) -> list[Entry]:
        """Read entries from lo on, within one segment and about READ_CHUNK bytes, by one
        pread; at least one entry."""
        k = lo - self.first
        seq, start = self._segs[k], self._offs[k]
        end = start + self._lens[k]
        n = 1
        while lo + n < hi and self._segs[k + n] == seq:
            next_end = self._offs[k + n] + self._lens[k + n]
            if next_end - start > READ_CHUNK:
                break
            end, n = next_end, n + 1

        path = self._path(seq)
        try:
            buf = os.pread(self._read_fd(seq), end - start, start)
        except OSError as exc:
            raise StorageError(f"cannot read {path} at offset {start}: {exc.strerror}") from exc
        out = []
        for m in range(n):
            offset = self._offs[k + m]
            try:
                e = rec.decode_entry(buf, offset - start)
            except (ValueError, IndexError) as exc:
                raise StorageError(
                    f"entry {lo + m} in {path} at offset {offset} is unreadable ({exc}); "
                    + RESTORE_HINT
                ) from exc
            if e.index != lo + m or e.term != self._terms[k + m]:
                raise StorageError(
                    f"{path} at offset {offset} holds entry {e.index} term {e.term}, not entry "
                    f"{lo + m} term {self._terms[k + m]}; " + RESTORE_HINT
                )
            out.append(e)
        return out

    def _read_fd(self, seq: int) -> int:
        fd = self._read_fds.get(seq)
        if fd is None:
            path = self._path(seq)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise StorageError(f"cannot open {path}: {exc.strerror}") from exc
            self._read_fds[seq] = fd
        return fd

    def _path(self, seq: int) -> Path:
        return self.dir / f"{seq:020d}.wal"

    # ---------------------------------------------------------------- writing

    def plan_save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> Plan | None:
        """Validate a save and encode it as one batch; None when there is nothing to do."""
        if entries:
            self._check_append(entries)
        elif hard_state is None:
            return None

        size = sum(rec.HEADER_SIZE + rec.ENTRY_FIXED + len(e.data) for e in entries) + 64
        seq, new_segment, offset = self._target(size)
        controls = self._preamble(hard_state) if new_segment else []
        if hard_state is not None and not new_segment:
            controls.append((rec.RT_HARD_STATE, hard_state))
        parts, offset = self._encode_controls(controls, offset, bool(entries))
        if entries:
            first = 0 if controls else rec.BATCH_START
            e_parts, offsets, sizes = rec.encode_entries(entries, first, rec.BATCH_END, offset)
            parts.extend(e_parts)
        else:
            offsets, sizes = [], []
        return Plan(b"".join(parts), seq, new_segment, hard_state, entries, offsets, sizes)

    def plan_base(self, index: int, term: int, *, reset: bool) -> Plan:
        """A compaction mark (entries <= index are covered by a snapshot) or a reset (the
        log is empty and continues after index)."""
        # A compaction seals the active segment, so that a later compaction can delete it:
        # otherwise a segment (64 MiB by default) would keep growing past any number of
        # snapshots and the log on disk would not shrink until it filled.
        seq, new_segment, offset = self._target(64, seal=not reset)
        controls = self._preamble(None) if new_segment else []
        controls.append((rec.RT_RESET if reset else rec.RT_COMPACT, (index, term)))
        parts, _ = self._encode_controls(controls, offset, False)
        return Plan(b"".join(parts), seq, new_segment, base=(index, term), reset=reset)

    def _check_append(self, entries: Sequence[Entry]) -> None:
        first = entries[0].index
        for i, e in enumerate(entries):
            if e.index != first + i:
                raise ValueError(
                    f"entries must be contiguous: entry {i} has index {e.index}, "
                    f"expected {first + i}"
                )
        if first > self.last_index + 1:
            raise ValueError(
                f"entries start at {first}, after a gap: last index is {self.last_index}"
            )
        if first <= self.base_index:
            raise ValueError(
                f"entries start at {first}, inside the compacted prefix (<= {self.base_index})"
            )

    def _target(self, size: int, *, seal: bool = False) -> tuple[int, bool, int]:
        """(segment seq, whether it is new, offset the batch will land at). With `seal`,
        a segment that holds entries is closed even if it has room."""
        if not self._segments:
            return 1, True, len(rec.MAGIC)
        seg = self._segments[next(reversed(self._segments))]
        full = seg.size + size > self.segment_bytes or (seal and seg.max_index > 0)
        if self._active_fd is None or (full and seg.size > len(rec.MAGIC)):
            return seg.seq + 1, True, len(rec.MAGIC)
        return seg.seq, False, seg.size

    def _preamble(self, hard_state: HardState | None) -> list[tuple[int, _Control]]:
        # A new segment restates the compaction point and hard state first, so that older
        # segments can be deleted without losing either; and it records the size its
        # predecessor was sealed at, so that recovery notices one cut at a record boundary.
        hs = hard_state if hard_state is not None else self.hard_state
        prev = self._segments[next(reversed(self._segments))] if self._segments else None
        sealed = (prev.seq, prev.size) if prev is not None else (0, 0)
        return [
            (rec.RT_SEGMENT, sealed),
            (rec.RT_COMPACT, (self.base_index, self.base_term)),
            (rec.RT_HARD_STATE, hs),
        ]

    @staticmethod
    def _encode_controls(
        controls: list[tuple[int, _Control]], offset: int, entries_follow: bool
    ) -> tuple[list[bytes], int]:
        parts: list[bytes] = []
        for i, (rtype, value) in enumerate(controls):
            flags = rec.BATCH_START if i == 0 else 0
            if i == len(controls) - 1 and not entries_follow:
                flags |= rec.BATCH_END
            if isinstance(value, HardState):
                part = rec.encode_hard_state(value, flags)
            else:
                index, term = value
                part = rec.encode_index_term(rtype, index, term, flags)
            parts.append(part)
            offset += len(part)
        return parts, offset

    def write(self, plan: Plan) -> None:
        """Make the batch durable: one os.write and one fdatasync (plus a directory fsync
        when the batch opens a new segment, so that the file itself survives a crash)."""
        if plan.new_segment:
            self._open_segment(plan)
            return
        assert self._active_fd is not None
        seg = self._segments[plan.seq]
        write_all(self._active_fd, plan.data, seg.path)
        _fdatasync(self._active_fd, seg.path)
        seg.size += len(plan.data)
        self._note_max(seg, plan)

    def _open_segment(self, plan: Plan) -> None:
        path = self._path(plan.seq)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot create {path}: {exc.strerror}") from exc
        write_all(fd, rec.MAGIC + plan.data, path)
        _fdatasync(fd, path)
        fsync_dir(self.dir)

        if self._active_fd is not None:
            os.close(self._active_fd)
        self._active_fd = fd
        seg = _Segment(plan.seq, path, len(rec.MAGIC) + len(plan.data))
        self._segments[plan.seq] = seg
        self._note_max(seg, plan)
        log.debug("opened segment %s", path)

    @staticmethod
    def _note_max(seg: _Segment, plan: Plan) -> None:
        if plan.entries:
            seg.max_index = max(seg.max_index, plan.entries[-1].index)

    def apply_save(self, plan: Plan) -> None:
        """Publish a durable save to readers: hard state, index, cache."""
        if plan.hard_state is not None:
            self.hard_state = plan.hard_state
        if not plan.entries:
            return
        first = plan.entries[0].index
        self._truncate_from(first)
        n = len(plan.entries)
        self._terms.extend(e.term for e in plan.entries)
        self._segs.extend([plan.seq] * n)
        self._offs.extend(plan.offsets)
        self._lens.extend(plan.sizes)
        self._cache_append(plan.entries)

    def apply_base(self, plan: Plan) -> list[Path]:
        """Publish a compaction or reset; return the segment files that may now be deleted
        (the caller unlinks them, oldest first, and fsyncs the directory)."""
        assert plan.base is not None
        index, term = plan.base
        if plan.reset:
            self._drop_all(index, term)
            for seg in self._segments.values():
                seg.max_index = 0  # nothing written before a reset is live any more
        else:
            self._drop_through(index, term)
        return self._detach_deletable()

    def _truncate_from(self, index: int) -> None:
        if index <= self.last_index:
            k = index - self.first
            del self._terms[k:], self._segs[k:], self._offs[k:], self._lens[k:]
        if index < self._cache_first:
            self._cache, self._cache_first = [], index
        else:
            del self._cache[index - self._cache_first :]

    def _drop_through(self, index: int, term: int) -> None:
        """Forget entries <= index (§7 log compaction); entries after it stay."""
        if index > self.base_index:
            self.base_index, self.base_term = index, term
        k = min(max(index - self.first + 1, 0), len(self._terms))
        del self._terms[:k], self._segs[:k], self._offs[:k], self._lens[:k]
        self.first += k
        if not self._terms:
            self.first = max(self.first, self.base_index + 1)
        drop = min(max(index - self._cache_first + 1, 0), len(self._cache))
        del self._cache[:drop]
        self._cache_first = self.last_index + 1 - len(self._cache)

    def _drop_all(self, index: int, term: int) -> None:
        self.base_index, self.base_term = index, term
        self.first = index + 1
        for arr in (self._terms, self._segs, self._offs, self._lens):
            del arr[:]
        self._cache, self._cache_first = [], index + 1

    def _cache_append(self, entries: Sequence[Entry]) -> None:
        self._cache.extend(entries)
        excess = len(self._cache) - self.cache_entries
        # trim in steps of a quarter so that the list copy is amortised over many appends
        if excess > self.cache_entries // 4:
            del self._cache[:excess]
            self._cache_first += excess

    def _detach_deletable(self) -> list[Path]:
        """Segments wholly below the compaction point, oldest first, never the active one."""
        gone: list[Path] = []
        active = next(reversed(self._segments))
        for seq in list(self._segments):
            seg = self._segments[seq]
            if seq == active or seg.max_index > self.base_index:
                break
            del self._segments[seq]
            fd = self._read_fds.pop(seq, None)
            if fd is not None:
                os.close(fd)
            gone.append(seg.path)
        return gone

    # ---------------------------------------------------------------- sizes and closing

    def usage(self) -> tuple[int, int]:
        return sum(s.size for s in self._segments.values()), len(self._segments)

    def close(self) -> None:
        for fd in self._read_fds.values():
            os.close(fd)
        self._read_fds.clear()
        if self._active_fd is not None:
            os.close(self._active_fd)
            self._active_fd = None

    # ---------------------------------------------------------------- recovery

    def recover(self) -> None:
        """Replay every segment in order; cut a torn tail off the newest one."""
        seqs = self._list_segments()
        for i, seq in enumerate(seqs):
            last = i == len(seqs) - 1
            self._replay_segment(seq, last)
        self._check_contiguous()
        if self._segments:
            seg = self._segments[next(reversed(self._segments))]
            try:
                self._active_fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            except OSError as exc:
                raise StorageError(f"cannot open {seg.path}: {exc.strerror}") from exc
        self._cache_first = self.last_index + 1
        log.info(
            "log recovered: entries %d..%d in %d segments, term %d, commit %d",
            self.first,
            self.last_index,
            len(self._segments),
            self.hard_state.term,
            self.hard_state.commit,
        )

    def _list_segments(self) -> list[int]:
        seqs = []
        for path in self.dir.iterdir():
            match = _SEGMENT_NAME.match(path.name)
            if match:
                seqs.append(int(match.group(1)))
        return sorted(seqs)

    def _replay_segment(self, seq: int, last: bool) -> None:
        path = self._path(seq)
        try:
            buf = path.read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror}") from exc
        seg = _Segment(seq, path, len(buf))

        if buf[: len(rec.MAGIC)] != rec.MAGIC:
            end = rec.ScanEnd(0, "bad segment header", 0, rec.find_batch_start(buf, 0))
        else:
            end = rec.scan(buf, len(rec.MAGIC), lambda b: self._replay_batch(seg, buf, b))
        if end.problem is None:
            self._segments[seq] = seg
            return

        where = f"{path} at offset {end.problem_offset}"
        if not last or end.later_batch is not None:
            later = (
                ""
                if end.later_batch is None
                else f", yet a valid batch follows at offset {end.later_batch}"
            )
            raise StorageError(
                f"corrupt log record in {where}: {end.problem}{later}; " + RESTORE_HINT
            )
        self._cut_tail(seg, end)

    def _cut_tail(self, seg: _Segment, end: rec.ScanEnd) -> None:
        # An interrupted write: the batch after good_end was never acknowledged (its save()
        # had not returned), so dropping it loses nothing that was promised.
        log.warning(
            "cut the torn tail of %s at offset %d (%s at offset %d, %d bytes dropped): "
            "an interrupted write",
            seg.path,
            end.good_end,
            end.problem,
            end.problem_offset,
            seg.size - end.good_end,
        )
        if end.good_end <= len(rec.MAGIC):
            seg.path.unlink()
            fsync_dir(self.dir)
            return
        cut_file(seg.path, end.good_end)
        seg.size = end.good_end
        self._segments[seg.seq] = seg

    def _replay_batch(self, seg: _Segment, buf: bytes, batch: list[rec.Record]) -> None:
        for r in batch:
            if r.rtype == rec.RT_ENTRY:
                self._replay_entry(seg.seq, r)
                seg.max_index = max(seg.max_index, r.index)
                continue
            payload = memoryview(buf)[r.offset + rec.HEADER_SIZE : r.offset + r.size]
            if r.rtype == rec.RT_HARD_STATE:
                self.hard_state = rec.decode_hard_state(payload)
            elif r.rtype == rec.RT_COMPACT:
                self._drop_through(*rec.decode_index_term(payload))
            elif r.rtype == rec.RT_RESET:
                self._drop_all(*rec.decode_index_term(payload))
            else:
                self._check_sealed(seg, *rec.decode_index_term(payload))

    def _check_sealed(self, seg: _Segment, prev_seq: int, prev_size: int) -> None:
        prev = self._segments.get(prev_seq)
        if prev is not None and prev.size != prev_size:
            raise StorageError(
                f"segment {prev.path} is {prev.size} bytes but was sealed at {prev_size} "
                f"(recorded at offset {len(rec.MAGIC)} of {seg.path}); " + RESTORE_HINT
            )

    def _replay_entry(self, seq: int, r: rec.Record) -> None:
        if not self.first <= r.index <= self.last_index + 1:
            # Entries below r.index were in segments deleted after a compaction (or a
            # segment is missing: _check_contiguous tells which, once replay is done).
            self._restart_at(r.index)
        elif r.index <= self.last_index:
            self._truncate_from(r.index)  # a truncation written as an overlapping save
        self._terms.append(r.term)
        self._segs.append(seq)
        self._offs.append(r.offset)
        self._lens.append(r.size)

    def _restart_at(self, index: int) -> None:
        for arr in (self._terms, self._segs, self._offs, self._lens):
            del arr[:]
        self.first = index

    def _check_contiguous(self) -> None:
        """Every live entry must be present: the log must begin right after the base."""
        if self.first <= self.base_index:
            self._drop_through(self.base_index, self.base_term)
        if self._terms and self.first > self.base_index + 1:
            raise StorageError(
                f"log entries {self.base_index + 1}..{self.first - 1} are missing from "
                f"{self.dir} (a segment file was lost or removed); " + RESTORE_HINT
            )
        if not self._terms:
            self.first = self.base_index + 1
        self._cache, self._cache_first = [], self.last_index + 1


def _fdatasync(fd: int, path: Path) -> None:
    try:
        os.fdatasync(fd)
    except OSError as exc:
        raise StorageError(f"fdatasync of {path} failed: {exc.strerror}") from exc
