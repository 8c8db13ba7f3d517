"""The guards in the templates and the values schema: bad values are refused with a reason."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.chart import (
    TOKEN,
    VALUE_SETS,
    Rendered,
    command_lines,
    helm,
    load_chart,
    render_raw,
)

# The Helm Go SDK, kubernetes-validate and checkov: `make test` installs them.
pytestmark = pytest.mark.chart


BACKUP_OK: dict[str, Any] = {
    "enabled": True,
    "s3": {"bucket": "b-1", "accessKeyId": "a", "secretAccessKey": "s"},
}

GUARDS: dict[str, tuple[dict[str, Any], str]] = {
    "no-token": ({}, "auth.accessToken is required"),
    "replicas-without-backup": (
        {"auth": {"accessToken": TOKEN}, "replicas": {"enabled": True}},
        "replicas.enabled needs backup.enabled",
    ),
    "replicas-without-bucket": (
        {
            "auth": {"accessToken": TOKEN},
            "backup": {"enabled": True, "s3": {"accessKeyId": "a", "secretAccessKey": "s"}},
            "replicas": {"enabled": True},
        },
        "backup.s3.bucket is required",
    ),
    "backup-without-credentials": (
        {"auth": {"accessToken": TOKEN}, "backup": {"enabled": True, "s3": {"bucket": "b-1"}}},
        "backup needs S3 credentials",
    ),
    "half-credentials": (
        {
            "auth": {"accessToken": TOKEN},
            "backup": {"enabled": True, "s3": {"bucket": "b-1", "accessKeyId": "a"}},
        },
        "backup needs S3 credentials",
    ),
    "ambient-and-static-credentials": (
        {
            "auth": {"accessToken": TOKEN},
            "backup": {**BACKUP_OK, "s3": {**BACKUP_OK["s3"], "ambientCredentials": True}},
        },
        "leave backup.s3.accessKeyId and backup.s3.secretAccessKey empty",
    ),
    "credentials-without-backup": (
        {"auth": {"accessToken": TOKEN}, "backup": {"s3": {"accessKeyId": "a"}}},
        "backup.enabled is false",
    ),
    "existing-secret-and-token": (
        {"auth": {"accessToken": TOKEN}, "secrets": {"existingSecret": "x"}},
        "leave auth.accessToken",
    ),
    "existing-claim-without-persistence": (
        {
            "auth": {"accessToken": TOKEN},
            "primary": {"persistence": {"enabled": False, "existingClaim": "pvc"}},
        },
        "existingClaim needs primary.persistence.enabled",
    ),
    "read-only-with-backup": (
        {"auth": {"accessToken": TOKEN}, "backup": BACKUP_OK, "primary": {"readOnly": True}},
        "primary.readOnly cannot ship backups",
    ),
    "metrics-port-clash": (
        {"auth": {"accessToken": TOKEN}, "metrics": {"separatePort": True, "port": 4512}},
        "metrics.port must differ",
    ),
}


@pytest.mark.parametrize("case", list(GUARDS))
def test_render_guards(case: str) -> None:
    values, message = GUARDS[case]
    load_chart().validate_schema(values)  # the schema lets it through: the template must stop it
    with pytest.raises(helm.HelmRenderError) as exc:
        render_raw(values)
    assert message in str(exc.value)


def test_ambient_credentials_inject_none() -> None:
    values = {
        "auth": {"accessToken": TOKEN},
        "backup": {"enabled": True, "s3": {"bucket": "b-1", "ambientCredentials": True}},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/kv"}},
    }
    r = Rendered("ambient", values)
    for _, _, c in command_lines(r):
        assert not [e for e in c.get("env", []) if e["name"].startswith("AWS_")]
    assert set(r.one("Secret")["stringData"]) == {"access-token"}
    assert r.one("ServiceAccount")["metadata"]["annotations"]
    # persistence off and no backup: the data is in an emptyDir and NOTES says so
    r = Rendered(
        "ephemeral",
        {"auth": {"accessToken": TOKEN}, "primary": {"persistence": {"enabled": False}}},
    )
    assert "volumeClaimTemplates" not in r.one("StatefulSet")["spec"]
    assert "emptyDir" in r.notes and "WARNING" in r.notes


SCHEMA_REJECTS: dict[str, dict[str, Any]] = {
    "short-token": {"auth": {"accessToken": "short"}},
    "unknown-top-level-key": {"replica": {"enabled": True}},
    "misspelt-nested-key": {"backup": {"s3": {"buckets": "b"}}},
    "http-server": {"server": {"httpServer": "nginx"}},
    "synchronous": {"server": {"sqliteSynchronous": "fast"}},
    "workers-zero": {"server": {"numWorkers": 0}},
    "workers-string": {"server": {"numWorkers": "2"}},
    "port-range": {"server": {"port": 70000}},
    "secrets-mode": {"secrets": {"mode": "both"}},
    "replica-count-zero": {"replicas": {"replicaCount": 0}},
    "replica-storage": {"replicas": {"storage": {"type": "hostPath"}}},
    "prefix-without-slash": {"backup": {"s3": {"prefix": "denokv"}}},
    "prefix-absolute": {"backup": {"s3": {"prefix": "/denokv/"}}},
    "bucket-name": {"backup": {"s3": {"bucket": "My_Bucket"}}},
    "endpoint-scheme": {"backup": {"s3": {"endpoint": "minio:9000"}}},
    "compression": {"backup": {"compression": "gzip"}},
    "duration": {"backup": {"syncInterval": "soon"}},
    "duration-compound": {"backup": {"retention": "1h30m"}},  # the CLI takes one unit
    "digest": {"image": {"digest": "latest"}},
    "quantity": {"primary": {"resources": {"limits": {"memory": "lots"}}}},
    "pull-policy": {"image": {"pullPolicy": "Sometimes"}},
    "enabled-string": {"backup": {"enabled": "yes"}},
}


@pytest.mark.parametrize("case", list(SCHEMA_REJECTS))
def test_values_schema_rejects(case: str) -> None:
    values = {"auth": {"accessToken": TOKEN}} | SCHEMA_REJECTS[case]
    with pytest.raises(helm.HelmValuesError):
        load_chart().validate_schema(values)
    with pytest.raises(helm.HelmValuesError):  # and so does an install
        render_raw(values)


def test_values_schema_accepts_defaults_and_value_sets() -> None:
    load_chart().validate_schema({})
    for values in VALUE_SETS.values():
        load_chart().validate_schema(values)
