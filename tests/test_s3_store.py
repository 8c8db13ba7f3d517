"""S3Store's own behaviour: errors that name the operation and the object, per-key
DeleteObjects failures, 409 conflicts, and which checksums go on the wire.

Real servers where they can show it (moto, moto behind the fault proxy, a closed port);
where no local server can be made to answer that way (per-key delete errors, a 409
ConditionalRequestConflict, a PUT answer without an ETag) a small HTTP responder on
127.0.0.1 plays S3's part, so the real botocore/aiobotocore stack parses a real
response. It also records request headers, which is how the checksum settings are
checked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.fault_proxy import FaultProxy
from tests.support.ports import free_port
from tests.support.s3 import ACCESS_KEY_ID, SECRET_ACCESS_KEY, create_bucket, unique_bucket_name
from timemachine.s3 import S3Options, S3Store
from timemachine.store import DeleteError, ObjectNotFound, ObjectStoreError


def options(endpoint: str | None, bucket: str, **extra: Any) -> S3Options:
    return S3Options(
        bucket,
        "p/",
        endpoint,
        "us-east-1",
        force_path_style=True,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        **extra,
    )


# --------------------------------------------------------------------------- responder


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class Responder:
    """A plain HTTP server on 127.0.0.1 that answers with `answer(request)` and keeps
    every request it saw."""

    def __init__(self, answer: Callable[[Seen], Answer]) -> None:
        self.answer = answer
        self.seen: list[Seen] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = Seen(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                outer.seen.append(seen)
                reply = outer.answer(seen)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Responder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def s3_error(status: int, code: str, message: str) -> Answer:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error>"
    ).encode()
    return Answer(status, {"Content-Type": "application/xml"}, body)


def plain_put_answer(seen: Seen) -> Answer:
    if seen.method == "GET":
        return Answer(200, {"ETag": '"e1"', "Content-Type": "application/octet-stream"}, b"x")
    return Answer(200, {"ETag": '"e1"'})


# --------------------------------------------------------------------------- errors


@pytest.mark.s3
async def test_missing_bucket_errors_name_operation_and_object(
    s3_bucket: tuple[str, str],
) -> None:
    endpoint, _ = s3_bucket
    bucket = unique_bucket_name("absent")
    store = S3Store(options(endpoint, bucket))
    missing = "NoSuchBucket: The specified bucket does not exist"
    try:
        calls = [
            ("put", f"{bucket}/p/k", store.put("p/k", b"x")),
            ("get", f"{bucket}/p/k", store.get("p/k")),
            ("list", f"{bucket}/p/", store.list("p/")),
            ("list", f"{bucket}/p/", store.list_folders("p/")),
            ("delete", f"{bucket}/p/a (and 1 more)", store.delete(["p/a", "p/b"])),
        ]
        for operation, target, call in calls:
            with pytest.raises(ObjectStoreError) as caught:
                await call
            assert str(caught.value) == f"s3: {operation} {target}: {missing}"
            assert not isinstance(caught.value, ObjectNotFound)
            assert (caught.value.code, caught.value.status) == ("NoSuchBucket", 404)
    finally:
        await store.close()


@pytest.mark.slow
async def test_unreachable_endpoint_is_named() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = S3Store(options(endpoint, "bkt"))
    try:
        with pytest.raises(ObjectStoreError) as caught:
            await store.get("p/k")
    finally:
        await store.close()
    assert str(caught.value) == f"s3: get bkt/p/k: could not connect to endpoint {endpoint}"
    assert caught.value.code == "connect"


@pytest.mark.s3
@pytest.mark.slow
async def test_throttling_after_retries_is_named(
    fault_proxy: tuple[FaultProxy, str, str],
) -> None:
    proxy, endpoint, bucket = fault_proxy
    proxy.error_503()
    store = S3Store(options(endpoint, bucket))
    try:
        with pytest.raises(ObjectStoreError) as caught:
            await store.put("p/k", b"x")
    finally:
        await store.close()
    assert str(caught.value) == (
        f"s3: put {bucket}/p/k: SlowDown: Please reduce your request rate."
    )
    assert (caught.value.code, caught.value.status) == ("SlowDown", 503)
    assert proxy.count("error_503") == 4, "the first attempt and 3 retries, then the error"


@pytest.mark.s3
@pytest.mark.slow
async def test_dropped_connection_is_an_object_store_error(
    fault_proxy: tuple[FaultProxy, str, str],
) -> None:
    proxy, endpoint, bucket = fault_proxy
    proxy.drop()
    store = S3Store(options(endpoint, bucket))
    try:
        with pytest.raises(ObjectStoreError) as caught:
            await store.list("p/")
    finally:
        await store.close()
    assert str(caught.value).startswith(f"s3: list {bucket}/p/: ")
    assert endpoint in str(caught.value)


@pytest.mark.s3
async def test_missing_key_is_object_not_found_with_its_name(s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    store = S3Store(options(endpoint, bucket))
    try:
        with pytest.raises(ObjectNotFound) as caught:
            await store.get_versioned("p/none")
    finally:
        await store.close()
    assert str(caught.value) == f"s3: get {bucket}/p/none: no such object"


# --------------------------------------------------------------------------- responses


async def test_delete_names_the_keys_the_store_refused() -> None:
    errors = (
        "<Error><Key>p/b</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
        "<Error><Key>p/c</Key><Code>InternalError</Code><Message>try again</Message></Error>"
    )
    body = (
        '<?xml version="1.0" encoding="UTF-8"?><DeleteResult>'
        f"<Deleted><Key>p/a</Key></Deleted>{errors}</DeleteResult>"
    ).encode()
    with Responder(lambda seen: Answer(200, {"Content-Type": "application/xml"}, body)) as server:
        store = S3Store(options(server.endpoint, "bkt"))
        try:
            with pytest.raises(DeleteError) as caught:
                await store.delete(["p/a", "p/b", "p/c"])
        finally:
            await store.close()
    assert caught.value.failed == {
        "p/b": "AccessDenied: Access Denied",
        "p/c": "InternalError: try again",
    }
    assert str(caught.value).startswith("s3: delete bkt/p/b, bkt/p/c: 2 not deleted: ")
    [request] = server.seen
    assert request.method == "POST" and "delete" in request.path


async def test_delete_sends_batches_of_1000() -> None:
    empty = b'<?xml version="1.0" encoding="UTF-8"?><DeleteResult></DeleteResult>'
    with Responder(lambda seen: Answer(200, {"Content-Type": "application/xml"}, empty)) as server:
        store = S3Store(options(server.endpoint, "bkt"))
        try:
            await store.delete([f"p/{i:05d}" for i in range(2001)])
        finally:
            await store.close()
    assert [r.body.count(b"<Key>") for r in server.seen] == [1000, 1000, 1]


async def test_conditional_conflict_409_is_a_refused_condition() -> None:
    conflict = s3_error(409, "ConditionalRequestConflict", "A conflicting operation is running")
    with Responder(lambda seen: conflict) as server:
        store = S3Store(options(server.endpoint, "bkt"))
        try:
            assert await store.put("p/lock", b"x", if_absent=True) is None
            assert await store.put("p/lock", b"x", if_match='"e"') is None
            with pytest.raises(ObjectStoreError, match="ConditionalRequestConflict"):
                await store.put("p/lock", b"x")  # unconditional: a real failure
        finally:
            await store.close()
    sent = [(r.headers.get("if-none-match"), r.headers.get("if-match")) for r in server.seen]
    assert sent[:2] == [("*", None), (None, '"e"')]


async def test_put_answer_without_etag_is_an_error() -> None:
    with Responder(lambda seen: Answer(200)) as server:
        store = S3Store(options(server.endpoint, "bkt"))
        try:
            with pytest.raises(ObjectStoreError, match="answered without an ETag"):
                await store.put("p/k", b"x")
        finally:
            await store.close()


# --------------------------------------------------------------------------- checksums


async def _put_and_get(endpoint: str, **extra: object) -> None:
    store = S3Store(options(endpoint, "bkt", **extra))
    try:
        assert await store.put("p/k", b"some body") == '"e1"'
        assert await store.get("p/k") == b"x"
    finally:
        await store.close()


def _checksum_headers(seen: Seen) -> list[str]:
    return sorted(h for h in seen.headers if h.startswith("x-amz-checksum") or h == "content-md5")


@pytest.mark.parametrize(
    ("extra", "upload_checksum", "download_mode"),
    [
        ({}, False, False),  # a custom endpoint: auto means when_required
        ({"request_checksum_calculation": "when_supported"}, True, False),
        ({"response_checksum_validation": "when_supported"}, False, True),
        (
            {
                "request_checksum_calculation": "when_required",
                "response_checksum_validation": "when_required",
            },
            False,
            False,
        ),
    ],
)
async def test_checksum_settings_reach_the_wire(
    extra: dict[str, str], upload_checksum: bool, download_mode: bool
) -> None:
    with Responder(plain_put_answer) as server:
        await _put_and_get(server.endpoint, **extra)
    put, get = server.seen
    assert put.method == "PUT" and get.method == "GET"
    assert bool(_checksum_headers(put)) is upload_checksum, put.headers
    assert "aws-chunked" not in put.headers.get("content-encoding", "")
    assert put.body == b"some body"
    assert (get.headers.get("x-amz-checksum-mode") == "ENABLED") is download_mode, get.headers


def test_checksum_defaults_depend_on_the_endpoint() -> None:
    custom = S3Options("b", endpoint="https://s3.example.test")
    assert custom.checksum_settings() == {
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
    }
    assert S3Options("b").checksum_settings() == {}, "on AWS botocore's own default stands"
    explicit = S3Options("b", request_checksum_calculation="when_supported")
    assert explicit.checksum_settings() == {"request_checksum_calculation": "when_supported"}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("https://s3.example.test/", "https://s3.example.test"),
        ("s3.eu.example.test:8443", "https://s3.eu.example.test:8443"),
        ("http://[::1]:9000", "http://[::1]:9000"),
        ("http://localhost:4568", "http://localhost:4568"),
    ],
)
def test_endpoint_without_scheme_means_https(given: str, expected: str) -> None:
    assert S3Options("b", endpoint=given).endpoint_url == expected


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"endpoint": "ftp://host"}, "invalid S3 endpoint 'ftp://host'"),
        ({"endpoint": "not a url"}, "invalid S3 endpoint 'not a url'"),
        ({"endpoint": "http://host name:9000"}, "invalid S3 endpoint"),
        ({"endpoint": "http://host/#frag"}, "invalid S3 endpoint"),
        ({"endpoint": "http://host:99999"}, "invalid port in S3 endpoint"),
        ({"request_checksum_calculation": "always"}, "invalid --s3-request-checksum"),
        ({"response_checksum_validation": "never"}, "invalid --s3-response-checksum"),
        ({"access_key_id": "AKIA"}, "needs its secret access key"),
    ],
)
def test_invalid_options_are_refused(option: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        S3Options("b", **option).validate()


def test_credentials_stay_out_of_the_repr() -> None:
    text = repr(S3Options("b", access_key_id="AKIAEXAMPLE", secret_access_key="s3cr3t-value"))
    assert "AKIAEXAMPLE" not in text and "s3cr3t-value" not in text


@pytest.mark.s3
async def test_a_real_bucket_still_works_with_the_custom_endpoint_defaults(
    s3_bucket: tuple[str, str],
) -> None:
    endpoint, _ = s3_bucket
    bucket = unique_bucket_name("cks")
    create_bucket(endpoint, bucket)
    store = S3Store(
        options(endpoint, bucket, request_checksum_calculation="when_supported", sign_payload=True)
    )
    try:
        etag = await store.put("p/k", b"checked body")
        assert await store.get_versioned("p/k") == (b"checked body", etag)
    finally:
        await store.close()
