"""Bearer-token and protocol-header checks, in upstream's order (KV_FACTS §7.3, §7.5)."""

from __future__ import annotations

import hmac
import uuid

from denokv import limits as L
from denokv.server.errors import HttpError

NIL_DATABASE_ID = uuid.UUID(int=0)


class Authenticator:
    def __init__(self, access_token: str, database_id: uuid.UUID = NIL_DATABASE_ID) -> None:
        self._token = access_token.encode()
        self.database_id = database_id

    def check_bearer(self, header: str | None) -> None:
        """Compare the token in constant time so its bytes cannot be guessed by timing."""
        if header is None or not header.isascii() or not header.isprintable() or " " not in header:
            raise HttpError(401, L.MALFORMED_AUTH)
        scheme, _, token = header.partition(" ")
        ok = hmac.compare_digest(token.encode(), self._token)
        if scheme.lower() != "bearer" or not ok:
            raise HttpError(401, L.INVALID_TOKEN)

    def check_data_path(self, headers: dict[str, str] | object) -> int:
        """Validate a data-path request's headers; returns the protocol version (2 or 3)."""
        get = headers.get  # type: ignore[attr-defined]
        version = get("x-denokv-version")
        if version not in ("2", "3"):
            raise HttpError(400, L.EXPECTED_PROTOCOL)
        self.check_bearer(get("authorization"))
        raw_id = get("x-denokv-database-id")
        try:
            database_id = uuid.UUID(raw_id) if raw_id else None
        except ValueError:
            database_id = None
        if database_id != self.database_id:
            raise HttpError(400, L.INVALID_DATABASE_ID)
        return int(version)
