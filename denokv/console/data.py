"""What the console does with the data: pages of entries, edits, export and import.

Reads go through `engine.snapshot_read` (one snapshot per page). Every edit is
one atomic write with a check against the versionstamp the page showed, built
as a KV Connect message and validated by the data path's own converter, so it
meets the same limits and texts, goes through the writer (backed up, watchers
fire) or, on a replica, is forwarded to the primary as it would be for Deno.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from v8serialize.jstypes import JSBigInt, JSUint8Array, JSUndefined

from denokv import limits as L
from denokv import texts as T
from denokv.console import jsvalue
from denokv.console.literal import (
    LiteralError,
    date_from_ms,
    date_from_text,
    parse_number,
    parse_value,
)
from denokv.console.transfer import ImportedEntry, NotPlain, export_line, tag_stored
from denokv.engine_errors import WriteError
from denokv.keys import decode_key
from denokv.operations import Entry, ReadRange, WriteStatus
from denokv.proto import datapath_pb2 as pb
from denokv.server import convert
from denokv.server.errors import HttpError
from denokv.values import KvU64, encode_value

if TYPE_CHECKING:
    from denokv.console.host import ConsoleHost

PAGE_DEFAULT = 100
PAGE_MAX = 1000
PREVIEW_CHARS = 240
EXPORT_CHUNK = 1000
WRITES_DISABLED = "Writes are disabled for this database"
CONSOLE_READ_ONLY = "The console is read-only (start the server with --console read-write)."
EDITOR_TYPES = ("string", "number", "bigint", "boolean", "null", "undefined", "Date",
                "Uint8Array", "KvU64", "literal")  # fmt: skip


class Conflict(Exception):
    """The entry is not at the versionstamp the page showed: nothing was written."""

    def __init__(self, current: dict[str, Any] | None) -> None:
        super().__init__("conflict")
        self.current = current


@dataclass(frozen=True, slots=True)
class Page:
    prefix: bytes
    entries: list[Entry]
    expiries: list[int | None]
    more_before: bool
    more_after: bool


def prefix_range(prefix: bytes) -> tuple[bytes, bytes]:
    """The prefix's own key and every key below it."""
    return prefix, prefix + b"\xff"


class ConsoleData:
    def __init__(self, server: ConsoleHost, writable: bool) -> None:
        self.server = server
        self.writable = writable

    @property
    def engine(self) -> Any:
        return self.server.engine

    # -- reading ------------------------------------------------------------------------

    async def page(
        self,
        prefix: bytes,
        *,
        start: bytes | None = None,
        after: bytes | None = None,
        before: bytes | None = None,
        limit: int = PAGE_DEFAULT,
    ) -> Page:
        lo, hi = prefix_range(prefix)
        if start is not None and not lo <= start < hi:
            prefix, (lo, hi) = b"", prefix_range(b"")
        limit = max(1, min(PAGE_MAX, limit))
        if before is not None:
            end = max(lo, min(before, hi))
            main = ReadRange(lo, end, limit + 1, reverse=True)
            other = ReadRange(end, hi, 1)
            rows, rest = await self.engine.snapshot_read([main, other])
            entries = list(reversed(rows[:limit]))
            more_before, more_after = len(rows) > limit, bool(rest)
        else:
            begin = lo
            if after is not None:
                begin = max(lo, after + b"\x00")
            elif start is not None:
                begin = start
            main = ReadRange(begin, hi, limit + 1)
            other = ReadRange(lo, begin, 1, reverse=True)
            rows, rest = await self.engine.snapshot_read([main, other])
            entries = rows[:limit]
            more_before, more_after = bool(rest), len(rows) > limit
        expiries = self.engine.expiry_times([e.key for e in entries])
        return Page(prefix, entries, expiries, more_before, more_after)

    async def entry(self, key: bytes) -> tuple[Entry | None, int | None]:
        (rows,) = await self.engine.snapshot_read([ReadRange(key, key + b"\x00", 1)])
        if not rows:
            return None, None
        return rows[0], self.engine.expiry_times([key])[0]

    async def export(self, prefix: bytes) -> AsyncIterator[str]:
        """Export lines in key order, read 1,000 entries (one snapshot) at a time."""
        lo, hi = prefix_range(prefix)
        while True:
            (rows,) = await self.engine.snapshot_read([ReadRange(lo, hi, EXPORT_CHUNK)])
            expiries = self.engine.expiry_times([e.key for e in rows])
            for entry, expiry in zip(rows, expiries, strict=True):
                yield export_line(entry, expiry) + "\n"
            if len(rows) < EXPORT_CHUNK:
                return
            lo = rows[-1].key + b"\x00"

    # -- writing ------------------------------------------------------------------------

    async def set(
        self, key: bytes, value: tuple[bytes, int], expect: bytes | None, expire_at_ms: int
    ) -> bytes:
        data, encoding = value
        kv_value = pb.KvValue(data=data, encoding=cast("pb.ValueEncoding", encoding))
        mutation = pb.Mutation(
            key=key, mutation_type=pb.M_SET, value=kv_value, expire_at_ms=expire_at_ms
        )
        return await self.checked_write(key, expect, mutation)

    async def delete(self, key: bytes, expect: bytes | None) -> bytes:
        return await self.checked_write(
            key, expect, pb.Mutation(key=key, mutation_type=pb.M_DELETE)
        )

    async def checked_write(self, key: bytes, expect: bytes | None, mutation: pb.Mutation) -> bytes:
        msg = pb.AtomicWrite(checks=[pb.Check(key=key, versionstamp=expect or b"")])
        msg.mutations.append(mutation)
        status, stamp = await self.commit(msg)
        if status == WriteStatus.CHECK_FAILURE:
            entry, expiry = await self.entry(key)
            raise Conflict(None if entry is None else entry_json(entry, expiry, full=True))
        return stamp

    async def import_entries(self, entries: Sequence[ImportedEntry], now_ms: int) -> dict[str, Any]:
        """Write in atomic batches within the data path's limits; report what was written."""
        live = [e for e in entries if e.expire_at_ms is None or e.expire_at_ms > now_ms]
        report: dict[str, Any] = {
            "entries": len(entries), "skipped_expired": len(entries) - len(live),
            "written": 0, "batches": [],
        }  # fmt: skip
        for batch in _batches(live):
            msg = pb.AtomicWrite()
            for e in batch:
                msg.mutations.add(
                    key=e.key, mutation_type=pb.M_SET,
                    value=pb.KvValue(data=e.value, encoding=cast("pb.ValueEncoding", e.encoding)),
                    expire_at_ms=e.expire_at_ms or 0,
                )  # fmt: skip
            try:
                _, stamp = await self.commit(msg)
            except HttpError as exc:
                report["error"] = exc.text
                report["status"] = exc.status
                return report
            report["written"] += len(batch)
            report["batches"].append({"count": len(batch), "versionstamp": stamp.hex()})
        return report

    async def commit(self, msg: pb.AtomicWrite) -> tuple[WriteStatus, bytes]:
        """One atomic write on the data path's rules; CHECK_FAILURE is returned, not raised."""
        if not self.writable:
            raise HttpError(403, CONSOLE_READ_ONLY)
        config = self.server.config
        write = convert.atomic_write(msg)  # the data path's validation and texts
        if config.forwarder is not None:
            status, _, body = await config.forwarder.forward(
                "atomic_write", msg.SerializeToString()
            )
            if status != 200:
                raise HttpError(status, body.decode(errors="replace"))
            out = pb.AtomicWriteOutput.FromString(body)
            result_status, stamp = WriteStatus(out.status), out.versionstamp
        elif not config.accept_writes:
            raise HttpError(403, WRITES_DISABLED)
        else:
            try:
                result = await self.engine.atomic_write(write)
            except WriteError as exc:
                raise HttpError(400, str(exc)) from None
            result_status, stamp = result.status, result.versionstamp
        if result_status == WriteStatus.WRITE_DISABLED:
            raise HttpError(403, WRITES_DISABLED)
        return result_status, stamp


def _batches(entries: Sequence[ImportedEntry]) -> list[list[ImportedEntry]]:
    batches: list[list[ImportedEntry]] = []
    current: list[ImportedEntry] = []
    size = 0
    for e in entries:
        cost = len(e.key) + len(e.value)
        if current and (len(current) >= L.MAX_MUTATIONS or size + cost > L.MAX_TOTAL_MUTATION_SIZE):
            batches.append(current)
            current, size = [], 0
        current.append(e)
        size += cost
    if current:
        batches.append(current)
    return batches


# -- entries as the page sees them -----------------------------------------------------------


def key_json(key: bytes) -> dict[str, Any]:
    parts = decode_key(key)
    texts = [jsvalue.show_key_part(p) for p in parts]
    return {"hex": key.hex(), "parts": texts, "text": "[" + ", ".join(texts) + "]"}


def entry_json(entry: Entry, expiry: int | None, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": key_json(entry.key),
        "versionstamp": entry.versionstamp.hex(),
        "expireAt": expiry,
        "size": len(entry.value),
        "encoding": entry.encoding,
    }
    try:
        value = jsvalue.decode_exact(entry.value, entry.encoding)
    except ValueError as exc:
        out.update(
            type="invalid", preview=f"(cannot decode: {exc})", text=f"(cannot decode: {exc})"
        )
        return out
    out["type"] = jsvalue.type_name(value)
    flat = jsvalue.show(value, width=None)
    out["preview"] = flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"
    if full:
        out["text"] = jsvalue.show(value)
        out["edit"] = editor_form(value, entry)
    return out


def editor_form(value: object, entry: Entry) -> dict[str, Any]:
    """How the typed editor opens on this value: its type and the text in the input."""
    kind = jsvalue.type_name(value)
    if kind not in EDITOR_TYPES:
        kind = "literal"
    if kind == "string":
        return {"type": kind, "text": value}
    if kind in ("number", "boolean", "null", "undefined", "KvU64", "bigint"):
        text = jsvalue.show(value)
        text = text.removeprefix("[Deno.KvU64: ").removesuffix("]").removesuffix("n")
        return {"type": kind, "text": "" if kind in ("null", "undefined") else text}
    if kind == "Date":
        return {"type": kind, "text": jsvalue.show(value)}
    if kind == "Uint8Array":
        data = value if isinstance(value, bytes) else b""
        if isinstance(value, JSUint8Array):
            with value.get_buffer() as view:
                data = bytes(view)
        return {"type": kind, "text": ", ".join(str(b) for b in data)}
    try:
        tag_plain = tag_stored(entry.value, entry.encoding)
    except (ValueError, NotPlain):
        tag_plain = {"v8": ""}
    if "v8" in tag_plain:
        return {"type": "literal", "text": "", "note": "This type cannot be edited here; "
                "you can replace the value."}  # fmt: skip
    return {"type": "literal", "text": jsvalue.show(value)}


def value_from_editor(kind: object, text: object) -> tuple[bytes, int]:
    """The stored form of what the typed editor holds; 400 with the reason if it cannot be read."""
    if kind not in EDITOR_TYPES or not isinstance(text, str):
        raise HttpError(
            400, f"Unknown value type {kind!r}; expected one of {', '.join(EDITOR_TYPES)}."
        )
    try:
        value = _editor_value(str(kind), text)
        data, encoding = encode_value(value)
    except (LiteralError, ValueError, TypeError, OverflowError) as exc:
        raise HttpError(400, f"Cannot read the {kind} value: {exc}") from None
    if len(data) > L.MAX_VALUE_SIZE:
        raise HttpError(400, T.VALUE_TOO_LARGE)
    return data, encoding


def _editor_value(kind: str, text: str) -> object:
    stripped = text.strip()
    if kind == "string":
        return text
    if kind == "number":
        return parse_number(stripped)
    if kind in ("bigint", "KvU64"):
        digits = stripped.removesuffix("n")
        if not digits.lstrip("-").isdigit():
            raise LiteralError(f"{stripped!r} is not an integer")
        return JSBigInt(int(digits)) if kind == "bigint" else KvU64(int(digits))
    if kind == "boolean":
        if stripped not in ("true", "false"):
            raise LiteralError("a boolean is true or false")
        return stripped == "true"
    if kind == "null":
        return None
    if kind == "undefined":
        return JSUndefined
    if kind == "Date":
        if stripped.lstrip("-").isdigit():
            return date_from_ms(float(stripped))
        return date_from_text(stripped)
    if kind == "Uint8Array":
        if stripped.startswith(("Uint8Array", "new")):
            value = parse_value(stripped)
        else:
            value = parse_value(f"new Uint8Array([{stripped}])")
        return value
    return parse_value(text)
