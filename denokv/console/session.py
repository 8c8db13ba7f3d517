"""Console sign-in: the access token once, then an HttpOnly session cookie and a CSRF token.

The token is checked exactly as the data path checks it (same 401 and text) and
is never stored: the cookie carries an issue time, a nonce and an HMAC under a
key derived from the token, so every process serving the same token accepts it,
and changing the token signs everyone out. Scripts cannot read the cookie
(HttpOnly) and other sites cannot send it (SameSite=Strict); every call that
changes something must also carry the CSRF token, which is derived from the
cookie and which only the console's own page can learn (from `/api/session`,
behind the same-origin policy). Calls may instead carry `Authorization: Bearer
<token>`, which a browser never adds by itself, so they need no CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

from denokv import texts as T
from denokv.server.auth import Authenticator
from denokv.server.errors import HttpError

COOKIE = "denokv_console"
SESSION_SECONDS = 12 * 3600
CSRF_HEADER = "x-csrf-token"
NOT_SIGNED_IN = "Sign in with the access token."
BAD_CSRF = "Missing or wrong CSRF token; reload the console."
CROSS_SITE = "Cross-site requests are refused."


class Sessions:
    def __init__(self, auth: Authenticator, access_token: str) -> None:
        self._auth = auth
        self._key = hmac.new(access_token.encode(), b"denokv console session v1", "sha256").digest()

    def sign_in(self, token: object) -> str:
        """Check a token typed into the sign-in form; returns the new cookie value."""
        if not isinstance(token, str):
            raise HttpError(401, T.MALFORMED_AUTH)
        self._auth.check_bearer(f"Bearer {token}")
        return self.issue()

    def issue(self, now: float | None = None) -> str:
        issued = int((time.time() if now is None else now) * 1000)
        body = f"{issued}.{secrets.token_urlsafe(16)}"
        return f"{body}.{self._mac(body)}"

    def valid(self, cookie: str | None, now: float | None = None) -> bool:
        if not cookie or cookie.count(".") != 2:
            return False
        body, _, mac = cookie.rpartition(".")
        if not hmac.compare_digest(mac, self._mac(body)):
            return False
        issued = int(body.partition(".")[0])
        age = (time.time() if now is None else now) - issued / 1000
        return 0 <= age <= SESSION_SECONDS

    def csrf(self, cookie: str) -> str:
        return self._mac("csrf." + cookie)

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()[:43]

    def authorize(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], changes: bool
    ) -> None:
        """Admit a console API call, or raise the 401/403 the page shows."""
        bearer = headers.get("authorization")
        if bearer is not None:
            self._auth.check_bearer(bearer)
            return
        cookie = cookies.get(COOKIE)
        if not self.valid(cookie):
            raise HttpError(401, NOT_SIGNED_IN)
        if changes:
            check_same_origin(headers)
            sent = headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), self.csrf(cookie or "").encode()):
                raise HttpError(403, BAD_CSRF)


def check_same_origin(headers: Mapping[str, str]) -> None:
    """Refuse what a browser marks as sent from another site (defence beside the CSRF token)."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        if site not in ("same-origin", "none"):
            raise HttpError(403, CROSS_SITE)
        return
    # Older browsers: compare Origin with Host (a proxy that rewrites Host breaks this).
    origin = headers.get("origin")
    host = headers.get("host")
    if origin is not None and host is not None and origin.partition("://")[2] != host:
        raise HttpError(403, CROSS_SITE)


def cookie_header(value: str, secure: bool, max_age: int = SESSION_SECONDS) -> str:
    flags = f"Path=/console/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    return f"{COOKIE}={value}; {flags}{'; Secure' if secure else ''}"
