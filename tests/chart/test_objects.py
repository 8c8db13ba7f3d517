"""What the rendered objects say: hardened pods, flags, Secrets, selectors, NOTES.txt."""

from __future__ import annotations

import configparser
from typing import Any

import pytest

from tests.support.chart import (
    DIGEST,
    EXISTING_SECRET,
    EXISTING_SECRET_DATA,
    FULL,
    NAMESPACE,
    S3,
    TOKEN,
    VALUE_SETS,
    args_of,
    component,
    container_env,
    flag,
    pod_labels,
    pod_spec,
    rendered,
    secret_data,
    selects,
)

# The Helm Go SDK, kubernetes-validate and checkov: `make test` installs them.
pytestmark = pytest.mark.chart


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_pods_hardened_with_probes_and_volumes(value_set: str) -> None:
    r = rendered(value_set)
    assert r.workloads
    for w in r.workloads:
        spec = pod_spec(w)
        assert spec["automountServiceAccountToken"] is False
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        volumes = {v["name"]: v for v in spec["volumes"]}
        claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
        assert volumes["tmp"]["emptyDir"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert sc["runAsUser"] == 10001 and sc["runAsNonRoot"] is True
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert {"cpu", "memory"} <= set(c["resources"]["limits"])
            assert {"cpu", "memory"} <= set(c["resources"]["requests"])
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert mounts["/tmp"] == "tmp" and mounts["/data"] == "data"
            for name in mounts.values():
                assert name in volumes or name in claims, f"{c['name']}: no volume {name}"
        [server] = spec["containers"]
        ports = {p["name"]: p["containerPort"] for p in server["ports"]}
        assert ports["http"] == 4512
        assert server["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert server["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert server["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    sa = r.one("ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    for w in r.workloads:
        assert pod_spec(w)["serviceAccountName"] == sa["metadata"]["name"]


def test_primary_only() -> None:
    r = rendered("primary")
    sts = r.one("StatefulSet", FULL)
    assert sts["spec"]["replicas"] == 1
    spec = pod_spec(sts)
    assert "initContainers" not in spec
    [c] = spec["containers"]
    args = args_of(c)
    assert args[:3] == ["--sqlite-path", "/data/denokv.sqlite", "serve"]
    assert flag(args, "--addr") == "0.0.0.0:4512"
    assert not [a for a in args if a.startswith("--s3")]
    env = {e["name"]: e for e in c["env"]}
    assert env["DENO_KV_ACCESS_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": FULL,
        "key": "access-token",
    }
    assert not [n for n in env if n.startswith("AWS_")]
    assert r.one("Secret", FULL)["stringData"] == {"access-token": TOKEN}
    [vct] = sts["spec"]["volumeClaimTemplates"]
    assert vct["metadata"]["name"] == "data"
    assert vct["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert not r.all("Deployment") and not r.all("PodDisruptionBudget")
    assert not r.all("ServiceMonitor")
    # the pod restarts when the Secret it reads changes
    assert "checksum/secret" in sts["spec"]["template"]["metadata"]["annotations"]


def test_primary_with_backup() -> None:
    r = rendered("backup")
    spec = pod_spec(r.one("StatefulSet", FULL))
    [restore] = spec["initContainers"]
    [c] = spec["containers"]
    rargs = args_of(restore)
    assert rargs[:4] == ["--sqlite-path", "/data/denokv.sqlite", "pitr", "restore"]
    assert rargs[-1] == "--if-not-exists"
    args = args_of(c)
    for a in (rargs, args):
        assert flag(a, "--s3-bucket") == S3["bucket"]
        assert flag(a, "--s3-prefix") == S3["prefix"]
        assert flag(a, "--s3-endpoint") == S3["endpoint"]
        assert flag(a, "--s3-region") == S3["region"]
        assert "--s3-force-path-style" in a
    assert flag(args, "--s3-compression") == "zstd"
    assert flag(args, "--s3-sync-interval") == "1s"
    assert flag(args, "--s3-snapshot-interval") == "24h"
    assert flag(args, "--s3-retention") == "7d"
    assert flag(args, "--ready-max-backup-lag") == "5m"
    for container in (restore, c):
        env = container_env(r, container)
        assert env["AWS_ACCESS_KEY_ID"] == "AKIATEST"
        assert env["AWS_SECRET_ACCESS_KEY"] == "secret-test-key"
    assert "DENO_KV_ACCESS_TOKEN" not in container_env(r, restore)  # restore needs no token
    ini = configparser.ConfigParser()
    ini.read_string(secret_data(r, FULL)["aws-credentials"])
    assert dict(ini["default"]) == {
        "aws_access_key_id": "AKIATEST",
        "aws_secret_access_key": "secret-test-key",
    }
    annotations = r.one("StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["example.com/team"] == "kv" and "checksum/secret" in annotations
    # egress to the S3 endpoint's own port
    [np] = r.all("NetworkPolicy")
    s3_rules = [e for e in np["spec"]["egress"] if "to" in e]
    assert s3_rules[0]["ports"] == [{"port": 9000, "protocol": "TCP"}]


def test_primary_backup_and_replicas() -> None:
    r = rendered("replicas")
    dep = r.one("Deployment", f"{FULL}-replica")
    assert dep["spec"]["replicas"] == 2
    spec = pod_spec(dep)
    assert "initContainers" not in spec
    [c] = spec["containers"]
    args = args_of(c)
    assert args[:3] == ["--sqlite-path", "/data/replica.sqlite", "serve"]
    assert "--sync-from-s3" in args
    assert flag(args, "--s3-bucket") == S3["bucket"]
    assert flag(args, "--s3-poll-interval") == "1s"
    assert flag(args, "--metrics-addr") == "0.0.0.0:9090"
    # --primary-url names the primary Service, on the port it exposes
    primary_svc = r.one("Service", FULL)
    assert flag(args, "--primary-url") == (
        f"http://{FULL}.{NAMESPACE}.svc.cluster.local:{primary_svc['spec']['ports'][0]['port']}"
    )
    data = {v["name"]: v for v in spec["volumes"]}["data"]
    assert data["ephemeral"]["volumeClaimTemplate"]["spec"]["resources"]["requests"] == {
        "storage": "10Gi"
    }
    assert all(
        w["spec"]["template"]["spec"]["containers"][0]["image"] == f"denokv@{DIGEST}"
        for w in r.workloads
    )
    pdb = r.one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(dep))
    assert not selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(r.one("StatefulSet")))
    # clients restricted: the primary still admits the replicas
    primary_np = r.one("NetworkPolicy", FULL)
    peers = [p for rule in primary_np["spec"]["ingress"] for p in rule.get("from", [])]
    assert any(
        selects(p.get("podSelector", {}).get("matchLabels", {}), pod_labels(dep)) for p in peers
    )
    replica_np = r.one("NetworkPolicy", f"{FULL}-replica")
    to_primary = [
        p for rule in replica_np["spec"]["egress"] for p in rule.get("to", []) if "podSelector" in p
    ]
    assert selects(to_primary[0]["podSelector"]["matchLabels"], pod_labels(r.one("StatefulSet")))


def test_existing_secret() -> None:
    r = rendered("existing-secret")
    assert not r.all("Secret")
    sts = r.one("StatefulSet")
    assert "checksum/secret" not in (sts["spec"]["template"]["metadata"].get("annotations") or {})
    spec = pod_spec(sts)
    for c in spec["initContainers"] + spec["containers"]:
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
        assert {ref["name"] for ref in refs.values()} == {EXISTING_SECRET}
        env = container_env(r, c)
        assert env["AWS_ACCESS_KEY_ID"] == EXISTING_SECRET_DATA["s3-id"]
        assert env["AWS_SECRET_ACCESS_KEY"] == EXISTING_SECRET_DATA["s3-key"]
    assert (
        container_env(r, spec["containers"][0])["DENO_KV_ACCESS_TOKEN"]
        == (EXISTING_SECRET_DATA["token"])
    )
    assert f"get secret {EXISTING_SECRET}" in r.notes
    assert "{.data.token}" in r.notes


def test_secrets_as_files() -> None:
    r = rendered("secret-files")
    secret = r.one("Secret", FULL)
    assert not r.all("PodDisruptionBudget")  # one replica: a budget would block every drain
    assert r.one("Deployment")["spec"]["replicas"] == 1
    for w in r.workloads:
        spec = pod_spec(w)
        vol = {v["name"]: v for v in spec["volumes"]}["secrets"]["secret"]
        assert vol["secretName"] == secret["metadata"]["name"]
        assert vol["defaultMode"] == 0o440  # group-readable through fsGroup 10001
        items = {i["key"]: i["path"] for i in vol["items"]}
        assert items == {"access-token": "access-token", "aws-credentials": "aws-credentials"}
        assert set(items) <= set(secret["stringData"])
        for c in spec.get("initContainers", []) + spec["containers"]:
            env = container_env(r, c)
            secret_env = {"DENO_KV_ACCESS_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
            assert not secret_env & set(env)
            mount = {m["name"]: m for m in c["volumeMounts"]}["secrets"]
            assert mount["readOnly"] is True
            assert env["AWS_SHARED_CREDENTIALS_FILE"] == f"{mount['mountPath']}/aws-credentials"
        [c] = spec["containers"]
        mount = {m["name"]: m for m in c["volumeMounts"]}["secrets"]
        assert flag(args_of(c), "--access-token-file") == f"{mount['mountPath']}/access-token"


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_selectors_select(value_set: str) -> None:
    r = rendered(value_set)
    primary = component(r, "primary")
    replica = component(r, "replica")
    assert primary is not None
    pods = [w for w in (primary, replica) if w]
    for w in pods:
        assert selects(w["spec"]["selector"]["matchLabels"], pod_labels(w))
        for other in pods:
            if other is not w:
                assert not selects(w["spec"]["selector"]["matchLabels"], pod_labels(other))

    def selected(svc: dict[str, Any]) -> list[dict[str, Any]]:
        return [w for w in pods if selects(svc["spec"]["selector"], pod_labels(w))]

    assert selected(r.one("Service", FULL)) == [primary]
    assert selected(r.one("Service", f"{FULL}-read")) == [replica or primary]
    headless = r.one("Service", f"{FULL}-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert selected(headless) == pods
    assert primary["spec"]["serviceName"] == headless["metadata"]["name"]
    for svc in r.all("Service"):
        for port in svc["spec"]["ports"]:
            for w in selected(svc):
                names = {p["name"] for p in pod_spec(w)["containers"][0]["ports"]}
                assert port["targetPort"] in names, (svc["metadata"]["name"], port)
    policies = r.all("NetworkPolicy")
    for w in pods:
        assert [
            np
            for np in policies
            if selects(np["spec"]["podSelector"]["matchLabels"], pod_labels(w))
        ], w
    for sm in r.all("ServiceMonitor"):
        [target] = [
            s
            for s in r.all("Service")
            if selects(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert target is headless
        port_names = {p["name"] for p in target["spec"]["ports"]}
        assert {e["port"] for e in sm["spec"]["endpoints"]} <= port_names
    if replica is not None and replica["spec"]["replicas"] >= 2:
        assert r.all("PodDisruptionBudget")


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_notes_tell_how_to_connect_deno(value_set: str) -> None:
    notes = rendered(value_set).notes
    url = f"http://{FULL}.{NAMESPACE}.svc.cluster.local:4512"
    assert f'Deno.openKv("{url}")' in notes
    assert "DENO_KV_ACCESS_TOKEN" in notes and "--unstable-kv" in notes
    assert "port-forward" in notes
