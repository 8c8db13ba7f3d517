"""The chart lints clean with the real Helm SDK and every object it renders is valid.

Objects are validated with `kubernetes-validate` in strict mode for the oldest and the
newest Kubernetes version it ships schemas for; an object without a schema fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.chart import (
    CHART,
    K8S_VERSIONS,
    VALUE_SETS,
    helm,
    jsonschema,
    kv_utils,
    load_chart,
    rendered,
    yaml,
)
from tests.support.dockerfile import PYPROJECT

HERE = Path(__file__).resolve().parent

# The Helm Go SDK, kubernetes-validate and checkov: `make test` installs them.
pytestmark = pytest.mark.chart


def test_chart_metadata() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"  # Helm 3 and 4
    assert meta["appVersion"] == PYPROJECT["project"]["version"]
    # The chart claims exactly the oldest version it is validated against below.
    assert meta["kubeVersion"] == f">={K8S_VERSIONS[0]}-0"


@pytest.mark.parametrize("kube_version", K8S_VERSIONS)
@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_helm_lint(value_set: str, kube_version: str) -> None:
    report = helm.lint(
        str(CHART), VALUE_SETS[value_set], strict=True, kube_version=f"v{kube_version}"
    )
    assert report["total_charts_linted"] == 1
    # severity 1 is INFO ("icon is recommended"); warnings and errors fail
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], (problems, report["errors"])


SERVICEMONITOR_SCHEMA = json.loads((HERE / "servicemonitor.schema.json").read_text())


@pytest.mark.parametrize("kube_version", K8S_VERSIONS)
@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_objects_valid_for_kubernetes(value_set: str, kube_version: str) -> None:
    """Strict schemas: an unknown field is an error, and so is a kind with no schema.

    ServiceMonitor is a prometheus-operator CRD, not a built-in kind: kubernetes-validate
    ships no schema for it and would raise SchemaNotFoundError. It is the one kind validated
    instead against tests/chart/servicemonitor.schema.json, a strict subset of the CRD's
    openAPIV3Schema covering the fields the chart renders."""
    errors = []
    for obj in rendered(value_set).objects:
        what = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["apiVersion"] == "monitoring.coreos.com/v1" and obj["kind"] == "ServiceMonitor":
            for e in jsonschema.Draft7Validator(SERVICEMONITOR_SCHEMA).iter_errors(obj):
                errors.append(f"{what}: {'.'.join(map(str, e.path))}: {e.message}")
            continue
        try:
            kv_utils.validate(obj, kube_version, strict=True)
        except kv_utils.ValidationError as e:
            errors.append(f"{what}: {'.'.join(map(str, e.path))}: {e.message}")
        except kv_utils.SchemaNotFoundError as e:
            errors.append(f"{what}: {e.message}")
    assert not errors, "\n".join(errors)


def test_every_kind_is_covered_by_the_value_sets() -> None:
    kinds = {o["kind"] for s in VALUE_SETS for o in rendered(s).objects}
    templates = {Path(t["name"]).name for t in load_chart().templates}
    assert kinds == {
        "Secret",
        "ServiceAccount",
        "StatefulSet",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
    }, kinds
    assert "NOTES.txt" in templates
