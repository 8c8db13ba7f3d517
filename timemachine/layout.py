"""Object names of a backup (KV_FACTS §12.1), one folder per generation:

    <prefix>generations/<generation>/differential
    <prefix>generations/<generation>/snapshots/0001_<monoseq>_<seq>.bin
    <prefix>generations/<generation>/logs/0001_<monoseq>_<first-vs12>_<last-vs12>.bin

Inside a generation the layout is Deno KV's backup layout, so a generation
folder can be given to upstream's replica as its prefix. Generation names
start with the snapshot's time, so they sort in time order.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

FORMAT_VERSION = 1


class LayoutError(ValueError):
    pass


@dataclass(frozen=True, slots=True, order=True)
class LogName:
    monoseq: int
    first12: bytes
    last12: bytes

    def object_name(self) -> str:
        return (
            f"{FORMAT_VERSION:04x}_{self.monoseq:016x}_{self.first12.hex()}_{self.last12.hex()}.bin"
        )


@dataclass(frozen=True, slots=True, order=True)
class SnapshotName:
    monoseq: int
    seq: int

    def object_name(self) -> str:
        return f"{FORMAT_VERSION:04x}_{self.monoseq:016x}_{self.seq:016x}.bin"


def new_generation(snapshot_time_ms: int) -> str:
    """`<ms since epoch, 13 digits>-<random>`: sorts by time, unique across primaries."""
    return f"{snapshot_time_ms:013d}-{secrets.token_hex(4)}"


def generation_time_ms(generation: str) -> int:
    head, _, _ = generation.partition("-")
    if not head.isdigit():
        raise LayoutError(f"not a generation name: {generation!r}")
    return int(head)


def generations_prefix(prefix: str) -> str:
    return f"{prefix}generations/"


def generation_prefix(prefix: str, generation: str) -> str:
    return f"{prefix}generations/{generation}/"


def differential_key(prefix: str, generation: str) -> str:
    return generation_prefix(prefix, generation) + "differential"


def snapshot_key(prefix: str, generation: str, name: SnapshotName) -> str:
    return generation_prefix(prefix, generation) + "snapshots/" + name.object_name()


def log_key(prefix: str, generation: str, name: LogName) -> str:
    return generation_prefix(prefix, generation) + "logs/" + name.object_name()


def parse_log_name(object_name: str) -> LogName:
    fields = _fields(object_name)
    if len(fields) != 4:
        raise LayoutError(f"invalid log object name {object_name!r}")
    try:
        monoseq = int(fields[1], 16)
        first, last = bytes.fromhex(fields[2]), bytes.fromhex(fields[3])
    except ValueError:
        raise LayoutError(f"invalid log object name {object_name!r}") from None
    if len(first) != 12 or len(last) != 12:
        raise LayoutError(f"invalid versionstamps in log object name {object_name!r}")
    return LogName(monoseq, first, last)


def parse_snapshot_name(object_name: str) -> SnapshotName:
    fields = _fields(object_name)
    if len(fields) != 3:
        raise LayoutError(f"invalid snapshot object name {object_name!r}")
    try:
        return SnapshotName(int(fields[1], 16), int(fields[2], 16))
    except ValueError:
        raise LayoutError(f"invalid snapshot object name {object_name!r}") from None


def _fields(object_name: str) -> list[str]:
    base = object_name.rsplit("/", 1)[-1]
    if not base.endswith(".bin"):
        raise LayoutError(f"not a backup object: {object_name!r}")
    fields = base[: -len(".bin")].split("_")
    if len(fields[0]) != 4 or fields[0] not in ("0000", "0001"):
        raise LayoutError(f"invalid format version in {object_name!r}")
    return fields
