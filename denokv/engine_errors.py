"""What the engine raises when it refuses or cannot take a request.

Two kinds, because the server answers them differently and Deno retries one of them
forever: `WriteError` (the write itself is wrong: HTTP 400, never retried) and
`EngineUnavailable` with its kinds (this process cannot take it now: HTTP 503, retried).
Apart from `operations.py` (what is asked and answered), so a module that only catches
errors need not know the request types.
"""

from __future__ import annotations

from denokv.texts import UNAVAILABLE


class WriteError(Exception):
    """A write the engine refused or could not apply; nothing of it was written.

    str(exc) is the text the client is shown (HTTP 400, `KvValidationError` in the
    embedded client): retrying the same write will not help.
    """


class DatabaseUnusable(Exception):
    """The database file cannot be opened, or is not a Deno KV database at a schema
    this server reads: a problem for whoever runs the server, found before serving."""

    def __init__(self, path: str, cause: BaseException) -> None:
        super().__init__(f"cannot open the database {path}: {cause}")


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
