"""Atomic writes the engine-level tests commit: numbered, so a test can say which it expects."""

from __future__ import annotations

from denokv.operations import AtomicWrite, Mutation, MutationKind, ValueEncoding


def put(i: int) -> AtomicWrite:
    """Set key `k<i>` (a one-part key, as Deno encodes it) to the bytes `v<i>`."""
    key = b"\x02k%d\x00" % i
    return AtomicWrite(
        mutations=(Mutation(key, MutationKind.SET, b"v%d" % i, ValueEncoding.BYTES),)
    )
