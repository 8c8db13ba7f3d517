"""What the engine is asked to do and what it answers, independent of any wire format."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple


class ValueEncoding(IntEnum):
    V8 = 1
    LE64 = 2
    BYTES = 3


class MutationKind(IntEnum):
    SET = 1
    DELETE = 2
    SUM = 3
    MAX = 4
    MIN = 5
    SET_SUFFIX_VERSIONSTAMPED_KEY = 9


class WriteStatus(IntEnum):
    SUCCESS = 1
    CHECK_FAILURE = 2
    WRITE_DISABLED = 5


NO_EXPIRY = -1


class ReadRange(NamedTuple):
    """Keys start <= key < end, at most `limit`, in key order or reversed.

    A named tuple rather than a dataclass: every read builds one per range,
    and a tuple is built in half the time.
    """

    start: bytes
    end: bytes
    limit: int
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class Entry:
    key: bytes
    value: bytes
    encoding: int
    versionstamp: bytes


@dataclass(frozen=True, slots=True)
class Check:
    key: bytes
    versionstamp: bytes | None  # None: the key must not exist


@dataclass(frozen=True, slots=True)
class Mutation:
    key: bytes
    kind: MutationKind
    value: bytes = b""
    encoding: int = ValueEncoding.V8
    expire_at_ms: int = NO_EXPIRY
    sum_min: bytes = b""
    sum_max: bytes = b""
    sum_clamp: bool = False


@dataclass(frozen=True, slots=True)
class Enqueue:
    payload: bytes
    deadline_ms: int
    keys_if_undelivered: tuple[bytes, ...] = ()
    backoff_schedule: tuple[int, ...] | None = None  # None: the default schedule


@dataclass(frozen=True, slots=True)
class AtomicWrite:
    checks: tuple[Check, ...] = ()
    mutations: tuple[Mutation, ...] = ()
    enqueues: tuple[Enqueue, ...] = ()


@dataclass(frozen=True, slots=True)
class WriteResult:
    status: WriteStatus
    versionstamp: bytes = b""
    failed_checks: tuple[int, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.status is WriteStatus.SUCCESS
