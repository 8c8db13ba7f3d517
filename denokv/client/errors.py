"""Exceptions raised by the Python client. Each message says what to do about it."""

from __future__ import annotations


class KvError(Exception):
    """Base class of every error this package raises on purpose."""


class KvValidationError(KvError, ValueError):
    """The call was refused before anything was sent (a key, value or limit is out of range)."""


class KvConnectError(KvError):
    """The server refused the request (4xx): retrying the same call will not help."""

    def __init__(self, url: str, status: int, body: str) -> None:
        super().__init__(f"KV Connect failed to call '{url}' (status={status}): {body}")
        self.url = url
        self.status = status
        self.body = body


class KvMetadataError(KvError):
    """The metadata exchange failed: check the URL and the access token."""


class KvUnavailableError(KvError):
    """The server could not be reached (or kept failing) within the retry deadline."""


class KvWriteDisabledError(KvError):
    """This database does not accept writes here (a read-only server or replica)."""

    def __init__(self) -> None:
        super().__init__("Writes are disabled for this database")


class KvReadDisabledError(KvError):
    def __init__(self, message: str = "Reads are disabled for this database") -> None:
        super().__init__(message)


class KvClosedError(KvError):
    def __init__(self) -> None:
        super().__init__("the database is closed")


class KvQueueError(KvError):
    """Queues are not available on this backend (KV Connect has no dequeue call)."""
