"""S3 settings on the command line (Litestream's replica URL, its credential variables,
checksum settings) and the one `error: ...` line every expected S3 failure of `pitr`
and `serve` ends in.

The failures run the real CLI as a child process against a real moto server (one with
IAM checks on for access denied and credentials), a missing bucket, and a port where
nothing listens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import denokv
from cli.main import build_parser
from cli.options import litestream_credentials, parse_s3_url, resolve_s3_url, s3_options
from tests.support.backup_proofs import complete_generations, wait_shipped
from tests.support.moto import MotoServer
from tests.support.paths import ROOT
from tests.support.ports import free_port
from tests.support.processes import ServerProcess
from tests.support.s3 import create_bucket, s3_env, unique_bucket_name
from tests.support.waiting import wait_until

PREFIX = "prod/kv/"
TOKEN = "a-long-enough-token"


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["--sqlite-path", "x", *argv])


# --------------------------------------------------------------------------- the URL


def test_litestream_url_sets_every_field() -> None:
    args = parse(
        "pitr", "restore", "--s3-url",
        "s3://bkt/db?endpoint=http://127.0.0.1:9000&region=auto&force-path-style=true"
        "&skip-verify=true&sign-payload=true",
    )  # fmt: skip
    options = s3_options(args)
    assert (options.bucket, options.prefix, options.endpoint, options.region) == (
        "bkt", "db/", "http://127.0.0.1:9000", "auto",
    )  # fmt: skip
    assert options.force_path_style and not options.verify_ssl and options.sign_payload
    assert args.s3_bucket == "bkt", "code that reads --s3-bucket sees the URL's bucket"


def test_litestream_camel_case_parameters() -> None:
    url = parse_s3_url("s3://bkt/a/b/?endpoint=minio:9000&forcePathStyle=false&skipVerify=true")
    assert (url.prefix, url.endpoint, url.force_path_style, url.skip_verify) == (
        "a/b/", "minio:9000", False, True,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("url", "path_style"),
    [
        ("s3://bkt/db?endpoint=https://s3.example.test", True),  # custom endpoint: path style
        ("s3://bkt/db?endpoint=https://s3.example.test&force-path-style=false", False),
        ("s3://bkt/db", None),  # AWS: nothing said
    ],
)
def test_path_style_follows_litestream(url: str, path_style: bool | None) -> None:
    assert parse_s3_url(url).force_path_style is path_style


@pytest.mark.parametrize(
    ("url", "prefix"), [("s3://bkt", ""), ("s3://bkt/", ""), ("s3://b1/x", "x/")]
)
def test_url_prefix_gets_a_trailing_slash(url: str, prefix: str) -> None:
    assert parse_s3_url(url).prefix == prefix


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://bkt/db", "expected s3://BUCKET/PREFIX"),
        ("s3:///db", "expected s3://BUCKET/PREFIX"),
        ("s3://bkt:9000/db", "the host part must be a bucket name only"),
        ("s3://bkt/db?concurrency=2", "unknown parameter 'concurrency'"),
        ("s3://bkt/db?region=a&region=b", "region is given twice"),
        ("s3://bkt/db?force-path-style=maybe", "must be true or false, not 'maybe'"),
        ("s3://bkt/db?endpoint=", "endpoint is empty"),
        ("s3://bkt/db#frag", "a fragment"),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_s3_url(url)


# --------------------------------------------------------------------------- URL + flags


def test_url_and_flags_that_agree_combine() -> None:
    args = parse(
        "pitr", "restore", "--s3-url", "s3://bkt/db?region=eu-west-1",
        "--s3-bucket", "bkt", "--s3-prefix", "db/", "--s3-endpoint", "http://127.0.0.1:9000",
    )  # fmt: skip
    options = s3_options(args)
    assert (options.bucket, options.prefix, options.region, options.endpoint) == (
        "bkt", "db/", "eu-west-1", "http://127.0.0.1:9000",
    )  # fmt: skip
    assert not options.force_path_style, "only the URL's endpoint turns path style on"
    resolve_s3_url(args)  # again: nothing changes
    assert s3_options(args) == options


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--s3-bucket", "other"], "--s3-url says bucket 'bkt' but --s3-bucket says 'other'"),
        (["--s3-prefix", "elsewhere/"], "says prefix 'db/' but --s3-prefix says 'elsewhere/'"),
        (["--s3-region", "us-east-1"], "says region 'eu-west-1' but --s3-region"),
        (["--s3-endpoint", "http://127.0.0.1:1"], "says endpoint 'https://s3.example.test'"),
    ],
)
def test_contradictions_are_refused(argv: list[str], message: str) -> None:
    url = "s3://bkt/db?region=eu-west-1&endpoint=https://s3.example.test"
    args = parse("pitr", "restore", "--s3-url", url, *argv)
    with pytest.raises(ValueError, match=message):
        resolve_s3_url(args)


def test_path_style_off_in_the_url_contradicts_the_flag() -> None:
    args = parse(
        "pitr", "restore", "--s3-url", "s3://bkt/db?force-path-style=false",
        "--s3-force-path-style",
    )  # fmt: skip
    with pytest.raises(ValueError, match="force-path-style=false but --s3-force-path-style"):
        resolve_s3_url(args)


def test_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DENO_KV_S3_URL", "s3://envbkt/p?region=auto")
    monkeypatch.setenv("AWS_REGION", "us-east-1")  # the generic region does not contradict
    options = s3_options(parse("pitr", "restore"))
    assert (options.bucket, options.prefix, options.region) == ("envbkt", "p/", "auto")


def test_aws_region_is_the_last_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DENO_KV_S3_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    assert s3_options(parse("pitr", "restore", "--s3-bucket", "b")).region == "ap-south-1"


def test_checksum_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DENO_KV_S3_RESPONSE_CHECKSUM_VALIDATION", "when_supported")
    args = parse(
        "pitr", "restore", "--s3-bucket", "b", "--s3-endpoint", "http://127.0.0.1:1",
        "--s3-request-checksum-calculation", "when_supported",
    )  # fmt: skip
    options = s3_options(args)
    assert options.checksum_settings() == {
        "request_checksum_calculation": "when_supported",
        "response_checksum_validation": "when_supported",
    }


# --------------------------------------------------------------------------- credentials


def test_litestream_credentials_are_used_without_aws_ones() -> None:
    env = {"LITESTREAM_ACCESS_KEY_ID": "LSKEY", "LITESTREAM_SECRET_ACCESS_KEY": "LSSECRET"}
    assert litestream_credentials(env) == ("LSKEY", "LSSECRET")
    assert litestream_credentials({**env, "AWS_ACCESS_KEY_ID": "AWSKEY"}) == (None, None)
    assert litestream_credentials({}) == (None, None)


def test_half_a_litestream_key_pair_is_refused() -> None:
    with pytest.raises(ValueError, match="LITESTREAM_ACCESS_KEY_ID is set but LITESTREAM_SECRET"):
        litestream_credentials({"LITESTREAM_ACCESS_KEY_ID": "LSKEY"})


# --------------------------------------------------------------------------- the CLI


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in env.items() if not k.startswith("DENO_KV_")}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=clean,
                          capture_output=True, text=True, timeout=90, check=False)  # fmt: skip


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single `error: ...` line a failed command printed (and nothing else)."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def s3_flags(endpoint: str, bucket: str) -> list[str]:
    return ["--s3-bucket", bucket, "--s3-prefix", PREFIX, "--s3-endpoint", endpoint,
            "--s3-force-path-style"]  # fmt: skip


def serve_args(db: Path, *extra: str) -> list[str]:
    return ["--sqlite-path", str(db), "serve", "--access-token", TOKEN,
            "--addr", f"127.0.0.1:{free_port()}", *extra]  # fmt: skip


@pytest.mark.s3
def test_restore_from_a_missing_bucket(tmp_path: Path, s3_bucket: tuple[str, str]) -> None:
    endpoint, _ = s3_bucket
    bucket = unique_bucket_name("absent")
    out = tmp_path / "r.sqlite"
    done = run_cli("--sqlite-path", str(out), "pitr", "restore", *s3_flags(endpoint, bucket),
                  env=s3_env())  # fmt: skip
    assert one_error_line(done) == (
        f"error: restore failed: s3: list {bucket}/{PREFIX}generations/: "
        "NoSuchBucket: The specified bucket does not exist"
    )
    assert not out.exists()


@pytest.mark.slow
def test_restore_and_sync_from_an_unreachable_endpoint(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    where = f"s3: list bkt/{PREFIX}generations/: could not connect to endpoint {endpoint}"
    restore = run_cli("--sqlite-path", str(tmp_path / "r.sqlite"), "pitr", "restore",
                     *s3_flags(endpoint, "bkt"), env=s3_env())  # fmt: skip
    assert one_error_line(restore) == f"error: restore failed: {where}"
    sync = run_cli("--sqlite-path", str(tmp_path / "s.sqlite"), "pitr", "sync",
                  *s3_flags(endpoint, "bkt"), env=s3_env())  # fmt: skip
    assert one_error_line(sync) == f"error: sync failed: {where}"


def test_bad_url_and_contradiction_are_one_line(tmp_path: Path) -> None:
    out = str(tmp_path / "r.sqlite")
    bad = run_cli("--sqlite-path", out, "pitr", "restore", "--s3-url", "s3://bkt/db?sse=on",
                 env=s3_env())  # fmt: skip
    assert "unknown parameter 'sse'" in one_error_line(bad)
    clash = run_cli("--sqlite-path", out, "pitr", "restore", "--s3-url", "s3://bkt/db",
                   "--s3-bucket", "other", env=s3_env())  # fmt: skip
    assert one_error_line(clash) == (
        "error: --s3-url says bucket 'bkt' but --s3-bucket says 'other': "
        "give it in one place, or make them agree"
    )
    half = {k: v for k, v in s3_env().items() if not k.startswith("AWS_ACCESS_KEY_ID")}
    half["LITESTREAM_ACCESS_KEY_ID"] = "only-half"
    from_env = run_cli("--sqlite-path", out, "pitr", "restore", "--s3-bucket", "bkt", env=half)
    assert "LITESTREAM_ACCESS_KEY_ID is set but" in one_error_line(from_env)


@pytest.mark.parametrize("replica", [False, True], ids=["primary", "replica"])
@pytest.mark.s3
def test_serve_refuses_a_missing_bucket(
    tmp_path: Path, s3_bucket: tuple[str, str], replica: bool
) -> None:
    endpoint, _ = s3_bucket
    bucket = unique_bucket_name("absent")
    db = tmp_path / "kv.sqlite"
    mode = ["--sync-from-s3"] if replica else []
    done = run_cli(*serve_args(db, *mode, *s3_flags(endpoint, bucket)), env=s3_env())
    assert one_error_line(done) == (
        f"error: the backup location is not usable: s3: list {bucket}/{PREFIX}: "
        "NoSuchBucket: The specified bucket does not exist"
    )
    assert not db.exists(), "a refused start must not create the database"


@pytest.mark.slow
def test_serve_starts_while_the_endpoint_is_unreachable(tmp_path: Path) -> None:
    """The database must come up during an S3 outage; shipping waits for S3."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    srv = ServerProcess(
        tmp_path / "kv.sqlite", extra_args=s3_flags(endpoint, "bkt"), env=s3_env()
    ).start()
    try:

        async def write() -> bool:
            async with denokv.open_kv(srv.url, access_token=srv.token) as kv:
                return (await kv.set(["during", "outage"], 1)).ok

        assert asyncio.run(write())
    finally:
        srv.stop()
    assert "the backup location cannot be reached yet" in srv.logs()
    assert f"could not connect to endpoint {endpoint}" in srv.logs()


# --------------------------------------------------------------------------- IAM


@dataclass(frozen=True)
class AuthMoto:
    endpoint: str
    bucket: str
    keys: dict[str, tuple[str, str]]  # user -> (access key id, secret)

    def env(self, user: str, *, litestream: bool = False) -> dict[str, str]:
        key_id, secret = self.keys[user]
        env = s3_env()
        if litestream:
            del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
            env.update(LITESTREAM_ACCESS_KEY_ID=key_id, LITESTREAM_SECRET_ACCESS_KEY=secret)
        else:
            env.update(AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=secret)
        return env


POLICIES = {
    "admin": ["*"],
    "reader": ["s3:ListBucket", "s3:GetObject"],  # a replica's rights, not a primary's
    "getter": ["s3:GetObject"],
}


@pytest.fixture(scope="module")
def auth_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthMoto]:
    """A moto server that checks credentials and IAM policies (after the first 4 requests:
    its readiness poll and the admin user's creation)."""
    import boto3  # type: ignore[import-untyped]  # boto3 has no stubs installed (botocore has)

    log = tmp_path_factory.mktemp("moto-auth") / "moto.log"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "4")
        server = MotoServer(log_path=log).start()
    try:
        keys: dict[str, tuple[str, str]] = {}
        creds = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
        for user, actions in POLICIES.items():
            iam = boto3.client("iam", endpoint_url=server.endpoint, region_name="us-east-1",
                               **creds)  # fmt: skip
            iam.create_user(UserName=user)
            statement = {"Effect": "Allow", "Action": actions, "Resource": "*"}
            policy = {"Version": "2012-10-17", "Statement": [statement]}
            iam.put_user_policy(UserName=user, PolicyName=user, PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
            if user == "admin":
                creds = {"aws_access_key_id": keys[user][0], "aws_secret_access_key": keys[user][1]}
        bucket = unique_bucket_name("auth")
        s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1", **creds)
        s3.create_bucket(Bucket=bucket)
        yield AuthMoto(server.endpoint, bucket, keys)
    finally:
        server.stop()


@pytest.mark.s3
def test_moto_checks_credentials(auth_moto: AuthMoto) -> None:
    # Without this the tests below would prove nothing.
    denied = run_cli("--sqlite-path", "unused", "pitr", "restore",
                    *s3_flags(auth_moto.endpoint, auth_moto.bucket), env=s3_env())  # fmt: skip
    assert "InvalidAccessKeyId" in one_error_line(denied)


@pytest.mark.s3
def test_serve_without_write_access_is_refused(tmp_path: Path, auth_moto: AuthMoto) -> None:
    db = tmp_path / "kv.sqlite"
    done = run_cli(*serve_args(db, *s3_flags(auth_moto.endpoint, auth_moto.bucket)),
                  env=auth_moto.env("reader"))  # fmt: skip
    line = one_error_line(done)
    probe = f"s3: put {auth_moto.bucket}/{PREFIX}.denokv-probe-"
    assert line.startswith(f"error: the backup location is not usable: {probe}"), line
    assert line.endswith(": AccessDenied: Access Denied"), line
    assert not db.exists()


@pytest.mark.s3
def test_a_replica_needs_only_read_access(tmp_path: Path, auth_moto: AuthMoto) -> None:
    # The start-up check of a replica must not write: its credentials may be read-only.
    flags = s3_flags(auth_moto.endpoint, auth_moto.bucket)
    replica = ServerProcess(tmp_path / "replica.sqlite", token=TOKEN,
                            env=auth_moto.env("reader"),
                            extra_args=["--sync-from-s3", *flags])  # fmt: skip
    replica.start()  # returns once the port is open: the check passed
    try:
        assert replica.proc is not None and replica.proc.poll() is None
    finally:
        replica.stop()
    assert "not usable" not in replica.logs()


@pytest.mark.s3
def test_restore_without_list_access_is_refused(tmp_path: Path, auth_moto: AuthMoto) -> None:
    done = run_cli("--sqlite-path", str(tmp_path / "r.sqlite"), "pitr", "restore",
                  *s3_flags(auth_moto.endpoint, auth_moto.bucket),
                  env=auth_moto.env("getter"))  # fmt: skip
    assert one_error_line(done) == (
        f"error: restore failed: s3: list {auth_moto.bucket}/{PREFIX}generations/: "
        "AccessDenied: Access Denied"
    )


@pytest.mark.s3
def test_litestream_credential_variables(tmp_path: Path, auth_moto: AuthMoto) -> None:
    argv = ["--sqlite-path", str(tmp_path / "r.sqlite"), "pitr", "restore", "--if-not-exists",
            *s3_flags(auth_moto.endpoint, auth_moto.bucket)]  # fmt: skip
    used = run_cli(*argv, env=auth_moto.env("reader", litestream=True))
    assert used.returncode == 0, used.stderr
    assert "the server will start empty" in used.stdout

    wrong = auth_moto.env("reader", litestream=True)
    wrong["LITESTREAM_SECRET_ACCESS_KEY"] = "not-the-secret"
    assert "SignatureDoesNotMatch" in one_error_line(run_cli(*argv, env=wrong))

    # With AWS_ACCESS_KEY_ID set the standard chain wins, as in Litestream.
    aws_wins = {**auth_moto.env("reader"), "LITESTREAM_ACCESS_KEY_ID": "AKIAWRONG",
                "LITESTREAM_SECRET_ACCESS_KEY": "wrong"}  # fmt: skip
    assert run_cli(*argv, env=aws_wins).returncode == 0


# --------------------------------------------------------------------------- end to end


async def _writes(url: str, n: int) -> None:
    async with denokv.open_kv(url, access_token=TOKEN) as kv:
        for i in range(n):
            await kv.set(["k", i], i)


def _wait_backed_up(db: Path, endpoint: str, bucket: str) -> None:
    """Until every write is in S3: a complete generation, and no redo backlog.

    Writes that land before the first generation starts are in its snapshot,
    not in a log segment, so waiting for a segment alone can wait forever.
    """
    wait_shipped(db, timeout=30)
    wait_until(lambda: bool(complete_generations(endpoint, bucket, PREFIX)), 30,
               "a complete generation in S3")  # fmt: skip


@pytest.mark.parametrize(
    "server_kind",
    [
        pytest.param("moto", marks=pytest.mark.s3),
        pytest.param("s3rver", marks=[pytest.mark.s3, pytest.mark.node, pytest.mark.slow]),
    ],
)
def test_serve_and_restore_with_only_the_url(
    tmp_path: Path, request: pytest.FixtureRequest, server_kind: str
) -> None:
    if server_kind == "moto":
        endpoint = request.getfixturevalue("moto_s3").endpoint
    else:
        endpoint = request.getfixturevalue("s3rver_server").endpoint
    bucket = unique_bucket_name("url")
    create_bucket(endpoint, bucket)
    url = f"s3://{bucket}/{PREFIX.rstrip('/')}?endpoint={endpoint}&region=us-east-1"
    srv = ServerProcess(tmp_path / "p.sqlite", token=TOKEN, env=s3_env(),
                        extra_args=["--s3-url", url, "--s3-sync-interval", "200ms"])  # fmt: skip
    srv.start()
    try:
        asyncio.run(_writes(srv.url, 5))
        _wait_backed_up(srv.db_path, endpoint, bucket)
    finally:
        srv.stop()
    warned = "does not enforce If-None-Match and If-Match" in srv.logs()
    assert warned is (server_kind == "s3rver"), srv.logs()
    out = tmp_path / "restored.sqlite"
    done = run_cli("--sqlite-path", str(out), "pitr", "restore", "--s3-url", url, env=s3_env())
    assert done.returncode == 0, done.stderr

    async def read() -> list[object]:
        async with denokv.open_kv(str(out)) as kv:
            return [e.value async for e in kv.list(prefix=["k"])]

    assert asyncio.run(read()) == [0, 1, 2, 3, 4]
