"""The S3 test support itself: moto, s3rver, the fault proxy and the sync helpers."""

from __future__ import annotations

import http.client
import io
import os
import time
from typing import TYPE_CHECKING

import botocore.exceptions
import pytest

from tests.support.fault_proxy import DROP, ERROR_503, PASSTHROUGH, SLOW, FaultProxy, Mode
from tests.support.s3 import get_object, list_keys, put_object, s3_client, s3_env

if TYPE_CHECKING:
    from botocore.config import _RetryDict  # the stubs' name for `retries`


def _code(err: botocore.exceptions.ClientError) -> tuple[str, int]:
    return err.response["Error"]["Code"], err.response["ResponseMetadata"]["HTTPStatusCode"]


def _roundtrip(endpoint: str, bucket: str) -> None:
    put_object(endpoint, bucket, "seg/0001", b"one")
    put_object(endpoint, bucket, "seg/0002", b"\x00\xff" * 1000)
    put_object(endpoint, bucket, "other", b"")
    assert get_object(endpoint, bucket, "seg/0001") == b"one"
    assert get_object(endpoint, bucket, "seg/0002") == b"\x00\xff" * 1000
    assert get_object(endpoint, bucket, "other") == b""
    assert list_keys(endpoint, bucket, "seg/") == ["seg/0001", "seg/0002"]
    assert list_keys(endpoint, bucket) == ["other", "seg/0001", "seg/0002"]
    assert list_keys(endpoint, bucket, "nope/") == []


def _paged(endpoint: str, bucket: str) -> None:
    keys = [f"log/{i:04d}" for i in range(12)]
    for k in keys:
        put_object(endpoint, bucket, k, k.encode())
    client = s3_client(endpoint)
    pages: list[list[str]] = []
    token: str | None = None
    for _ in range(10):  # bounded: 12 keys / 5 per page = 3 pages
        kwargs = {"Bucket": bucket, "Prefix": "log/", "MaxKeys": 5}
        if token:
            kwargs["ContinuationToken"] = token
        resp = client.list_objects_v2(**kwargs)
        pages.append([o["Key"] for o in resp.get("Contents", ())])
        if not resp["IsTruncated"]:
            break
        token = resp["NextContinuationToken"]
    assert [len(p) for p in pages] == [5, 5, 2]
    assert [k for p in pages for k in p] == keys
    assert list_keys(endpoint, bucket, "log/") == keys  # the paginator agrees


# --------------------------------------------------------------------------- moto


@pytest.mark.s3
def test_moto_put_get_list(s3_bucket: tuple[str, str]) -> None:
    _roundtrip(*s3_bucket)


@pytest.mark.s3
def test_moto_paged_listing(s3_bucket: tuple[str, str]) -> None:
    _paged(*s3_bucket)


@pytest.mark.s3
def test_moto_buckets_are_fresh(s3_bucket: tuple[str, str]) -> None:
    assert list_keys(*s3_bucket) == []


@pytest.mark.s3
def test_moto_conditional_put_rejects_existing_key(s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    put_object(endpoint, bucket, "seg/0001", b"first", if_none_match="*")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        put_object(endpoint, bucket, "seg/0001", b"second", if_none_match="*")
    assert _code(info.value) == ("PreconditionFailed", 412)
    assert get_object(endpoint, bucket, "seg/0001") == b"first"


def test_s3_env() -> None:
    env = s3_env("http://127.0.0.1:1", base={"AWS_PROFILE": "x", "PATH": "/bin"})
    assert env["AWS_ACCESS_KEY_ID"] == "test"
    assert env["AWS_SECRET_ACCESS_KEY"] == "test"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:1"
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"
    assert "AWS_PROFILE" not in env and env["PATH"] == "/bin"
    assert "AWS_ENDPOINT_URL_S3" not in s3_env()
    assert s3_env()["PATH"] == os.environ["PATH"]


# --------------------------------------------------------------------------- s3rver


@pytest.mark.s3
@pytest.mark.node
def test_s3rver_put_get_list(s3rver_s3: tuple[str, str]) -> None:
    _roundtrip(*s3rver_s3)


@pytest.mark.s3
@pytest.mark.node
def test_s3rver_paged_listing(s3rver_s3: tuple[str, str]) -> None:
    _paged(*s3rver_s3)


@pytest.mark.s3
@pytest.mark.node
def test_s3rver_ignores_conditional_put(s3rver_s3: tuple[str, str]) -> None:
    """Documents the gap: s3rver overwrites despite If-None-Match: * (moto gives 412)."""
    endpoint, bucket = s3rver_s3
    put_object(endpoint, bucket, "k", b"first", if_none_match="*")
    put_object(endpoint, bucket, "k", b"second", if_none_match="*")
    assert get_object(endpoint, bucket, "k") == b"second"


# --------------------------------------------------------------------------- fault proxy


@pytest.mark.s3
def test_proxy_passthrough(fault_proxy: tuple[FaultProxy, str, str]) -> None:
    proxy, endpoint, bucket = fault_proxy
    _roundtrip(endpoint, bucket)
    # 3 puts + 3 gets + 3 listings; every one passed through, none faulted.
    assert proxy.counts == {PASSTHROUGH: 9, ERROR_503: 0, DROP: 0, SLOW: 0}
    assert proxy.log[0] == (PASSTHROUGH, "PUT", f"/{bucket}/seg/0001")
    # The conditional-write semantics survive the proxy.
    put_object(endpoint, bucket, "c", b"1", if_none_match="*")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        put_object(endpoint, bucket, "c", b"2", if_none_match="*")
    assert _code(info.value) == ("PreconditionFailed", 412)


@pytest.mark.s3
def test_proxy_passthrough_expect_100_continue(fault_proxy: tuple[FaultProxy, str, str]) -> None:
    """A file-like body makes botocore send `Expect: 100-continue`; plain and held."""
    proxy, endpoint, bucket = fault_proxy
    client = s3_client(endpoint, total_attempts=1)
    client.put_object(Bucket=bucket, Key="a", Body=io.BytesIO(b"x" * 5000))
    proxy.slow(0.2)
    client.put_object(Bucket=bucket, Key="b", Body=io.BytesIO(b"y" * 5000))
    assert get_object(endpoint, bucket, "a") == b"x" * 5000
    assert get_object(endpoint, bucket, "b") == b"y" * 5000


@pytest.mark.s3
def test_proxy_passthrough_chunked_request(fault_proxy: tuple[FaultProxy, str, str]) -> None:
    proxy, endpoint, bucket = fault_proxy
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        conn.request("PUT", f"/{bucket}/chunky", body=iter([b"abc", b"defg"]), encode_chunked=True)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
    finally:
        conn.close()
    assert get_object(endpoint, bucket, "chunky") == b"abcdefg"


@pytest.mark.s3
def test_proxy_error_503(fault_proxy: tuple[FaultProxy, str, str]) -> None:
    proxy, endpoint, bucket = fault_proxy
    client = s3_client(endpoint, total_attempts=1)
    proxy.error_503()
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.put_object(Bucket=bucket, Key="k", Body=b"v")
    assert _code(info.value) == ("SlowDown", 503)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.get_object(Bucket=bucket, Key="k")
    assert _code(info.value) == ("SlowDown", 503)
    # A file-like body makes botocore send `Expect: 100-continue`: answered before the body.
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.put_object(Bucket=bucket, Key="k", Body=io.BytesIO(b"z" * 5000))
    assert _code(info.value) == ("SlowDown", 503)
    assert proxy.counts[ERROR_503] == 3
    assert proxy.counts[PASSTHROUGH] == 0
    proxy.passthrough()
    assert list_keys(endpoint, bucket) == []  # the faulted put never reached S3


@pytest.mark.s3
def test_botocore_max_attempts_counts_retries(fault_proxy: tuple[FaultProxy, str, str]) -> None:
    """Gotcha: `retries={"max_attempts": 1}` is one *retry*; `total_max_attempts=1` is none."""
    import boto3  # type: ignore[import-untyped]  # boto3 has no stubs installed (botocore has)
    from botocore.config import Config

    proxy, endpoint, bucket = fault_proxy
    proxy.error_503()
    cases: list[tuple[_RetryDict, int]] = [({"max_attempts": 1}, 2), ({"total_max_attempts": 1}, 1)]
    for retries, requests in cases:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries=retries),
        )
        proxy.reset_counts()
        with pytest.raises(botocore.exceptions.ClientError):
            client.put_object(Bucket=bucket, Key="k", Body=b"v")
        assert proxy.count(ERROR_503) == requests, retries


@pytest.mark.s3
def test_proxy_error_503_retry_exhaustion(fault_proxy: tuple[FaultProxy, str, str]) -> None:
    proxy, endpoint, bucket = fault_proxy
    client = s3_client(endpoint, total_attempts=3)
    proxy.error_503()
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.put_object(Bucket=bucket, Key="k", Body=b"v")
    assert _code(info.value) == ("SlowDown", 503)
    assert info.value.response["ResponseMetadata"]["RetryAttempts"] == 2
    assert proxy.count(ERROR_503) == 3


@pytest.mark.s3
def test_proxy_fail_next_then_recover(fault_proxy: tuple[FaultProxy, str, str]) -> None:
    proxy, endpoint, bucket = fault_proxy
    client = s3_client(endpoint, total_attempts=3)  # botocore retries 503s and dropped connections
    proxy.fail_next(1, ERROR_503)
    proxy.fail_next(1, DROP)
    assert proxy.pending == 2
    client.put_object(Bucket=bucket, Key="k", Body=b"v")
    assert proxy.pending == 0
    assert [m for m, _, _ in proxy.log] == [ERROR_503, DROP, PASSTHROUGH]
    assert get_object(endpoint, bucket, "k") == b"v"
    assert proxy.mode == Mode(PASSTHROUGH)
    proxy.reset_counts()
    assert proxy.count() == 0


@pytest.mark.s3
def test_proxy_drop(fault_proxy: tuple[FaultProxy, str, str]) -> None:
    proxy, endpoint, bucket = fault_proxy
    client = s3_client(endpoint, total_attempts=1)
    proxy.drop()
    with pytest.raises((botocore.exceptions.HTTPClientError, botocore.exceptions.ConnectionError)):
        client.put_object(Bucket=bucket, Key="k", Body=b"v")
    with pytest.raises((botocore.exceptions.HTTPClientError, botocore.exceptions.ConnectionError)):
        client.list_objects_v2(Bucket=bucket)
    assert proxy.counts[DROP] == 2
    assert proxy.wait_for_count(2, DROP, timeout=1)
    assert not proxy.wait_for_count(3, DROP, timeout=0.1)
    proxy.passthrough()
    client.put_object(Bucket=bucket, Key="k", Body=b"v")  # the client recovers on a new connection
    assert list_keys(endpoint, bucket) == ["k"]


@pytest.mark.s3
def test_proxy_slow(fault_proxy: tuple[FaultProxy, str, str]) -> None:
    proxy, endpoint, bucket = fault_proxy
    put_object(endpoint, bucket, "k", b"v")
    proxy.slow(0.5)
    start = time.monotonic()
    assert get_object(endpoint, bucket, "k") == b"v"
    assert time.monotonic() - start >= 0.5
    assert proxy.counts[SLOW] == 1


@pytest.mark.s3
def test_proxy_slow_times_out_and_is_not_forwarded(
    fault_proxy: tuple[FaultProxy, str, str],
) -> None:
    proxy, endpoint, bucket = fault_proxy
    client = s3_client(endpoint, total_attempts=1, timeout=0.3)
    proxy.slow(0.8)
    start = time.monotonic()
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        client.put_object(Bucket=bucket, Key="k", Body=b"v")
    assert time.monotonic() - start < 0.8
    time.sleep(0.8)  # past the hold: the abandoned put must not have been forwarded
    proxy.passthrough()
    assert list_keys(endpoint, bucket) == []


@pytest.mark.s3
def test_proxy_slow_abandoned_put_lands_when_asked(s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    with FaultProxy(endpoint, forward_if_abandoned=True) as proxy:
        client = s3_client(proxy.endpoint, total_attempts=1, timeout=0.3)
        proxy.slow(0.6)
        with pytest.raises(botocore.exceptions.ReadTimeoutError):
            client.put_object(Bucket=bucket, Key="k", Body=b"v")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not list_keys(endpoint, bucket):
            time.sleep(0.05)
    assert get_object(endpoint, bucket, "k") == b"v"


@pytest.mark.s3
@pytest.mark.node
def test_proxy_in_front_of_s3rver(s3rver_s3: tuple[str, str]) -> None:
    endpoint, bucket = s3rver_s3
    with FaultProxy(endpoint) as proxy:
        _paged(proxy.endpoint, bucket)
        proxy.fail_next(1, ERROR_503)
        with pytest.raises(botocore.exceptions.ClientError):
            s3_client(proxy.endpoint, total_attempts=1).get_object(Bucket=bucket, Key="log/0000")
        assert get_object(proxy.endpoint, bucket, "log/0000") == b"log/0000"


@pytest.mark.s3
async def test_aioboto3_through_proxy(fault_proxy: tuple[FaultProxy, str, str]) -> None:
    """The async client the server will use: retries a 503 and a drop, keeps the 412."""
    import aioboto3
    from aiobotocore.config import AioConfig

    proxy, endpoint, bucket = fault_proxy
    config = AioConfig(
        s3={"addressing_style": "path"}, retries={"mode": "standard", "total_max_attempts": 3}
    )
    session = aioboto3.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    async with session.client("s3", endpoint_url=endpoint, config=config) as s3:
        proxy.fail_next(1, ERROR_503)
        proxy.fail_next(1, DROP)
        await s3.put_object(Bucket=bucket, Key="k", Body=b"v", IfNoneMatch="*")
        assert [m for m, _, _ in proxy.log] == [ERROR_503, DROP, PASSTHROUGH]
        with pytest.raises(botocore.exceptions.ClientError) as info:
            await s3.put_object(Bucket=bucket, Key="k", Body=b"w", IfNoneMatch="*")
        assert _code(info.value) == ("PreconditionFailed", 412)
        resp = await s3.get_object(Bucket=bucket, Key="k")
        async with resp["Body"] as body:
            assert await body.read() == b"v"
