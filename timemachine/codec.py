"""Bodies of backup objects: protobuf messages of `com.deno.kv.backup`, zstd-compressed
by default. Readers sniff the zstd magic, so plain and compressed objects mix freely.

One addition to upstream's messages: the last entry of each commit carries the
commit's wall-clock time in field 7 (`commit_timestamp_ms`), so a restore to a
time can stop between two commits of one segment. Upstream readers skip the
unknown field.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

import zstandard
from google.protobuf import unknown_fields
from google.protobuf.message import Message

from denokv import versionstamp as stamps
from denokv.effects import QueueChange
from denokv.proto import backup_pb2 as pb
from denokv.redo_log import RedoEntry, decode_queue_change, fill_queue_change, read_queue_change

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
COMPRESSIONS = ("zstd", "none")
_COMMIT_TIME_TAG = 7 << 3  # field 7, varint


class CorruptObject(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class SnapshotEntry:
    key: bytes
    value: bytes
    encoding: int
    versionstamp: bytes  # 10 bytes
    expire_at_ms: int


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One logged change: a key's new state, or (`queue` set) a change to the queue tables."""

    versionstamp12: bytes
    key: bytes
    value: bytes | None
    encoding: int
    expire_at_ms: int
    commit_time_ms: int | None  # set on commit boundaries we wrote
    queue: QueueChange | None = None

    @property
    def is_boundary(self) -> bool:
        return stamps.is_boundary(self.versionstamp12)


@dataclass(frozen=True, slots=True)
class SnapshotRange:
    entries: list[SnapshotEntry]
    queue: list[QueueChange]  # QUEUE_PUT / RUNNING_PUT rows held at the snapshot


def compress(body: bytes, compression: str) -> bytes:
    if compression == "none":
        return body
    return zstandard.ZstdCompressor(level=3).compress(body)


def decompress(body: bytes, name: str) -> bytes:
    if body.startswith(ZSTD_MAGIC):
        try:
            return zstandard.ZstdDecompressor().decompress(body, max_output_size=1 << 30)
        except zstandard.ZstdError as exc:
            raise CorruptObject(f"{name}: bad zstd data: {exc}") from None
    return body


def encode_snapshot(
    entries: Iterable[SnapshotEntry], compression: str, queue: Iterable[QueueChange] = ()
) -> bytes:
    msg = pb.BackupSnapshotRange()
    for e in entries:
        msg.data_list.add(key=b"d" + e.key, value=e.value)
        meta = e.versionstamp + bytes([e.encoding]) + struct.pack("<q", e.expire_at_ms)
        msg.metadata_list.add(key=b"m" + e.key, value=meta)
    for change in queue:
        fill_queue_change(msg.queue_rows.add(), change)
    return compress(msg.SerializeToString(), compression)


def decode_snapshot_range(body: bytes, name: str) -> SnapshotRange:
    """A snapshot object's keys and, when we wrote it, the queue's messages."""
    msg = _parse_snapshot(body, name)
    queue = [_queue_change(q, name) for q in msg.queue_rows]
    return SnapshotRange(_snapshot_entries(msg, name), queue)


def decode_snapshot(body: bytes, name: str) -> list[SnapshotEntry]:
    return _snapshot_entries(_parse_snapshot(body, name), name)


def _parse_snapshot(body: bytes, name: str) -> pb.BackupSnapshotRange:
    msg = pb.BackupSnapshotRange()
    try:
        msg.ParseFromString(decompress(body, name))
    except Exception as exc:
        raise CorruptObject(f"{name}: not a snapshot range: {exc}") from None
    return msg


def _snapshot_entries(msg: pb.BackupSnapshotRange, name: str) -> list[SnapshotEntry]:
    if len(msg.data_list) != len(msg.metadata_list):
        raise CorruptObject(f"{name}: data and metadata lists differ in length")
    out = []
    for data, meta in zip(msg.data_list, msg.metadata_list, strict=True):
        if data.key[:1] != b"d" or meta.key[:1] != b"m" or data.key[1:] != meta.key[1:]:
            raise CorruptObject(f"{name}: data and metadata keys do not match")
        m = meta.value
        if len(m) < 11:
            raise CorruptObject(f"{name}: invalid metadata for key {data.key[1:].hex()}")
        expire = struct.unpack("<q", m[11:19])[0] if len(m) >= 19 else -1
        out.append(SnapshotEntry(data.key[1:], data.value, m[10], m[:10], expire))
    return out


@dataclass(frozen=True, slots=True)
class Segment:
    timestamp_ms: int
    entries: list[LogEntry]  # key and queue changes, in versionstamp order
    previous12: bytes | None  # the segment before it ends here; None: an older format


def encode_segment(entries: list[RedoEntry], compression: str, previous12: bytes) -> bytes:
    """Key changes go to upstream's `entries`, queue changes and the link to our own fields."""
    msg = pb.BackupMutationRange(
        timestamp_ms=entries[-1].timestamp_ms if entries else 0, previous_versionstamp=previous12
    )
    boundaries: list[tuple[int, int]] = []  # (index in entries, commit time)
    for e in entries:
        if e.is_queue_change:
            out = fill_queue_change(
                msg.queue_changes.add(versionstamp=e.versionstamp12),
                decode_queue_change(e.value or b""),
            )
            if e.is_boundary:
                out.commit_timestamp_ms = e.timestamp_ms
            continue
        msg.entries.add(
            versionstamp=e.versionstamp12,
            kind=pb.MK_CLEAR if e.value is None else pb.MK_SET,
            key=e.key,
            value=e.value or b"",
            value_encoding=e.encoding if e.value is not None else 0,
            expire_at_ms=max(e.expire_at_ms, 0),
        )
        if e.is_boundary:
            boundaries.append((len(msg.entries) - 1, e.timestamp_ms))
    body = _with_commit_times(msg, boundaries)
    return compress(body, compression)


def _with_commit_times(msg: pb.BackupMutationRange, boundaries: list[tuple[int, int]]) -> bytes:
    # Append field 7 to boundary entries by hand: the schema stays upstream's.
    for i, commit_time in boundaries:
        msg.entries[i].MergeFromString(_varint(_COMMIT_TIME_TAG) + _varint(commit_time))
    return msg.SerializeToString()


def _queue_change(msg: pb.BackupQueueChange, name: str) -> QueueChange:
    try:
        return read_queue_change(msg)
    except ValueError:
        raise CorruptObject(f"{name}: unknown queue change kind {msg.kind}") from None


def decode_segment(body: bytes, name: str) -> Segment:
    """The segment's time, link and changes (key and queue changes in versionstamp order)."""
    msg = pb.BackupMutationRange()
    try:
        msg.ParseFromString(decompress(body, name))
    except Exception as exc:
        raise CorruptObject(f"{name}: not a log segment: {exc}") from None
    out = []
    for e in msg.entries:
        _check_stamp(e.versionstamp, name)
        cleared = e.kind == pb.MK_CLEAR
        out.append(
            LogEntry(
                e.versionstamp,
                e.key,
                None if cleared else e.value,
                e.value_encoding,
                e.expire_at_ms or -1,
                _unknown_varint(e, 7),
            )
        )
    if msg.queue_changes:
        for q in msg.queue_changes:
            _check_stamp(q.versionstamp, name)
            when = q.commit_timestamp_ms or None
            out.append(LogEntry(q.versionstamp, b"", None, 0, -1, when, _queue_change(q, name)))
        out.sort(key=lambda entry: entry.versionstamp12)
    previous = msg.previous_versionstamp or None
    if previous is not None:
        _check_stamp(previous, name)
    return Segment(msg.timestamp_ms, out, previous)


def _check_stamp(stamp: bytes, name: str) -> None:
    if len(stamp) != 12:
        raise CorruptObject(f"{name}: versionstamp of {len(stamp)} bytes")


def _unknown_varint(msg: Message, field: int) -> int | None:
    found = unknown_fields.UnknownFieldSet(msg)
    for item in (found[i] for i in range(len(found))):
        if item.field_number == field:
            return int(item.data)
    return None


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)
