"""Talking to a local S3-compatible server from the tests: environment and boto3 helpers.

* `s3_env(endpoint)`: the environment for child processes (credentials `test`/`test`,
  region us-east-1, no profile or IMDS look-ups).
* sync helpers on boto3 with path-style addressing: `s3_client`, `create_bucket`,
  `list_keys`, `get_object`, `put_object`; `unique_bucket_name` for a fresh bucket.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from botocore.config import _RetryDict  # the stubs' name for `retries`

ACCESS_KEY_ID = "test"
SECRET_ACCESS_KEY = "test"
REGION = "us-east-1"

# Variables that could make an AWS SDK look for credentials or config somewhere else
# (a profile, a container/IMDS endpoint, a web identity) instead of the ones we set.
_AWS_VARS_TO_DROP = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)


def s3_env(endpoint: str | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process that talks to a local S3 at `endpoint`.

    Sets fixed test credentials and region, disables IMDS (which would otherwise be tried
    at a link-local address), points the AWS config/credentials files at /dev/null, and, if
    `endpoint` is given, sets AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 (honoured by botocore
    >= 1.31 and the other SDKs) so a child that builds its client from the environment
    needs no extra flag.
    """
    env = dict(os.environ if base is None else base)
    for name in _AWS_VARS_TO_DROP:
        env.pop(name, None)
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    if endpoint is not None:
        env["AWS_ENDPOINT_URL"] = endpoint
        env["AWS_ENDPOINT_URL_S3"] = endpoint
    return env


def unique_bucket_name(prefix: str = "test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


# --------------------------------------------------------------------------- sync helpers

_clients: dict[tuple[str, int], Any] = {}
_clients_lock = threading.Lock()


def s3_client(endpoint: str, *, total_attempts: int | None = None, timeout: float = 10.0) -> Any:
    """A boto3 S3 client for a local endpoint: path-style, test credentials, us-east-1.

    `total_attempts` counts the first try: 1 means no retries. (Careful: botocore's
    `retries={"max_attempts": N}` counts *retries*, so `max_attempts=1` still retries
    once; `total_max_attempts` is the one that includes the first attempt.)

    Checksums are only computed/validated when an operation requires them: botocore
    >= 1.36 otherwise adds CRC32 checksums to every upload (and aws-chunked encoding for
    streamed bodies over https), which older S3 implementations do not understand.
    """
    import boto3  # type: ignore[import-untyped]  # boto3 has no stubs installed (botocore has)
    from botocore.config import Config

    retries: _RetryDict = {"mode": "standard"}
    if total_attempts is not None:
        retries["total_max_attempts"] = total_attempts
    config = Config(
        s3={"addressing_style": "path"},
        retries=retries,
        connect_timeout=timeout,
        read_timeout=timeout,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        region_name=REGION,
        config=config,
    )


def _cached_client(endpoint: str) -> Any:
    key = (endpoint, os.getpid())
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = s3_client(endpoint)
        return client


def create_bucket(endpoint: str, bucket: str) -> None:
    _cached_client(endpoint).create_bucket(Bucket=bucket)


def list_keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    """All keys under `prefix`, in S3 (UTF-8 binary) order, following pagination."""
    paginator = _cached_client(endpoint).get_paginator("list_objects_v2")
    keys: list[str] = []
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", ()))
    return keys


def get_object(endpoint: str, bucket: str, key: str) -> bytes:
    resp = _cached_client(endpoint).get_object(Bucket=bucket, Key=key)
    with contextlib.closing(resp["Body"]) as body:
        data: bytes = body.read()
        return data


def put_object(
    endpoint: str, bucket: str, key: str, body: bytes, *, if_none_match: str | None = None
) -> dict[str, Any]:
    """PutObject; `if_none_match='*'` makes it a create-only conditional write."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "Body": body}
    if if_none_match is not None:
        kwargs["IfNoneMatch"] = if_none_match
    resp: dict[str, Any] = _cached_client(endpoint).put_object(**kwargs)
    return resp


# --------------------------------------------------------------------------- moto


def s3_args(endpoint: str, bucket: str, prefix: str) -> list[str]:
    """The `denokv` flags that point it at `prefix` in a local bucket."""
    return ["--s3-bucket", bucket, "--s3-prefix", prefix, "--s3-endpoint", endpoint,
            "--s3-force-path-style"]  # fmt: skip
