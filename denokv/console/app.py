"""The console's HTTP side: a small ASGI app that `KvServer` hands every `/console...` request.

The page itself is static (HTML, plain JavaScript modules, CSS shipped in this
package); everything it shows comes from the JSON API under `/console/api/`.
Every response carries a strict Content-Security-Policy (scripts only from the
console's own files, nothing inline) and the page renders stored data only as
text nodes, so a value holding markup stays markup-shaped text.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from denokv import limits as L
from denokv import texts as T
from denokv.console import live
from denokv.console.data import (
    PAGE_DEFAULT,
    Conflict,
    ConsoleData,
    entry_json,
    key_json,
    value_from_editor,
)
from denokv.console.health import Sampler, health, role
from denokv.console.literal import LiteralError, parse_key
from denokv.console.session import Sessions, check_same_origin, cookie_header
from denokv.console.transfer import ImportLineError, parse_import
from denokv.engine_errors import EngineUnavailable, WriteError
from denokv.keys import KeyCodecError, decode_key, encode_key
from denokv.server.errors import HttpError
from denokv.server.pipeline import error_reply
from denokv.validation import MAX_TIMESTAMP_MS

if TYPE_CHECKING:
    from denokv.console.host import ConsoleHost

MODES = ("read-write", "read-only", "off")
DEFAULT_MODE = "read-only"
MAX_IMPORT_BODY = 64 * 1024 * 1024
MAX_JSON_BODY = 1024 * 1024
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}  # fmt: skip

Handler = Callable[[Request], Awaitable[Response]]


def console_app(server: ConsoleHost, mode: str) -> Console | None:
    """The console for `server` in `mode` (see MODES), or None when it is off."""
    if mode not in MODES:
        raise ValueError(f"console mode must be one of {', '.join(MODES)}, not {mode!r}")
    return None if mode == "off" else Console(server, writable=mode == "read-write")


def _static_files() -> dict[str, bytes]:
    root = resources.files("denokv.console") / "static"
    return {f.name: f.read_bytes() for f in root.iterdir() if f.is_file()}


class Console:
    def __init__(self, server: ConsoleHost, writable: bool) -> None:
        self.server = server
        self.writable = writable
        self.sessions = Sessions(server.auth, server.config.access_token)
        self.data = ConsoleData(server, writable)
        self.sampler = Sampler(server)
        self.files = _static_files()
        api = [
            ("/login", self.login, "POST", False), ("/logout", self.logout, "POST", False),
            ("/session", self.session, "GET", True), ("/entries", self.entries, "GET", True),
            ("/entry", self.entry, "GET", True), ("/set", self.set, "POST", True),
            ("/delete", self.delete, "POST", True), ("/watch", self.watch, "POST", True),
            ("/export", self.export, "GET", True), ("/import", self.import_, "POST", True),
            ("/health", self.health, "GET", True),
        ]  # fmt: skip
        routes = [
            Route("/console", self.redirect, methods=["GET"]),
            Route("/console/", self.index, methods=["GET"]),
            Route("/console/static/{name}", self.static, methods=["GET"]),
            *[Route("/console/api" + path, self._guard(handler, auth), methods=[method])
              for path, handler, method, auth in api],
        ]  # fmt: skip
        self._app = Starlette(
            routes=routes, exception_handlers={404: _not_found, 405: _method_not_allowed}
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.sampler.ensure_running()
        await self._app(scope, receive, send)

    # -- plumbing -------------------------------------------------------------------------

    def _guard(self, handler: Handler, auth: bool) -> Handler:
        """Sign-in check, then errors as plain-text answers; security headers on everything."""

        async def endpoint(request: Request) -> Response:
            try:
                if auth:
                    self.sessions.authorize(
                        request.headers, request.cookies, changes=request.method != "GET"
                    )
                    if self.server.closing:
                        raise HttpError(503, T.UNAVAILABLE)
                response = await handler(request)
            except HttpError as exc:
                response = PlainTextResponse(exc.text, exc.status)
            except Conflict as exc:
                response = _json({"error": "conflict", "message": CONFLICT, "current": exc.current},
                                 409)  # fmt: skip
            except EngineUnavailable as exc:
                response = PlainTextResponse(str(exc), 503)
            except WriteError as exc:  # the engine refused the write: nothing was written
                response = PlainTextResponse(str(exc), 400)
            except ClientDisconnect:
                response = PlainTextResponse("client disconnected", 400)
            except Exception as exc:  # a bug or a database error: logged once, as on the data path
                reply = error_reply(exc, request.url.path)
                assert reply is not None  # only ClientGone has no answer, and it is not raised here
                status, content_type, body = reply
                response = Response(body, status, media_type=content_type)
            return _secure(response)

        return endpoint

    def _readable(self) -> None:
        """Data reads wait like the data path does (a replica still loading its snapshot)."""
        not_ready = self.server.config.not_ready
        if not_ready is not None and (reason := not_ready()):
            raise HttpError(503, reason)

    # -- the page ---------------------------------------------------------------------------

    async def redirect(self, request: Request) -> Response:
        return _secure(RedirectResponse("/console/", 308))

    async def index(self, request: Request) -> Response:
        return await self.static_file("index.html")

    async def static(self, request: Request) -> Response:
        return await self.static_file(request.path_params["name"])

    async def static_file(self, name: str) -> Response:
        body = self.files.get(name)
        suffix = name[name.rfind(".") :] if "." in name else ""
        if body is None or suffix not in _TYPES:
            return _secure(PlainTextResponse(T.NOT_FOUND, 404))
        response = _secure(Response(body, media_type=_TYPES[suffix]))
        response.headers["cache-control"] = "no-cache"
        return response

    # -- sign-in ----------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        check_same_origin(request.headers)
        body = await _json_body(request)
        cookie = self.sessions.sign_in(body.get("token"))
        response = _json({"csrf": self.sessions.csrf(cookie), **self._about()})
        response.headers["set-cookie"] = cookie_header(cookie, request.url.scheme == "https")
        return response

    async def logout(self, request: Request) -> Response:
        check_same_origin(request.headers)
        response = _json({"ok": True})
        response.headers["set-cookie"] = cookie_header("", request.url.scheme == "https", 0)
        return response

    async def session(self, request: Request) -> Response:
        cookie = request.cookies.get("denokv_console", "")
        return _json({"csrf": self.sessions.csrf(cookie) if cookie else None, **self._about()})

    def _about(self) -> dict[str, Any]:
        config = self.server.config
        writes = "forwarded" if config.forwarder is not None else (
            "local" if config.accept_writes and not self.server.engine.read_only else "disabled"
        )  # fmt: skip
        return {"role": role(self.server), "writable": self.writable, "writes": writes}

    # -- reading ----------------------------------------------------------------------------

    async def entries(self, request: Request) -> Response:
        self._readable()
        q = request.query_params
        prefix = _key_text(q.get("prefix", "[]"), "prefix")
        start = _key_text(q["start"], "start key") if q.get("start") else None
        page = await self.data.page(
            prefix, start=start, after=_hex(q.get("after")), before=_hex(q.get("before")),
            limit=_int(q.get("limit"), PAGE_DEFAULT),
        )  # fmt: skip
        rows = [entry_json(e, x) for e, x in zip(page.entries, page.expiries, strict=True)]
        return _json({
            "prefix": key_json(page.prefix), "entries": rows,
            "more_before": page.more_before, "more_after": page.more_after,
        })  # fmt: skip

    async def entry(self, request: Request) -> Response:
        self._readable()
        key = self._key_param(request.query_params)
        entry, expiry = await self.data.entry(key)
        if entry is None:
            return _json({"key": key_json(key), "absent": True})
        return _json(entry_json(entry, expiry, full=True))

    def _key_param(self, params: Any) -> bytes:
        if params.get("key") is not None:
            key = _hex(params.get("key"))
            assert key is not None
            try:
                decode_key(key)  # the page shows the key it asked for
            except KeyCodecError as exc:
                raise HttpError(400, f"Cannot read the key: {exc}") from None
            return key
        text = params.get("key_text") or ""
        if not isinstance(text, str):
            raise HttpError(400, "key_text must be a string, such as '[\"users\", 1n]'.")
        return _key_text(text, "key")

    async def export(self, request: Request) -> Response:
        self._readable()
        prefix = _key_text(request.query_params.get("prefix", "[]"), "prefix")
        lines = (line.encode() async for line in self.data.export(prefix))
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        return StreamingResponse(lines, media_type="application/x-ndjson", headers={
            "content-disposition": f'attachment; filename="denokv-export-{stamp}.jsonl"',
        })  # fmt: skip

    async def watch(self, request: Request) -> Response:
        self._readable()
        body = await _json_body(request)
        keys = [_hex(k) or b"" for k in _list(body, "keys")]
        stamps = body.get("versionstamps")
        known = None
        if isinstance(stamps, list) and len(stamps) == len(keys):  # what the page already shows
            known = {k: _hex(s) for k, s in zip(keys, stamps, strict=True)}
        keys += [_key_text(t, "key") for t in _list(body, "key_texts") if isinstance(t, str)]
        if not keys or len(keys) > live.MAX_KEYS:
            raise HttpError(400, f"Watch between 1 and {live.MAX_KEYS} keys.")
        closing = lambda: self.server.closing  # noqa: E731
        stream = live.entry_stream(self.server.engine, keys, closing, known)
        return StreamingResponse(stream, media_type="application/x-ndjson")

    async def health(self, request: Request) -> Response:
        return _json(health(self.server, self.sampler))

    # -- writing ----------------------------------------------------------------------------

    def _write_key(self, body: dict[str, Any]) -> bytes:
        key = self._key_param(body)
        if not key:
            raise HttpError(400, "key cannot be empty")  # Deno's rule for mutations
        return key

    async def set(self, request: Request) -> Response:
        body = await _json_body(request)
        key = self._write_key(body)
        value = value_from_editor(body.get("type"), body.get("text", ""))
        expire_in = body.get("expire_in_ms")
        if expire_in is not None and (type(expire_in) is not int or expire_in <= 0):
            raise HttpError(400, "expireIn must be a positive number of milliseconds.")
        expire_at = int(time.time() * 1000) + expire_in if expire_in else 0
        if expire_at > MAX_TIMESTAMP_MS:  # past the last time a write may name
            raise HttpError(400, T.INVALID_EXPIRE_AT)
        stamp = await self.data.set(key, value, _expect(body), expire_at)
        return _json({"ok": True, "versionstamp": stamp.hex(), "key": key_json(key)})

    async def delete(self, request: Request) -> Response:
        body = await _json_body(request)
        key = self._write_key(body)
        stamp = await self.data.delete(key, _expect(body))
        return _json({"ok": True, "versionstamp": stamp.hex(), "key": key_json(key)})

    async def import_(self, request: Request) -> Response:
        try:
            text = (await _read_limited(request, MAX_IMPORT_BODY)).decode("utf-8")
        except UnicodeDecodeError:
            raise HttpError(400, "Nothing was imported: the file is not UTF-8 text.") from None
        try:
            entries = parse_import(text)
        except ImportLineError as exc:
            raise HttpError(400, f"Nothing was imported: {exc}") from None
        for e in entries:
            if len(e.key) > L.MAX_WRITE_KEY_SIZE:
                raise HttpError(400, f"Nothing was imported: {T.KEY_TOO_LARGE}")
            if len(e.value) > L.MAX_VALUE_SIZE:
                raise HttpError(400, f"Nothing was imported: {T.VALUE_TOO_LARGE}")
        report = await self.data.import_entries(entries, int(time.time() * 1000))
        return _json(report, report.pop("status", 200))


async def _not_found(request: Request, exc: Exception) -> Response:
    return _secure(PlainTextResponse(T.NOT_FOUND, 404))


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return _secure(PlainTextResponse("Method not allowed.", 405))


CONFLICT = "The entry changed since the page showed it; nothing was written."


def _secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _json(body: Any, status: int = 200) -> Response:
    # ensure_ascii: stored strings may hold lone surrogates, which UTF-8 cannot carry.
    return Response(json.dumps(body), status, media_type="application/json")


async def _read_limited(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, T.BODY_TOO_LARGE)
        chunks.append(chunk)
    return b"".join(chunks)


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await _read_limited(request, MAX_JSON_BODY)
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise HttpError(400, "The request body is not JSON.") from None
    if not isinstance(body, dict):
        raise HttpError(400, "The request body must be a JSON object.")
    return body


def _list(body: dict[str, Any], name: str) -> list[Any]:
    value = body.get(name, [])
    if not isinstance(value, list):
        raise HttpError(400, f"{name} must be a list.")
    return value


def _key_text(text: str, what: str) -> bytes:
    try:
        key = encode_key(parse_key(text))
    except (LiteralError, KeyCodecError) as exc:
        raise HttpError(400, f"Cannot read the {what}: {exc}") from None
    if len(key) > L.MAX_WRITE_KEY_SIZE:
        raise HttpError(400, T.KEY_TOO_LARGE)
    return key


def _hex(text: object) -> bytes | None:
    if text is None:
        return None
    if not isinstance(text, str):  # a JSON number or list where hex was due
        raise HttpError(400, "A key or cursor is not valid hex.")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise HttpError(400, "A key or cursor is not valid hex.") from None


def _int(text: str | None, default: int) -> int:
    if text is None:
        return default
    if not text.isdigit():
        raise HttpError(400, "limit must be a positive integer.")
    return int(text)


def _expect(body: dict[str, Any]) -> bytes | None:
    """The versionstamp the page showed (hex), or null for "the key must not exist"."""
    if "expect" not in body:
        raise HttpError(400, "Every edit needs the versionstamp the page showed (expect).")
    expect = body["expect"]
    if expect is None:
        return None
    stamp = _hex(expect) if isinstance(expect, str) else None
    if stamp is None or len(stamp) != 10:
        raise HttpError(400, T.INVALID_VERSIONSTAMP)
    return stamp
