"""Versionstamps, in their two forms, and the conversions between them and versions.

- A **versionstamp** (10 bytes) names a commit: the 8-byte big-endian version
  of the commit, then a 2-byte sequence (always zero in our files and Deno's).
  It is what clients see (KV_FACTS §3).
- A **versionstamp12** (12 bytes) names one change inside a commit in the redo
  log and the backup: the commit's versionstamp, then a 2-byte index. The last
  change of a commit ends in `ffff` (a *boundary*: a consistent state ends
  there), so `stamp ‖ ffff` stands for "after the whole commit" (KV_FACTS §12.3).

Byte order is time order in both forms, so they compare as bytes.
"""

from __future__ import annotations

BOUNDARY = b"\xff\xff"  # the index of a commit's last change
ZERO = bytes(10)
ZERO12 = bytes(12)
MAX12 = b"\xff" * 12  # after everything: "the latest"


def from_version(version: int, seq: int = 0) -> bytes:
    """The versionstamp of a commit at `version`."""
    return version.to_bytes(8, "big") + seq.to_bytes(2, "big")


def version_of(stamp: bytes) -> int:
    """The version of a versionstamp (10 bytes) or a versionstamp12."""
    return int.from_bytes(stamp[:8], "big")


def seq_of(stamp: bytes) -> int:
    """The sequence bytes of a 10-byte versionstamp."""
    return int.from_bytes(stamp[8:10], "big")


def commit_of(stamp12: bytes) -> bytes:
    """The commit (10 bytes) a versionstamp12 belongs to."""
    return stamp12[:10]


def after(stamp: bytes) -> bytes:
    """The versionstamp12 right after the whole commit `stamp` (10 bytes)."""
    return stamp[:10] + BOUNDARY


def start_of(stamp: bytes) -> bytes:
    """The versionstamp12 of the first change of the commit `stamp` (10 bytes)."""
    return stamp[:10] + b"\x00\x00"


def change(stamp: bytes, index: int, last: bool) -> bytes:
    """The versionstamp12 of the `index`-th change of a commit (`last`: its boundary)."""
    return stamp[:10] + (0xFFFF if last else index).to_bytes(2, "big")


def is_boundary(stamp12: bytes) -> bool:
    return stamp12.endswith(BOUNDARY)


def just_before(stamp12: bytes) -> bytes:
    """The largest versionstamp12 below `stamp12` (for a `> after` lookup of it)."""
    n = int.from_bytes(stamp12, "big")
    return max(0, n - 1).to_bytes(12, "big")


def parse(text: str) -> bytes:
    """A 20-hex-digit versionstamp; ValueError for anything else."""
    stamp = bytes.fromhex(text)
    if len(stamp) != 10:
        raise ValueError(f"{text!r} is not a 10-byte versionstamp")
    return stamp
