"""What the engine is asked to do and what it answers, independent of any wire format."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from denokv.limits import UNAVAILABLE


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


@dataclass(frozen=True, slots=True)
class ReadRange:
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


class WriteError(Exception):
    """A write the engine refused or could not apply; nothing of it was written.

    str(exc) is the text the client is shown (HTTP 400, `KvValidationError` in the
    embedded client): retrying the same write will not help.
    """


class EngineUnavailable(Exception):
    """The engine cannot take this request now; the same request may succeed later.

    str(exc) is the text the client is shown with HTTP 503 (Deno retries 503).
    """

    def __init__(self, text: str = UNAVAILABLE) -> None:
        super().__init__(text)


class EngineClosed(EngineUnavailable):
    """The engine is shutting down; the request may be retried elsewhere."""


class WriterStopped(EngineUnavailable):
    """The writer thread is gone; no write can be taken until the process restarts."""


class StorageFault(EngineUnavailable):
    """SQLite could not write (disk full, I/O error, the file locked by another process).

    `kind` names the condition for logs and metrics; writes resume by themselves
    once it clears.
    """

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind
