"""The byte formats of the write-ahead log, and the scanner that finds where a segment ends.

Pure functions on bytes: no files here, so every recovery rule can be tested byte by byte.

A segment file is the 8-byte magic followed by records. A record is

    crc32 u32 | length u32 | type u8 | payload (length bytes)

little-endian, where the crc covers `length`, `type` and the payload. The low four bits of
`type` say what the payload is; the two high bits group records into batches: BATCH_START on
the first record a `save()` wrote, BATCH_END on its last (one record may carry both). A batch
is the unit of atomicity: recovery replays whole batches only, so after a crash a save is
either entirely present or entirely absent.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from graft.raft.types import Entry, EntryKind, HardState

MAGIC = b"GRAFTWL1"

RT_ENTRY = 1  # payload: index u64 | term u64 | kind u8 | data
RT_HARD_STATE = 2  # payload: term u64 | commit u64 | has_vote u8 | vote utf-8
RT_COMPACT = 3  # payload: index u64 | term u64: entries <= index are covered by a snapshot
RT_RESET = 4  # payload: index u64 | term u64: the log is empty and continues after index
RT_SEGMENT = 5  # payload: seq u64 | size u64 of the segment before this one, when it was sealed
KNOWN_TYPES = frozenset((RT_ENTRY, RT_HARD_STATE, RT_COMPACT, RT_RESET, RT_SEGMENT))

BATCH_START = 0x80
BATCH_END = 0x40
TYPE_MASK = 0x0F

HEADER = struct.Struct("<IIB")  # crc, length, type
HEADER_SIZE = HEADER.size  # 9
_CRC = struct.Struct("<I")
_ENTRY_HEAD = struct.Struct("<IBQQB")  # length, type, index, term, kind (after the crc)
ENTRY_FIXED = 17  # index, term, kind: the entry payload before its data
_HARD_STATE = struct.Struct("<QQB")
_INDEX_TERM = struct.Struct("<QQ")

# A record longer than this is taken for a damaged length field, not a real record.
MAX_RECORD = 1 << 31


def _control(rtype: int, payload: bytes) -> bytes:
    head = HEADER.pack(0, len(payload), rtype)[4:]
    crc = zlib.crc32(payload, zlib.crc32(head))
    return _CRC.pack(crc) + head + payload


def encode_hard_state(hs: HardState, flags: int) -> bytes:
    vote = b"" if hs.vote is None else hs.vote.encode()
    payload = _HARD_STATE.pack(hs.term, hs.commit, hs.vote is not None) + vote
    return _control(RT_HARD_STATE | flags, payload)


def encode_index_term(rtype: int, index: int, term: int, flags: int) -> bytes:
    return _control(rtype | flags, _INDEX_TERM.pack(index, term))


def encode_entries(
    entries: Sequence[Entry], flags_first: int, flags_last: int, offset: int
) -> tuple[list[bytes], list[int], list[int]]:
    """Encode entries as records; return the parts to join, and each record's offset and size.

    `offset` is where the first record will land in the segment. The parts are joined by the
    caller together with any control records, so a batch costs one os.write.
    """
    parts: list[bytes] = []
    offsets: list[int] = []
    sizes: list[int] = []
    pack_head = _ENTRY_HEAD.pack
    pack_crc = _CRC.pack
    crc32 = zlib.crc32
    last = len(entries) - 1
    for i, e in enumerate(entries):
        flags = (flags_first if i == 0 else 0) | (flags_last if i == last else 0)
        data = e.data
        head = pack_head(ENTRY_FIXED + len(data), RT_ENTRY | flags, e.index, e.term, e.kind)
        parts.append(pack_crc(crc32(data, crc32(head))))
        parts.append(head)
        parts.append(data)
        size = HEADER_SIZE + ENTRY_FIXED + len(data)
        offsets.append(offset)
        sizes.append(size)
        offset += size
    return parts, offsets, sizes


def decode_entry(buf: bytes | memoryview, pos: int) -> Entry:
    """Decode the entry record at `pos`; raise ValueError when it is not an intact one."""
    crc, length, rtype = HEADER.unpack_from(buf, pos)
    end = pos + HEADER_SIZE + length
    if end > len(buf) or (rtype & TYPE_MASK) != RT_ENTRY or length < ENTRY_FIXED:
        raise ValueError("not an entry record")
    if zlib.crc32(memoryview(buf)[pos + 4 : end]) != crc:
        raise ValueError("checksum mismatch")
    index, term, kind = struct.unpack_from("<QQB", buf, pos + HEADER_SIZE)
    data = bytes(buf[pos + HEADER_SIZE + ENTRY_FIXED : end])
    return Entry(index, term, EntryKind(kind), data)


def decode_hard_state(payload: bytes | memoryview) -> HardState:
    term, commit, has_vote = _HARD_STATE.unpack_from(payload, 0)
    vote = bytes(payload[_HARD_STATE.size :]).decode() if has_vote else None
    return HardState(term=term, vote=vote, commit=commit)


def decode_index_term(payload: bytes | memoryview) -> tuple[int, int]:
    index, term = _INDEX_TERM.unpack_from(payload, 0)
    return int(index), int(term)


@dataclass(frozen=True, slots=True)
class Record:
    """One record found by the scanner. For an entry, `index` and `term` are filled in."""

    rtype: int
    offset: int  # of the record header in the segment
    size: int  # header + payload
    index: int = 0
    term: int = 0


@dataclass(frozen=True, slots=True)
class ScanEnd:
    """Where the valid part of a segment ends, and why scanning stopped there.

    `good_end` is the offset after the last complete batch. `problem` is None when the
    file ends exactly there; otherwise `problem_offset` is the first bad byte and
    `later_batch` the offset of a valid batch start found after it (None if there is none),
    which is what tells real corruption from an interrupted write.
    """

    good_end: int
    problem: str | None = None
    problem_offset: int = 0
    later_batch: int | None = None


_MIN_PAYLOAD = {
    RT_ENTRY: ENTRY_FIXED,
    RT_HARD_STATE: _HARD_STATE.size,
    RT_COMPACT: 16,
    RT_RESET: 16,
    RT_SEGMENT: 16,
}


def _check_record(buf: bytes, mv: memoryview, pos: int) -> tuple[int, int, str | None]:
    """Return (type byte, end offset, problem) for the record at pos."""
    if len(buf) - pos < HEADER_SIZE:
        return 0, 0, "incomplete record header"
    crc, length, rtype = HEADER.unpack_from(buf, pos)
    end = pos + HEADER_SIZE + length
    if length > MAX_RECORD or end > len(buf):
        return rtype, 0, "record runs past the end of the file"
    if zlib.crc32(mv[pos + 4 : end]) != crc:
        return rtype, 0, "checksum mismatch"
    kind = rtype & TYPE_MASK
    if kind not in KNOWN_TYPES or rtype & 0x30 or length < _MIN_PAYLOAD[kind]:
        return rtype, 0, f"unknown record type {rtype:#x}"
    return rtype, end, None


def scan(buf: bytes, start: int, on_batch: Callable[[list[Record]], None]) -> ScanEnd:
    """Parse records from `start`, handing each complete batch to `on_batch` in order."""
    mv = memoryview(buf)
    pos = good_end = start
    batch: list[Record] = []
    while pos < len(buf):
        rtype, end, problem = _check_record(buf, mv, pos)
        if problem is None and batch and rtype & BATCH_START:
            # an earlier batch never ended, yet a later save began: the earlier one was lost
            return ScanEnd(good_end, "unfinished batch followed by another", pos, pos)
        if problem is None and not batch and not rtype & BATCH_START:
            problem = "record outside a batch"
        if problem is not None:
            return ScanEnd(good_end, problem, pos, find_batch_start(buf, pos + 1))
        batch.append(_record(buf, rtype, pos, end))
        pos = end
        if rtype & BATCH_END:
            on_batch(batch)
            batch = []
            good_end = pos
    if batch:
        return ScanEnd(good_end, "unfinished batch at the end of the file", pos, None)
    return ScanEnd(good_end)


def _record(buf: bytes, rtype: int, pos: int, end: int) -> Record:
    kind = rtype & TYPE_MASK
    if kind == RT_ENTRY:
        index, term = _INDEX_TERM.unpack_from(buf, pos + HEADER_SIZE)
        return Record(kind, pos, end - pos, index, term)
    return Record(kind, pos, end - pos)


# A batch-start type byte: BATCH_START, maybe BATCH_END, and a known record type.
_START_TYPE = re.compile(b"[\x81-\x85\xc1-\xc5]")


def find_batch_start(buf: bytes, after: int) -> int | None:
    """Offset of the first intact batch-start record beginning at or after `after`, if any.

    A later save() only starts once the one before it has been fsynced, so a valid batch
    after a bad record proves that the bad record was acknowledged data, not a torn write.
    """
    mv = memoryview(buf)
    for match in _START_TYPE.finditer(buf, after + HEADER_SIZE - 1):
        pos = match.start() - (HEADER_SIZE - 1)
        _, end, problem = _check_record(buf, mv, pos)
        if problem is None:
            return pos
    return None
