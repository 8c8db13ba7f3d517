"""Checking that a generation's log segments form one unbroken history.

Every segment our shipper writes names the last versionstamp12 of the segment
before it (`previous_versionstamp`; the first names the snapshot's point). A
reader walks the segments in key order keeping the tail of what it accepted:

- a segment that follows the tail is accepted;
- a segment that ends at or before the tail is a repeat (a crash between upload
  and trim ships the same entries again) and is skipped;
- a segment that starts from an earlier point and runs past the tail is a
  repeat that grew; what it holds up to the tail must be exactly what was
  accepted there, or two histories were written into one generation (a fork);
- a segment that follows a point past the tail means segments are missing (a gap).

Segments written before the field existed carry no link; they are accepted as
their names order them, without gap detection.
"""

from __future__ import annotations

from collections.abc import Callable

from timemachine.codec import LogEntry

Seen = Callable[[bytes, bytes], set[bytes]]
"""The versionstamps accepted so far in (after12, through12]."""


class ChainError(Exception):
    """A generation's log has a gap or holds two histories."""


class Chain:
    def __init__(self, generation: str, base12: bytes, seen: Seen | None = None) -> None:
        self.generation = generation
        self.tail = base12
        self._seen = seen
        self.unlinked = 0  # segments accepted without a link (older format)

    def accept(self, key: str, previous12: bytes | None, entries: list[LogEntry]) -> list[LogEntry]:
        """The entries of this segment that extend the history; raises ChainError."""
        if not entries:
            return []
        last = entries[-1].versionstamp12
        if last <= self.tail:
            return []
        if previous12 is None:
            self.unlinked += 1
        elif previous12 > self.tail:
            raise ChainError(
                f"generation {self.generation}: a log segment is missing before {key}: "
                f"it follows {previous12.hex()}, but the log before it ends at {self.tail.hex()}"
            )
        elif previous12 < self.tail:
            self._check_overlap(key, previous12, entries)
        fresh = [e for e in entries if e.versionstamp12 > self.tail]
        self.tail = last
        return fresh

    def _check_overlap(self, key: str, previous12: bytes, entries: list[LogEntry]) -> None:
        if self._seen is None:
            return
        mine = {e.versionstamp12 for e in entries if e.versionstamp12 <= self.tail}
        accepted = self._seen(previous12, self.tail)
        if mine != accepted:
            raise ChainError(
                f"generation {self.generation}: {key} holds a different history than the "
                f"segments before it between {previous12.hex()} and {self.tail.hex()}"
            )
