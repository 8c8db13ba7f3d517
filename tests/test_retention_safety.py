"""Retention never costs a point inside the window, and never hides a failed delete
(issue 10, item 8).

Before lineage, retention counted a folder without a `differential` (an upload
cut short by a crash) as the generation the window starts in and deleted the
last complete one before it; and S3 `DeleteObjects` answers naming keys it
refused were ignored, so a generation was logged as deleted while its objects
stayed (the differential first, so what was left could not even be restored
as a generation).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.backup_proofs import (
    PREFIX,
    complete_generations,
    primary,
    run_cli,
    wait_shipped,
    write_phase,
)
from tests.support.dbfile import kv_rows
from tests.support.s3 import get_object, list_keys, put_object, s3_args
from tests.support.waiting import wait_until
from timemachine import layout

pytestmark = [pytest.mark.s3, pytest.mark.slow]


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def folders(endpoint: str, bucket: str) -> set[str]:
    return {k.split("/")[-3 if "/snapshots/" in k or "/logs/" in k else -2]
            for k in list_keys(endpoint, bucket, PREFIX + "generations/")}  # fmt: skip


def test_a_half_uploaded_generation_does_not_cost_the_one_the_window_starts_in(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    srv = primary(tmp_path, endpoint, bucket).start()
    try:
        wait_until(lambda: len(complete_generations(endpoint, bucket)) == 1, 30, "a generation")
        (first,) = complete_generations(endpoint, bucket)
        write_phase(srv, 0)
        started = layout.generation_time_ms(first) / 1000
        time.sleep(max(0.0, started + 8 - time.time()))
        write_phase(srv, 1)
        wait_shipped(srv.db_path)
        point, expected = time.time(), kv_rows(srv.db_path)
    finally:
        assert srv.stop() == 0
    # A rotation that crashed half-way, dated just after the first generation: a
    # snapshot object, no differential.
    half = layout.new_generation(int((started + 0.3) * 1000))
    snapshot = next(k for k in list_keys(endpoint, bucket, PREFIX) if "/snapshots/" in k)
    put_object(
        endpoint, bucket, snapshot.replace(first, half), get_object(endpoint, bucket, snapshot)
    )

    # The same file again, rotating at once, with a window that opens after the
    # half-uploaded generation's date and before `point`: `point` must stay
    # restorable, and only the first generation holds it.
    retention = time.time() - (started + 2)
    srv.extra_args += ["--s3-snapshot-interval", "5s", "--s3-retention", f"{retention:.3f}s"]
    srv.start()
    try:
        wait_until(lambda: len(complete_generations(endpoint, bucket)) >= 2, 30, "a rotation")
        # A retention pass ran once it removed one of the two older folders.
        wait_until(lambda: not {first, half} <= folders(endpoint, bucket), 30, "retention")
    finally:
        assert srv.stop() == 0
    assert time.time() - retention < point, "the test took too long: the point left the window"
    done = run_cli(tmp_path / "at-point.sqlite", "pitr", "restore", "--at", rfc3339(point),
                   *s3_args(endpoint, bucket, PREFIX))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"from generation {first}" in done.stdout
    assert kv_rows(tmp_path / "at-point.sqlite") == expected
    assert first in complete_generations(endpoint, bucket)


# -- a DeleteObjects answer that names a key it refused -------------------------------------


class RefusingProxy:
    """HTTP in front of moto that refuses to delete one key, the way S3 does it.

    Every request is forwarded, except a DeleteObjects (`POST /bucket?delete`)
    naming `refused`: that one gets 200 with a `DeleteResult` holding an
    `<Error>` (AccessDenied) for the key, as S3 answers a key that a bucket
    policy or an object lock protects. (Only a request naming that key alone is
    expected: the shipper deletes a generation's differential by itself.)
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.refused: str | None = None
        self.refusals = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                proxy.handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        if "chunked" in req.headers.get("transfer-encoding", ""):
            req.send_error(501, "chunked bodies are not proxied")
            return
        body = req.rfile.read(int(req.headers.get("content-length") or 0))
        if req.command == "POST" and "?delete" in req.path and self._names_refused(body):
            self.refusals += 1
            self._answer(req, 200, _delete_refused(self.refused or ""))
            return
        assert self.upstream.hostname is not None
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        try:
            headers = {k: v for k, v in req.headers.items() if k.lower() != "connection"}
            conn.request(req.command, req.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            req.send_response(resp.status)
            for name, value in resp.getheaders():
                if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                    req.send_header(name, value)
            req.send_header("Content-Length", str(len(data)))
            req.end_headers()
            if req.command != "HEAD":
                req.wfile.write(data)
        finally:
            conn.close()

    def _names_refused(self, body: bytes) -> bool:
        return self.refused is not None and f"<Key>{self.refused}</Key>".encode() in body

    @staticmethod
    def _answer(req: BaseHTTPRequestHandler, status: int, data: bytes) -> None:
        req.send_response(status)
        req.send_header("Content-Type", "application/xml")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def __enter__(self) -> RefusingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _delete_refused(key: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<Error><Key>{key}</Key><Code>AccessDenied</Code><Message>Access Denied</Message>"
        "</Error></DeleteResult>"
    ).encode()


@pytest.fixture
def refusing_proxy(s3_bucket: tuple[str, str]) -> Iterator[tuple[RefusingProxy, str]]:
    endpoint, bucket = s3_bucket
    with RefusingProxy(endpoint) as proxy:
        yield proxy, bucket


def s3_errors(url: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("denokv_s3_errors"):
            return float(line.rpartition(" ")[2])
    return 0.0


def test_a_refused_delete_is_counted_logged_and_not_reported_as_done(
    tmp_path: Path, s3_bucket: tuple[str, str], refusing_proxy: tuple[RefusingProxy, str]
) -> None:
    endpoint, bucket = s3_bucket
    proxy, _ = refusing_proxy
    srv = primary(tmp_path, proxy.endpoint, bucket).start()
    try:
        wait_until(lambda: len(complete_generations(endpoint, bucket)) == 1, 30, "a generation")
        (first,) = complete_generations(endpoint, bucket)
        write_phase(srv, 0)
        wait_shipped(srv.db_path)
    finally:
        assert srv.stop() == 0
    kept = list_keys(endpoint, bucket, layout.generation_prefix(PREFIX, first))
    # Retention may now delete the first generation, but the store refuses its differential.
    proxy.refused = layout.differential_key(PREFIX, first)
    srv.extra_args += ["--s3-snapshot-interval", "1s", "--s3-retention", "1s"]
    srv.start()
    try:
        wait_until(lambda: proxy.refusals >= 1, 30, "retention tried to delete the generation")
        reported = f"retention: deleted generation {first}"
        wait_until(lambda: s3_errors(srv.url) >= 1 or reported in srv.logs(), 30, "an outcome")
        errors = s3_errors(srv.url)
    finally:
        assert srv.stop() == 0
    logs = srv.logs()
    assert reported not in logs
    assert errors >= 1
    assert "AccessDenied" in logs and proxy.refused in logs, logs[-3000:]
    # The refusal stopped the deletion: every object of the generation is still there.
    assert list_keys(endpoint, bucket, layout.generation_prefix(PREFIX, first)) == kept
    assert first in complete_generations(endpoint, bucket)
