"""The spool file: an append-only log of ``(key, value, timestamp_ms)`` records that survives kill -9.

Layout (all integers little-endian)::

    file    = b"LKSPOOL1" + generation (8 random bytes) + record*
    record  = magic b"SPR\\x01" | key length u32 (0xFFFFFFFF: no key) | value length u32
              | timestamp_ms i64 | CRC32 of (magic, lengths, timestamp, key, value)
              + key bytes + value bytes

Keys and values are stored as given: any bytes, ``None`` keys included.

Durability: ``append`` writes into a 1 MiB buffer; ``sync`` flushes it and
fsyncs, and every record appended before a ``sync`` returned survives kill -9
and power loss. The caller chooses when (``SpoolingSender`` syncs per window).

Acknowledgement: ``<spool>.ack`` holds (generation, byte offset): records
before it were confirmed by the uplink. It is replaced atomically (temp,
fsync, rename). When everything is acknowledged the spool starts a new, empty
generation; when the acknowledged prefix is large it is compacted (the rest
copied to a new generation, renamed over). A cursor naming another
generation is stale and means "nothing acknowledged", so a crash between the
two renames re-sends at most, never loses.

Recovery on open: records are read and checked in order. A damaged last
record (short header, short body, or a CRC mismatch that ends at end of file)
is a torn write: it is cut off with a WARNING naming the file and byte
offset. Damage followed by more bytes (or a torn tail over 1 MiB) cannot be
resynchronised with length framing: the remainder is moved aside to
``<spool>.corrupt-<ms>``, never deleted, with a WARNING.

Positions given to and returned by ``Spool`` are logical byte positions: they
keep growing across compactions within one ``Spool`` object.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from pathlib import Path
from typing import BinaryIO, NamedTuple, Optional, Union

from edge_client.errors import DeliveryError

__all__ = ["Spool", "SpoolFullError", "SpoolDamagedError", "SpooledRecord", "record_size", "DEFAULT_MAX_BYTES"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 256 * 1024 * 1024

_FILE_MAGIC = b"LKSPOOL1"
_FILE_HEADER = struct.Struct("<8s8s")  # magic, generation
_RECORD_MAGIC = b"SPR\x01"
_CHECKED = struct.Struct("<4sIIq")  # magic, key length, value length, timestamp_ms: the CRC starts with these
_RECORD_HEADER = struct.Struct("<4sIIqI")  # ... and the CRC32
_NO_KEY = 0xFFFFFFFF
_CURSOR_MAGIC = b"LKSPACK1"
_CURSOR = struct.Struct("<8s8sQI")  # magic, generation, offset, CRC32 of the rest
_HEADER_LEN = _FILE_HEADER.size
#: A torn tail longer than this is moved aside rather than cut: a bad length field looks like a torn write.
_MAX_TORN_TAIL = 1 << 20
#: Compact once the acknowledged prefix is this large and at least as large as the rest.
_COMPACT_MIN_BYTES = 8 << 20
_WRITE_BUFFER = 1 << 20


class SpoolFullError(DeliveryError):
    """The spool reached its size limit: a new message is refused (the oldest are kept)."""


class SpoolDamagedError(DeliveryError):
    """A spool file changed under a running sender (reopening it moves the damage aside)."""


class SpooledRecord(NamedTuple):
    end: int  # the logical position just after this record: acknowledge(end) confirms it
    key: Optional[bytes]
    value: bytes
    timestamp_ms: int


class _Damage(NamedTuple):
    offset: int
    reason: str
    tail: bool  # the damaged record reaches the end of the file: a torn write


def record_size(key: Optional[bytes], value: bytes) -> int:
    """How many bytes a record takes in the file."""
    return _RECORD_HEADER.size + (0 if key is None else len(key)) + len(value)


def _read_records(f: BinaryIO, offset: int, size: int, limit: int = -1):
    """Yield ``(start, end, key, value, timestamp_ms)`` from ``offset``; return a ``_Damage`` or None.

    ``f`` is positioned at ``offset``; ``size`` is the file's length.
    """
    header_size = _RECORD_HEADER.size
    unpack = _RECORD_HEADER.unpack
    crc32 = zlib.crc32
    while offset < size and limit != 0:
        left = size - offset
        if left < header_size:
            return _Damage(offset, f"short header ({left} of {header_size} bytes)", True)
        head = f.read(header_size)
        magic, key_len, value_len, timestamp_ms, crc = unpack(head)
        if magic != _RECORD_MAGIC:
            return _Damage(offset, f"bad record magic {magic!r}", False)
        body_len = (0 if key_len == _NO_KEY else key_len) + value_len
        end = offset + header_size + body_len
        if end > size:
            return _Damage(offset, f"short body ({left - header_size} of {body_len} bytes)", True)
        body = f.read(body_len)
        if crc32(body, crc32(head[:20])) != crc:
            return _Damage(offset, "CRC mismatch", end == size)
        if key_len == _NO_KEY:
            key, value = None, body
        else:
            key, value = body[:key_len], body[key_len:]
        yield offset, end, key, value, timestamp_ms
        offset = end
        limit -= 1
    return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_atomically(path: Path, chunks) -> None:
    """Write ``chunks`` to a temporary file, fsync it, rename it over ``path``, fsync the folder."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        for chunk in chunks:
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Spool:
    """One spool file and its acknowledgement cursor; see the module docstring for the format."""

    def __init__(self, path: Union[str, os.PathLike], *, max_bytes: int = DEFAULT_MAX_BYTES):
        if max_bytes <= _HEADER_LEN + _RECORD_HEADER.size:
            raise ValueError(f"max_bytes must exceed {_HEADER_LEN + _RECORD_HEADER.size}, got {max_bytes}")
        self.path = Path(path)
        self.cursor_path = self.path.with_name(self.path.name + ".ack")
        self.max_bytes = max_bytes
        self.skipped_torn = 0  # damaged stretches skipped when opening
        self.skipped_bytes = 0
        self.pending_records = 0  # records after the cursor when opened
        self._base = 0  # logical position = _base + physical offset
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for leftover in (self.path, self.cursor_path):
            leftover.with_name(leftover.name + ".tmp").unlink(missing_ok=True)
        self._recover()
        self._synced = self._size
        self._file = open(self.path, "ab", buffering=_WRITE_BUFFER)

    # -- positions --------------------------------------------------------------------------------

    @property
    def end(self) -> int:
        """The logical position after the last appended record."""
        return self._base + self._size

    @property
    def acked(self) -> int:
        """The logical position up to which the uplink confirmed."""
        return self._base + self._acked

    @property
    def size_bytes(self) -> int:
        return self._size

    # -- writing ----------------------------------------------------------------------------------

    def append(
        self,
        key: Optional[bytes],
        value: bytes,
        timestamp_ms: int,
        _pack=_CHECKED.pack,  # locals: this runs once per message, at hundreds of thousands a second
        _crc32=zlib.crc32,
        _join=b"".join,
    ) -> None:
        """Buffer one record; durable after the next ``sync``. Raises ``SpoolFullError`` when it does not fit."""
        if key is None:
            head = _pack(_RECORD_MAGIC, _NO_KEY, len(value), timestamp_ms)
            record = _join((head, _crc32(value, _crc32(head)).to_bytes(4, "little"), value))
        else:
            head = _pack(_RECORD_MAGIC, len(key), len(value), timestamp_ms)
            record = _join((head, _crc32(value, _crc32(key, _crc32(head))).to_bytes(4, "little"), key, value))
        size = self._size + len(record)
        if size > self.max_bytes:
            self._make_room(len(record))
            size = self._size + len(record)
        self._file.write(record)
        self._size = size

    def sync(self) -> None:
        """Make every record appended so far durable (flush and fsync)."""
        if self._synced == self._size:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._synced = self._size

    def _make_room(self, needed: int) -> None:
        if self._acked > _HEADER_LEN:
            self._file.flush()
            self._compact(self._acked)
        if self._size + needed > self.max_bytes:
            raise SpoolFullError(
                f"spool {self.path} is full: {self._size:,} bytes of its {self.max_bytes:,} hold messages "
                f"the uplink has not confirmed; the new message ({needed:,} bytes) is refused"
            )

    # -- reading ----------------------------------------------------------------------------------

    def read(self, start: int, max_records: int) -> list[SpooledRecord]:
        """Up to ``max_records`` records from logical position ``start`` (a record boundary), in order."""
        self._file.flush()
        offset = start - self._base
        records: list[SpooledRecord] = []
        with open(self.path, "rb", buffering=_WRITE_BUFFER) as f:
            f.seek(offset)
            reader = _read_records(f, offset, self._size, max_records)
            try:
                while True:
                    _, end, key, value, ts = next(reader)
                    records.append(SpooledRecord(self._base + end, key, value, ts))
            except StopIteration as stop:
                damage = stop.value
        if damage is not None:
            raise SpoolDamagedError(
                f"spool {self.path} is damaged at byte {damage.offset} ({damage.reason}); "
                "restart the sender to move the damaged part aside"
            )
        return records

    # -- acknowledging ----------------------------------------------------------------------------

    def acknowledge(self, position: int) -> None:
        """Records before logical ``position`` are confirmed: remember it durably, free space when worth it."""
        offset = position - self._base
        if not self._acked <= offset <= self._size:
            raise ValueError(f"cannot acknowledge {position}: the spool spans {self.acked}..{self.end}")
        if offset == self._acked:
            return
        if offset > self._synced:
            self.sync()  # the cursor never points past what is on disk
        if offset == self._size:
            self._file.flush()
            self._compact(offset)  # nothing left: a new, empty generation
        elif offset - _HEADER_LEN >= max(_COMPACT_MIN_BYTES, self._size - offset):
            self._file.flush()
            self._compact(offset)
        else:
            generation = self._generation
            body = _CURSOR_MAGIC + generation + offset.to_bytes(8, "little")
            _replace_atomically(self.cursor_path, [body + zlib.crc32(body).to_bytes(4, "little")])
            self._acked = offset

    def _compact(self, offset: int) -> None:
        """Rewrite the file as a new generation holding only the bytes from ``offset``."""
        self._file.close()
        generation = os.urandom(8)

        def chunks():
            yield _FILE_HEADER.pack(_FILE_MAGIC, generation)
            if offset < self._size:
                with open(self.path, "rb") as old:
                    old.seek(offset)
                    while chunk := old.read(_WRITE_BUFFER):
                        yield chunk

        _replace_atomically(self.path, chunks())
        self.cursor_path.unlink(missing_ok=True)  # stale by its generation anyway
        self._generation = generation
        self._base += offset - _HEADER_LEN
        self._size = _HEADER_LEN + self._size - offset
        self._synced = self._size
        self._acked = _HEADER_LEN
        self._file = open(self.path, "ab", buffering=_WRITE_BUFFER)

    def close(self, remove_if_empty: bool = False) -> None:
        """Sync and close; with ``remove_if_empty``, delete the file when every record was acknowledged."""
        if not self._file.closed:
            self.sync()
            self._file.close()
            if remove_if_empty and self._acked == self._size:
                self.path.unlink(missing_ok=True)
                self.cursor_path.unlink(missing_ok=True)

    # -- recovery ---------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Check the file, cut or move aside a damaged end, find the cursor; create the file if missing."""
        size = self.path.stat().st_size if self.path.exists() else 0
        header = b""
        if size:
            with open(self.path, "rb") as f:
                header = f.read(_HEADER_LEN)
        if len(header) < _HEADER_LEN or not header.startswith(_FILE_MAGIC):
            if size:
                self._set_aside(0, size, "not a spool file header")
                self.skipped_torn += 1
                self.skipped_bytes += size
            self._generation = os.urandom(8)
            _replace_atomically(self.path, [_FILE_HEADER.pack(_FILE_MAGIC, self._generation)])
            self._size = self._acked = _HEADER_LEN
            return
        self._generation = header[8:]
        cursor = self._read_cursor()
        acked, pending, cursor_found = _HEADER_LEN, 0, cursor in (None, _HEADER_LEN)
        with open(self.path, "rb", buffering=_WRITE_BUFFER) as f:
            f.seek(_HEADER_LEN)
            reader = _read_records(f, _HEADER_LEN, size)
            end = _HEADER_LEN
            try:
                while True:
                    start, end, *_ = next(reader)
                    pending += 1
                    if start == cursor:
                        acked, pending, cursor_found = start, 1, True
            except StopIteration as stop:
                damage = stop.value
        valid_end = damage.offset if damage is not None else end
        if cursor == valid_end and valid_end > _HEADER_LEN:
            acked, pending, cursor_found = valid_end, 0, True
        if not cursor_found:
            log.warning(
                "spool %s: its cursor (byte %s) is not a record boundary; replaying everything from the start",
                self.path,
                cursor,
            )
        if damage is not None:
            self._cut_damage(damage, size)
        self._size = valid_end
        self._acked = acked
        self.pending_records = pending

    def _read_cursor(self) -> Optional[int]:
        """The acknowledged offset for this generation, or None (none, stale or unreadable)."""
        try:
            data = self.cursor_path.read_bytes()
        except FileNotFoundError:
            return None
        if len(data) != _CURSOR.size:
            return None
        magic, generation, offset, crc = _CURSOR.unpack(data)
        if magic != _CURSOR_MAGIC or zlib.crc32(data[:-4]) != crc or generation != self._generation:
            return None
        return offset

    def _cut_damage(self, damage: _Damage, size: int) -> None:
        skipped = size - damage.offset
        self.skipped_torn += 1
        self.skipped_bytes += skipped
        if damage.tail and skipped <= _MAX_TORN_TAIL:
            log.warning(
                "spool %s: torn last record at byte %d (%s); skipped its %d bytes",
                self.path,
                damage.offset,
                damage.reason,
                skipped,
            )
        else:
            self._set_aside(damage.offset, size, damage.reason)
        with open(self.path, "r+b") as f:
            f.truncate(damage.offset)
            os.fsync(f.fileno())

    def _set_aside(self, offset: int, size: int, reason: str) -> None:
        """Copy bytes ``offset..size`` to ``<spool>.corrupt-<ms>`` (kept for a human to look at)."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.time_ns() // 1_000_000}")
        with open(self.path, "rb") as src, open(aside, "wb") as out:
            src.seek(offset)
            while chunk := src.read(_WRITE_BUFFER):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        _fsync_dir(self.path.parent)
        log.warning(
            "spool %s: damaged at byte %d (%s); moved the %d bytes from there to %s",
            self.path,
            offset,
            reason,
            size - offset,
            aside,
        )
