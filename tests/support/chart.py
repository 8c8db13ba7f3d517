"""The Helm chart (charts/denokv) rendered by the real Helm v4 Go SDK, and reading it back.

The value sets every chart test renders, `Rendered` (one set's objects and NOTES.txt),
and what the tests look up in them: pods, labels, selectors, Secrets, a container's
environment and command line with Kubernetes' `$(VAR)` expansion.

Importing this module fails the test that does so, with the command that installs them,
when the Helm SDK, PyYAML, jsonschema or kubernetes-validate are missing.
"""

from __future__ import annotations

import base64
import functools
import importlib
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.paths import ROOT

CHART = ROOT / "charts" / "denokv"
INSTALL_HINT = "install the test extras: .venv/bin/pip install -e '.[test]' (or run `make test`)"


def _require(module: str, package: str) -> Any:
    try:
        return __import__(module)
    except ImportError as exc:
        pytest.fail(f"{package} is required by the chart tests ({exc}); {INSTALL_HINT}", False)


helm = _require("helm_python", "helm-python-sdk")
yaml = _require("yaml", "PyYAML")
jsonschema = _require("jsonschema", "jsonschema")
_require("kubernetes_validate", "kubernetes-validate")
kv_utils = importlib.import_module("kubernetes_validate.utils")  # it has no type stubs

RELEASE = "kv"
NAMESPACE = "denokv"
TOKEN = "chart-test-token-0123456789"
DIGEST = "sha256:" + "ab" * 32


S3 = {
    "bucket": "kv-backups",
    "prefix": "prod/denokv/",
    "endpoint": "http://minio.storage.svc:9000",
    "region": "eu-central-1",
    "forcePathStyle": True,
}
# The Secret a user creates for secrets.existingSecret, with key names of their own.
EXISTING_SECRET = "my-denokv-secrets"
EXISTING_KEYS = {"accessToken": "token", "awsAccessKeyId": "s3-id", "awsSecretAccessKey": "s3-key"}
EXISTING_SECRET_DATA = {
    "token": "existing-secret-token-0123",
    "s3-id": "AKIAEXISTING",
    "s3-key": "existing-secret-key",
}
BACKUP = {
    "enabled": True,
    "s3": {**S3, "accessKeyId": "AKIATEST", "secretAccessKey": "secret-test-key"},
}

VALUE_SETS: dict[str, dict[str, Any]] = {
    # The defaults plus the one required value.
    "primary": {"auth": {"accessToken": TOKEN}},
    "backup": {
        "auth": {"accessToken": TOKEN},
        "backup": BACKUP,
        "primary": {"podAnnotations": {"example.com/team": "kv"}},
    },
    "replicas": {
        "image": {"digest": DIGEST},
        "auth": {"accessToken": TOKEN},
        "backup": BACKUP,
        "replicas": {"enabled": True, "replicaCount": 2, "storage": {"type": "ephemeral"}},
        "metrics": {"separatePort": True, "serviceMonitor": {"enabled": True}},
        "networkPolicy": {
            "allowedClients": [{"podSelector": {"matchLabels": {"app": "deno-app"}}}],
            "allowedScrapers": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}
            ],
        },
    },
    # A Secret the user manages, with key names of their own.
    "existing-secret": {
        "secrets": {"existingSecret": EXISTING_SECRET, "keys": EXISTING_KEYS},
        "backup": {"enabled": True, "s3": {"bucket": "kv-backups", "prefix": "denokv/"}},
    },
    # The chart's Secret mounted as files; one replica (so no PodDisruptionBudget).
    "secret-files": {
        "auth": {"accessToken": TOKEN},
        "secrets": {"mode": "file"},
        "backup": BACKUP,
        "replicas": {"enabled": True, "replicaCount": 1},
    },
}

# checkov failures accepted, per check: the value sets it may fail in and why. Every other


# --- rendering --------------------------------------------------------------------------


@functools.cache
def load_chart() -> Any:
    return helm.Chart.load(str(CHART))


def render_raw(values: dict[str, Any]) -> dict[str, str]:
    files: dict[str, str] = load_chart().render(
        values, name=RELEASE, namespace=NAMESPACE, is_install=True
    )
    return files


class Rendered:
    """One value set rendered: its objects and NOTES.txt."""

    def __init__(self, name: str, values: dict[str, Any]) -> None:
        self.name = name
        self.values = values
        self.files = render_raw(values)
        self.objects: list[dict[str, Any]] = []
        self.notes = ""
        for path, text in sorted(self.files.items()):
            if path.endswith("NOTES.txt"):
                self.notes = text
            elif path.endswith(".yaml"):
                self.objects += [doc for doc in yaml.safe_load_all(text) if doc]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name or ''}, got {found}"
        return found[0]

    @property
    def workloads(self) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] in ("StatefulSet", "Deployment")]

    def manifest(self) -> str:
        return "".join("---\n" + yaml.safe_dump(o, sort_keys=False) for o in self.objects)


@functools.cache
def rendered(name: str) -> Rendered:
    return Rendered(name, VALUE_SETS[name])


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def component(r: Rendered, comp: str) -> dict[str, Any] | None:
    found = [w for w in r.workloads if pod_labels(w).get("app.kubernetes.io/component") == comp]
    assert len(found) <= 1
    return found[0] if found else None


FULL = f"{RELEASE}-denokv"


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ escapes, others stay."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(sub, text)


def secret_data(r: Rendered, name: str) -> dict[str, str]:
    if name == EXISTING_SECRET and r.values.get("secrets", {}).get("existingSecret"):
        return EXISTING_SECRET_DATA
    secret = r.one("Secret", name)
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return data


def container_env(r: Rendered, container: dict[str, Any]) -> dict[str, str]:
    """The environment the container's process sees (the image's own ENV aside)."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(str(item["value"]), env)
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            data = secret_data(r, ref["name"])
            assert ref["key"] in data, f"{item['name']}: Secret {ref['name']} has no {ref['key']}"
            env[item["name"]] = data[ref["key"]]
        else:
            pytest.fail(f"env {item['name']}: the test does not resolve {item}")
    return env


def command_lines(r: Rendered) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for w in r.workloads:
        spec = pod_spec(w)
        for c in spec.get("initContainers", []) + spec["containers"]:
            yield f"{w['kind']}/{w['metadata']['name']}/{c['name']}", w, c


def argv_of(r: Rendered, c: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    env = container_env(r, c)
    argv = [expand(str(a), env) for a in c.get("command", []) + c.get("args", [])]
    return argv, env


def args_of(c: dict[str, Any]) -> list[str]:
    return [str(a) for a in c["args"]]


def flag(args: list[str], name: str) -> str:
    assert name in args, f"{name} missing from {args}"
    return args[args.index(name) + 1]


# The oldest and the newest Kubernetes version kubernetes-validate ships schemas for.
K8S_VERSIONS = [kv_utils.all_versions()[0], kv_utils.all_versions()[-1]]
