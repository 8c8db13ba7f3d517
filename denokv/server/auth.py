"""Bearer-token and protocol-header checks, in upstream's order (KV_FACTS §7.3, §7.5).

Upstream has one shared secret and hands it back as the data-path token. We
accept a small set of secrets instead, so a token can be rotated without a
gap: put the new one beside the old (`--access-token-file`, one per line),
reload (SIGHUP), move the clients over, then drop the old one and reload
again. A request with a token no longer in the set gets 401 `Invalid access
token.`, on the metadata exchange and on the data path alike; Deno ≥ 2.9.1
answers a data-path 401 by redoing the metadata exchange once, so a client
that was given the new token carries on without an error.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Iterable
from typing import Protocol

from denokv import limits as L
from denokv import texts as T
from denokv.server.errors import HttpError


class Headers(Protocol):
    """A request's headers as each HTTP interface hands them over (a dict, granian's)."""

    def get(self, name: str, /) -> str | None: ...


NIL_DATABASE_ID = uuid.UUID(int=0)


class Authenticator:
    def __init__(self, access_tokens: str | Iterable[str],
                 database_id: uuid.UUID = NIL_DATABASE_ID) -> None:  # fmt: skip
        self._tokens: tuple[bytes, ...] = ()
        self.replace_tokens([access_tokens] if isinstance(access_tokens, str) else access_tokens)
        self.database_id = database_id
        self._id_spelling = str(database_id)

    def replace_tokens(self, tokens: Iterable[str]) -> None:
        """Accept exactly these tokens from now on (requests in flight are not affected)."""
        accepted = tuple(t.encode() for t in tokens)
        if not accepted:
            raise ValueError("at least one access token is required")
        self._tokens = accepted

    def check_bearer(self, header: str | None) -> str:
        """The accepted token the header carries; 401 if it carries none.

        Each comparison runs in constant time, and every accepted token is
        compared, so timing tells neither a token's bytes nor which one matched.
        """
        if header is None or not header.isascii() or not header.isprintable() or " " not in header:
            raise HttpError(401, T.MALFORMED_AUTH)
        scheme, _, token = header.partition(" ")
        presented = token.encode()
        matched = None
        for accepted in self._tokens:
            if hmac.compare_digest(presented, accepted):
                matched = token
        if scheme.lower() != "bearer" or matched is None:
            raise HttpError(401, T.INVALID_TOKEN)
        return matched

    def check_data_path(self, headers: Headers) -> int:
        """Validate a data-path request's headers; returns the protocol version (2 or 3)."""
        get = headers.get
        version = get("x-denokv-version")
        if version not in ("2", "3"):
            raise HttpError(400, T.EXPECTED_PROTOCOL)
        self.check_bearer(get("authorization"))
        raw_id = get("x-denokv-database-id")
        if raw_id != self._id_spelling:  # the spelling every client sends: no parsing
            try:
                database_id = uuid.UUID(raw_id) if raw_id else None
            except ValueError:
                database_id = None
            if database_id != self.database_id:
                raise HttpError(400, T.INVALID_DATABASE_ID)
        return int(version)


def parse_token_file(text: str) -> list[str]:
    """Tokens from an access-token file: one per line, blank lines ignored."""
    tokens = [line.strip() for line in text.splitlines()]
    tokens = [t for t in tokens if t]
    if not tokens:
        raise ValueError("the access token file holds no token")
    for t in tokens:
        if len(t.encode()) < L.MIN_ACCESS_TOKEN_LENGTH:
            raise ValueError(T.TOKEN_TOO_SHORT)
    return tokens


def read_token_file(path: str) -> list[str]:
    """The tokens in an access-token file (one per line); OSError or ValueError if unusable."""
    with open(path, encoding="utf-8") as f:
        return parse_token_file(f.read())
