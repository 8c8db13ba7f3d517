"""Backup generations and their lineage: which primary wrote each, and what it continues.

A generation is complete once its `differential` exists. Next to it, our
primaries write `lineage.json`:

    {"format": 1, "generation": "...", "primary_id": "...", "owner": "...",
     "host": "...", "snapshot_versionstamp": "<20 hex>", "snapshot_time_ms": ...,
     "continues": {"generation": "...", "versionstamp": "<20 hex>",
                   "log_end": "<24 hex>"} | null,
     "origin": "rotation" | "first start" | "restored" | "not continuous",
     "lease_epoch": N}

`continues` is set only when the generation's snapshot is exactly the parent
generation's state at that versionstamp (a rotation closes the old log there),
(`log_end` is where the parent's log was closed, so a reader can tell that its
last segments are all there), and a replica may step from one into the other
without a gap. Anything else
(a first start, a restored or rolled-back file, commits made without capture)
starts a history of its own, and followers load its snapshot. Generations
written before lineage existed have no record (`lineage` is None) and are read
with the checks their names allow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from denokv import versionstamp as stamps
from timemachine import layout
from timemachine.store import ObjectNotFound, ObjectStore

LINEAGE_FORMAT = 1
# Backup state a restored file carries (`denokv_backup_state`): "<generation> <20 hex>",
# the history it was restored from, which the primary started on it continues.
RESTORED_FROM = "restored_from"


class GenerationError(Exception):
    """The store holds generation objects this version cannot make sense of."""


@dataclass(frozen=True, slots=True)
class Lineage:
    generation: str
    primary_id: str
    owner: str  # the process (run) that wrote it
    host: str
    snapshot_versionstamp: bytes  # 10 bytes
    snapshot_time_ms: int
    continues_generation: str | None = None
    continues_versionstamp: bytes | None = None  # 10 bytes
    continues_log_end: bytes | None = None  # 12 bytes: where the parent's log was closed
    origin: str = "rotation"
    lease_epoch: int = 0

    def encode(self) -> bytes:
        continues = None
        if self.continues_generation is not None and self.continues_versionstamp is not None:
            continues = {
                "generation": self.continues_generation,
                "versionstamp": self.continues_versionstamp.hex(),
                "log_end": (self.continues_log_end or b"").hex(),
            }
        doc = {
            "format": LINEAGE_FORMAT,
            "generation": self.generation,
            "primary_id": self.primary_id,
            "owner": self.owner,
            "host": self.host,
            "snapshot_versionstamp": self.snapshot_versionstamp.hex(),
            "snapshot_time_ms": self.snapshot_time_ms,
            "continues": continues,
            "origin": self.origin,
            "lease_epoch": self.lease_epoch,
        }
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def decode(cls, body: bytes, name: str) -> Lineage:
        try:
            doc = json.loads(body)
            continues = doc.get("continues")
            return cls(
                generation=str(doc["generation"]),
                primary_id=str(doc["primary_id"]),
                owner=str(doc.get("owner", "")),
                host=str(doc.get("host", "")),
                snapshot_versionstamp=_stamp10(doc["snapshot_versionstamp"]),
                snapshot_time_ms=int(doc["snapshot_time_ms"]),
                continues_generation=None if not continues else str(continues["generation"]),
                continues_versionstamp=None
                if not continues
                else _stamp10(continues["versionstamp"]),
                continues_log_end=None
                if not continues or not continues.get("log_end")
                else bytes.fromhex(continues["log_end"]),
                origin=str(doc.get("origin", "")),
                lease_epoch=int(doc.get("lease_epoch", 0)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise GenerationError(f"{name}: not a lineage record: {exc}") from None


@dataclass(frozen=True, slots=True)
class Generation:
    name: str
    differential: bytes  # the snapshot's 10-byte versionstamp
    started_ms: int  # when its snapshot was taken
    lineage: Lineage | None = None  # None: written before lineage records existed

    @property
    def base12(self) -> bytes:
        """Where its logs begin: every entry after this belongs to the generation."""
        return stamps.after(self.differential)

    def continues(self, parent: str) -> bytes | None:
        """The point of `parent`'s history this generation's snapshot equals, if it does."""
        lin = self.lineage
        if lin is None or lin.continues_generation != parent:
            return None
        return lin.continues_versionstamp


@dataclass(frozen=True, slots=True)
class Listing:
    complete: list[Generation]  # oldest first
    incomplete: list[str]  # folders without a differential (an upload under way, or a crash)


def lineage_key(prefix: str, generation: str) -> str:
    return layout.generation_prefix(prefix, generation) + "lineage.json"


async def list_generations(
    store: ObjectStore, prefix: str, known: dict[str, Generation] | None = None
) -> list[Generation]:
    """Complete generations (those with a differential), oldest first."""
    return (await list_all(store, prefix, known)).complete


async def list_all(
    store: ObjectStore, prefix: str, known: dict[str, Generation] | None = None
) -> Listing:
    """Every generation folder, complete or not.

    `known` caches generations already read (a complete generation never
    changes): a poller then pays one LIST per call, plus a few GETs for each
    generation it has not seen complete before.
    """
    complete: list[Generation] = []
    incomplete: list[str] = []
    for folder in await store.list_folders(layout.generations_prefix(prefix)):
        name = folder.rstrip("/")
        if known is not None and name in known:
            complete.append(known[name])
            continue
        try:
            layout.generation_time_ms(name)
        except layout.LayoutError:
            continue  # not ours: leave it alone
        generation = await read_generation(store, prefix, name)
        if generation is None:
            incomplete.append(name)
            continue
        if known is not None:
            known[name] = generation
        complete.append(generation)
    complete.sort(key=lambda g: (g.started_ms, g.name))
    return Listing(complete, sorted(incomplete))


async def read_generation(store: ObjectStore, prefix: str, name: str) -> Generation | None:
    """The generation `name`, or None while it has no differential."""
    try:
        body = await store.get(layout.differential_key(prefix, name))
    except ObjectNotFound:
        return None
    text = body.decode(errors="replace").strip()
    if len(text) != 20:
        raise GenerationError(f"generation {name}: differential {text!r} is not 20 hex characters")
    differential = _stamp10(text)
    lineage = None
    try:
        key = lineage_key(prefix, name)
        lineage = Lineage.decode(await store.get(key), key)
    except ObjectNotFound:
        pass
    started = lineage.snapshot_time_ms if lineage else layout.generation_time_ms(name)
    return Generation(name, differential, started, lineage)


def _stamp10(text: str) -> bytes:
    return stamps.parse(text)


def recovery_points(
    generations: list[Generation], newest_end: tuple[int | None, bytes] | None = None
) -> list[dict[str, object]]:
    """Each generation's restorable span, for people (the console): from its snapshot to
    the next generation's, the newest one to `newest_end` (time ms, 10-byte versionstamp)."""
    points: list[dict[str, object]] = []
    for i, gen in enumerate(generations):
        to_ms: int | None
        if i + 1 < len(generations):
            nxt = generations[i + 1]
            to_ms, to_stamp = nxt.started_ms, nxt.differential
        elif newest_end is not None:
            to_ms, to_stamp = newest_end
        else:
            to_ms, to_stamp = None, gen.differential
        points.append(
            {
                "generation": gen.name,
                "from_ms": gen.started_ms,
                "to_ms": to_ms,
                "from_versionstamp": gen.differential.hex(),
                "to_versionstamp": to_stamp.hex(),
                "origin": gen.lineage.origin if gen.lineage else None,
            }
        )
    return points
