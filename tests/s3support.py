"""Local S3 servers, a fault-injecting proxy and small sync S3 helpers for tests.

PYTEST_DONT_REWRITE (loaded as a plugin after test modules import it).

Everything listens on 127.0.0.1 only. Load the fixtures in a test module with

    pytest_plugins = ("tests.s3support",)

(or import the fixture names). What is here:

* ``MotoServer`` / fixtures ``moto_s3`` (session: one ``python -m moto.server`` process)
  and ``s3_bucket`` (function: a fresh bucket on it, yields ``(endpoint_url, bucket)``).
  moto 5.2.5 enforces conditional writes: ``PutObject`` with ``IfNoneMatch='*'`` on an
  existing key answers 412 ``PreconditionFailed``.
* ``S3rver`` / fixtures ``s3rver_server`` (session) and ``s3rver_s3`` (function, same
  ``(endpoint_url, bucket)`` shape): the npm ``s3rver`` package from tests/node, run under
  ``node --openssl-legacy-provider`` (its listing continuation tokens use DES, which
  OpenSSL 3 only has in the legacy provider). s3rver IGNORES ``If-None-Match`` (a second
  conditional put silently overwrites), so it is a second implementation for plain
  put/get/list, not for conditional-write semantics.
* ``FaultProxy`` / fixture ``fault_proxy`` (yields ``(proxy, proxied_endpoint, bucket)``):
  an HTTP/1.1-aware TCP proxy in front of an S3 endpoint whose behaviour can be switched
  at run time, per request: ``passthrough``, ``error_503``, ``drop``, ``slow``.
* ``s3_env(endpoint)``: the environment for child processes (credentials ``test``/``test``,
  region us-east-1, no profile/IMDS look-ups).
* sync helpers on boto3 with path-style addressing: ``s3_client``, ``create_bucket``,
  ``list_keys``, ``get_object``, ``put_object``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

TESTS = Path(__file__).resolve().parent
NODE_DIR = TESTS / "node"

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Poll `url` until it answers any HTTP status (the server is up) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return
        except urllib.error.HTTPError:
            return  # it answered: up
        except OSError as e:
            last = e
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s (last error: {last!r})")


def _stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


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
    import boto3
    from botocore.config import Config

    retries: dict[str, Any] = {"mode": "standard"}
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
        return body.read()


def put_object(
    endpoint: str, bucket: str, key: str, body: bytes, *, if_none_match: str | None = None
) -> dict[str, Any]:
    """PutObject; `if_none_match='*'` makes it a create-only conditional write."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "Body": body}
    if if_none_match is not None:
        kwargs["IfNoneMatch"] = if_none_match
    return _cached_client(endpoint).put_object(**kwargs)


# --------------------------------------------------------------------------- moto


class MotoServer:
    """`python -m moto.server -H 127.0.0.1 -p PORT` as a child process (moto 5.2.5).

    (The `moto_server` console script is the same entry point.) Readiness is polled with
    a plain GET / (ListBuckets), which moto answers without authentication; the import
    takes ~2 s. All state is in memory; `reset()` wipes it.
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> MotoServer:
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                cmd, env=s3_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            if self.log_path:
                log.close()  # type: ignore[union-attr]
        try:
            _wait_http(self.endpoint + "/", self.proc, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def reset(self) -> None:
        req = urllib.request.Request(self.endpoint + "/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def stop(self) -> None:
        _stop_process(self.proc)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto server for the whole session."""
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    srv = MotoServer(log_path=log).start()
    yield srv
    srv.stop()


@pytest.fixture
def s3_bucket(moto_s3: MotoServer) -> tuple[str, str]:
    """A fresh, empty bucket on the session's moto server: (endpoint_url, bucket)."""
    bucket = unique_bucket_name()
    create_bucket(moto_s3.endpoint, bucket)
    return moto_s3.endpoint, bucket


# --------------------------------------------------------------------------- s3rver

# Run with cwd=tests/node so `require('s3rver')` resolves there. Registers the test
# credentials on s3rver's dummy account (it only knows S3RVER/S3RVER otherwise), listens
# on an ephemeral port, writes {"port": N} to $S3RVER_PORT_FILE, and exits when stdin
# closes (so it can't outlive the test process) or on SIGTERM.
_S3RVER_JS = r"""
const S3rver = require('s3rver');
const AWSAccount = require('s3rver/lib/models/account');
AWSAccount.DUMMY_ACCOUNT.createKeyPair(process.env.AWS_ACCESS_KEY_ID,
                                       process.env.AWS_SECRET_ACCESS_KEY);
const server = new S3rver({
  address: '127.0.0.1',
  port: 0,
  directory: process.env.S3RVER_DIR,
  silent: process.env.S3RVER_SILENT === '1',
  vhostBuckets: false,
});
server.run().then(({ port }) => {
  const fs = require('fs');
  const file = process.env.S3RVER_PORT_FILE;
  fs.writeFileSync(file + '.tmp', JSON.stringify({ port }));
  fs.renameSync(file + '.tmp', file);
}, (err) => { console.error(err); process.exit(1); });
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
"""


def s3rver_available() -> bool:
    return (
        shutil.which("node") is not None
        and (NODE_DIR / "node_modules" / "s3rver" / "package.json").exists()
    )


class S3rver:
    """The npm `s3rver` (tests/node/node_modules) as a child process on an ephemeral port.

    Gotchas: needs `node --openssl-legacy-provider` (paged listings encrypt their
    continuation token with DES); ignores If-None-Match / If-Match on PutObject; accepts
    SigV4 from the test credentials only because we register them at start-up.
    """

    def __init__(self, directory: Path | None = None, log_path: Path | None = None) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="s3rver-")
            directory = Path(self._tmp.name)
        self.directory = directory
        self.log_path = log_path
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        assert self.port is not None, "not started"
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> S3rver:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not installed")
        self.directory.mkdir(parents=True, exist_ok=True)
        port_file = self.directory.parent / f".{self.directory.name}.port"
        port_file.unlink(missing_ok=True)
        env = s3_env()
        env["S3RVER_DIR"] = str(self.directory)
        env["S3RVER_PORT_FILE"] = str(port_file)
        env["S3RVER_SILENT"] = "0" if self.log_path else "1"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [node, "--openssl-legacy-provider", "-e", _S3RVER_JS],
                cwd=NODE_DIR,
                env=env,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            if self.log_path:
                log.close()  # type: ignore[union-attr]
        try:
            self.port = self._read_port(port_file, timeout)
            _wait_http(self.endpoint + "/", self.proc, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _read_port(self, port_file: Path, timeout: float) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"s3rver exited with {self.proc.returncode}: {self.logs()}")
            if port_file.exists():
                port = int(json.loads(port_file.read_text())["port"])
                port_file.unlink(missing_ok=True)
                return port
            time.sleep(0.05)
        raise TimeoutError(f"s3rver did not report its port within {timeout}s: {self.logs()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        _stop_process(self.proc)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def __enter__(self) -> S3rver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def s3rver_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3rver]:
    if not s3rver_available():
        pytest.skip("node or tests/node/node_modules/s3rver missing (npm install in tests/node)")
    base = tmp_path_factory.mktemp("s3rver")
    srv = S3rver(directory=base / "data", log_path=base / "s3rver.log").start()
    yield srv
    srv.stop()


@pytest.fixture
def s3rver_s3(s3rver_server: S3rver) -> tuple[str, str]:
    """A fresh, empty bucket on the session's s3rver: (endpoint_url, bucket)."""
    bucket = unique_bucket_name()
    create_bucket(s3rver_server.endpoint, bucket)
    return s3rver_server.endpoint, bucket


# --------------------------------------------------------------------------- fault proxy

PASSTHROUGH = "passthrough"
ERROR_503 = "error_503"
DROP = "drop"
SLOW = "slow"
MODES = (PASSTHROUGH, ERROR_503, DROP, SLOW)

_MAX_HEAD = 64 * 1024
_IO_TIMEOUT = 30.0  # longest wait for one read/write on either side of a connection
_IDLE_TIMEOUT = 60.0  # how long an idle keep-alive client connection is kept


@dataclass(frozen=True)
class Mode:
    name: str
    delay: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in MODES:
            raise ValueError(f"unknown fault mode {self.name!r}; expected one of {MODES}")


def _as_mode(mode: str | Mode, delay: float = 0.0) -> Mode:
    return mode if isinstance(mode, Mode) else Mode(mode, delay)


class _Abandoned(Exception):
    """The client went away while a request was being held."""


class FaultProxy:
    """An HTTP/1.1-aware TCP proxy on 127.0.0.1 in front of an S3 endpoint.

    It runs an asyncio loop in a daemon thread. Each client connection gets its own
    upstream connection; the proxy parses request heads and bodies (Content-Length or
    chunked) so it can decide *per request* what to do, while responses are piped back
    byte for byte. Modes (switch at any time from the test thread):

    * ``passthrough``: forward the request.
    * ``error_503``: don't forward; read the request and answer ``503 Service Unavailable``
      with an S3 ``<Error><Code>SlowDown</Code>...`` body and ``Connection: close``.
    * ``drop``: don't forward; close the client connection at once with a TCP reset
      (SO_LINGER 0), no response. Clients see a reset / "connection closed" error.
    * ``slow`` (``delay`` seconds): read the whole request, hold it for ``delay`` s, then
      forward it. If the client gave up meanwhile (closed its side), the request is NOT
      forwarded unless ``forward_if_abandoned`` is set (which simulates a write that
      timed out for the client but still landed).

    ``fail_next(n, mode)`` applies ``mode`` to the next ``n`` requests only, then the base
    mode (``set_mode``) applies again. ``counts`` tells how many requests each mode
    handled; ``log`` lists ``(mode, method, target)`` per request.

    S3 clients keep connections alive and reuse them. After a faulted response
    (``error_503``, ``drop``) the proxy always closes the client connection, so the next
    request arrives on a new connection; a ``passthrough``/``slow`` connection stays open
    and later requests on it are judged by the mode in force when each one arrives.
    Clients must not pipeline requests (botocore/aiobotocore/urllib3 don't).
    """

    def __init__(self, upstream: str, *, forward_if_abandoned: bool = False) -> None:
        parts = urlsplit(upstream if "//" in upstream else f"http://{upstream}")
        if parts.scheme != "http":
            raise ValueError("FaultProxy only proxies plain http upstreams")
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.forward_if_abandoned = forward_if_abandoned
        self.port: int | None = None
        self._lock = threading.Lock()
        self._mode = Mode(PASSTHROUGH)
        self._pending: list[Mode] = []
        self._counts: Counter[str] = Counter()
        self._log: list[tuple[str, str, str]] = []
        self._connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    # ---- control (any thread)

    @property
    def endpoint(self) -> str:
        assert self.port is not None, "not started"
        return f"http://127.0.0.1:{self.port}"

    @property
    def mode(self) -> Mode:
        with self._lock:
            return self._mode

    def set_mode(self, mode: str | Mode, delay: float = 0.0) -> None:
        """Set the base mode for all following requests (and drop any `fail_next` queue)."""
        m = _as_mode(mode, delay)
        with self._lock:
            self._mode = m
            self._pending.clear()

    def passthrough(self) -> None:
        self.set_mode(PASSTHROUGH)

    def error_503(self) -> None:
        self.set_mode(ERROR_503)

    def drop(self) -> None:
        self.set_mode(DROP)

    def slow(self, seconds: float) -> None:
        self.set_mode(SLOW, seconds)

    def fail_next(self, n: int, mode: str | Mode = ERROR_503, delay: float = 0.0) -> None:
        """Apply `mode` to the next `n` requests (queued after any already pending)."""
        m = _as_mode(mode, delay)
        with self._lock:
            self._pending.extend([m] * n)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    @property
    def counts(self) -> dict[str, int]:
        """Requests seen per mode name (every mode present, 0 if unused)."""
        with self._lock:
            return {name: self._counts[name] for name in MODES}

    def count(self, mode: str | None = None) -> int:
        """Requests seen in `mode`, or in all modes."""
        with self._lock:
            return sum(self._counts.values()) if mode is None else self._counts[mode]

    @property
    def log(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return list(self._log)

    @property
    def connections(self) -> int:
        """Client connections accepted so far."""
        with self._lock:
            return self._connections

    def wait_for_count(self, n: int, mode: str | None = None, timeout: float = 10.0) -> bool:
        """Wait until `count(mode)` >= n (e.g. a background uploader's retries); False on
        timeout."""
        deadline = time.monotonic() + timeout
        while self.count(mode) < n:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()
            self._log.clear()
            self._connections = 0

    def _take_mode(self, method: str, target: str) -> Mode:
        with self._lock:
            m = self._pending.pop(0) if self._pending else self._mode
            self._counts[m.name] += 1
            self._log.append((m.name, method, target))
            return m

    # ---- lifecycle

    def start(self, timeout: float = 10) -> FaultProxy:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, "127.0.0.1", 0, limit=_MAX_HEAD)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as e:
                errors.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="FaultProxy", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("FaultProxy did not start")
        if errors:
            raise errors[0]
        return self

    def stop(self, timeout: float = 10) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]  # handlers and pipes
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=timeout)
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        thread.join(timeout)
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the proxy (loop thread)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self._connections += 1
        up_writer: asyncio.StreamWriter | None = None
        pipe: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _IDLE_TIMEOUT)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                    return
                method, target, headers = _parse_head(head)
                mode = self._take_mode(method, target)

                if mode.name == DROP:
                    _reset(writer)
                    return

                if mode.name == ERROR_503:
                    # Answer at once if the client waits for "100 Continue"; else drain the
                    # body first so closing doesn't turn into a reset before it reads the 503.
                    if headers.get("expect", "").lower() != "100-continue":
                        await _read_body(reader, headers, None)
                    writer.write(_response_503(target))
                    await asyncio.wait_for(writer.drain(), _IO_TIMEOUT)
                    return

                if mode.name == SLOW:
                    body = await _read_body(reader, headers, None, continue_writer=writer)
                    await asyncio.sleep(mode.delay)
                    if reader.at_eof() and not self.forward_if_abandoned:
                        return  # the client closed its side while we held the request
                    up_writer, pipe = await self._upstream(writer, up_writer, pipe)
                    up_writer.write(_strip_expect(head) + body)
                    await asyncio.wait_for(up_writer.drain(), _IO_TIMEOUT)
                    if reader.at_eof():
                        # Forwarded an abandoned request: let the upstream finish it, then go.
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(pipe, _IO_TIMEOUT)
                        return
                    continue

                # passthrough: stream the body through.
                up_writer, pipe = await self._upstream(writer, up_writer, pipe)
                up_writer.write(head)
                await _read_body(reader, headers, up_writer)
                await asyncio.wait_for(up_writer.drain(), _IO_TIMEOUT)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError, _Abandoned):
            return  # OSError covers ConnectionError; ValueError a malformed request head
        finally:
            if pipe is not None:
                pipe.cancel()
            if up_writer is not None:
                up_writer.close()
            writer.close()

    async def _upstream(
        self,
        client: asyncio.StreamWriter,
        up_writer: asyncio.StreamWriter | None,
        pipe: asyncio.Task[None] | None,
    ) -> tuple[asyncio.StreamWriter, asyncio.Task[None]]:
        if up_writer is not None and pipe is not None and not pipe.done():
            return up_writer, pipe
        if pipe is not None and pipe.done():
            raise ConnectionResetError("upstream closed the connection")
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(self.upstream_host, self.upstream_port), _IO_TIMEOUT
        )
        pipe = asyncio.get_running_loop().create_task(_pipe(up_reader, client))
        return up_writer, pipe


def _strip_expect(head: bytes) -> bytes:
    """Drop `Expect:` from a request head whose body we already have (and acknowledged)."""
    lines = head.split(b"\r\n")
    return b"\r\n".join(ln for ln in lines if not ln.lower().startswith(b"expect:"))


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    method, target = (parts[0], parts[1]) if len(parts) >= 2 else (lines[0], "")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


async def _read_body(
    reader: asyncio.StreamReader,
    headers: dict[str, str],
    forward: asyncio.StreamWriter | None,
    continue_writer: asyncio.StreamWriter | None = None,
) -> bytes:
    """Read one request body; send it on to `forward` as it comes, or return it."""
    chunks: list[bytes] = []

    async def read(coro: Any) -> bytes:
        data = await asyncio.wait_for(coro, _IO_TIMEOUT)
        if forward is not None:
            forward.write(data)
            await asyncio.wait_for(forward.drain(), _IO_TIMEOUT)
        else:
            chunks.append(data)
        return data

    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    length = int(headers.get("content-length", "0") or 0)
    expects = headers.get("expect", "").lower() == "100-continue"
    if continue_writer is not None and expects and (chunked or length):
        # We hold the request, so we must ask for its body ourselves (and strip the
        # Expect header before forwarding it).
        continue_writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if chunked:
        while True:
            size_line = await read(reader.readuntil(b"\r\n"))
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await read(reader.readuntil(b"\r\n"))) != b"\r\n":
                    pass  # trailers, up to the empty line
                break
            await read(reader.readexactly(size + 2))
    else:
        remaining = length
        while remaining > 0:
            data = await read(reader.read(min(remaining, 1 << 16)))
            if not data:
                raise _Abandoned
            remaining -= len(data)
    return b"".join(chunks)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy upstream responses to the client until either side closes."""
    try:
        while True:
            data = await asyncio.wait_for(src.read(1 << 16), _IDLE_TIMEOUT)
            if not data:
                break
            dst.write(data)
            await asyncio.wait_for(dst.drain(), _IO_TIMEOUT)
    except (ConnectionError, TimeoutError):
        pass
    finally:
        dst.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _response_503(target: str) -> bytes:
    resource = target.split("?", 1)[0]
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
        f"<Resource>{_xml_escape(resource)}</Resource>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode()
    return head + body


def _xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@pytest.fixture
def fault_proxy(s3_bucket: tuple[str, str]) -> Iterator[tuple[FaultProxy, str, str]]:
    """A FaultProxy (passthrough) in front of moto: (proxy, proxied_endpoint, bucket)."""
    endpoint, bucket = s3_bucket
    proxy = FaultProxy(endpoint).start()
    try:
        yield proxy, proxy.endpoint, bucket
    finally:
        proxy.stop()
