"""checkov scans the rendered manifests; only the failures justified below are accepted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.chart import VALUE_SETS, rendered
from tests.support.paths import ROOT

# The Helm Go SDK, kubernetes-validate and checkov: `make test` installs them.
pytestmark = pytest.mark.chart


CHECKOV_JUSTIFIED: dict[str, tuple[set[str], str]] = {
    "CKV_K8S_15": (
        {"primary", "backup", "existing-secret", "secret-files"},
        "imagePullPolicy IfNotPresent (not Always): the image is pinned to an immutable "
        "version tag, and Always would make every restart of the database depend on the "
        "registry being reachable; with image.digest set the check passes ('replicas').",
    ),
    "CKV_K8S_43": (
        {"primary", "backup", "existing-secret", "secret-files"},
        "these sets use the default tag (the chart's appVersion): no digest can be known "
        "before an image is built; setting image.digest pulls by digest and passes (the "
        "'replicas' set proves it).",
    ),
    "CKV_K8S_35": (
        {"primary", "backup", "replicas", "existing-secret"},
        "secrets.mode=env is the user's choice (and the default); secrets.mode=file mounts "
        "them as files and passes (the 'secret-files' set proves it).",
    ),
}


def find_checkov() -> str:
    candidates = [os.environ.get("CHECKOV"), str(ROOT / ".cache/checkov/bin/checkov")]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    found = shutil.which("checkov")
    if found:
        return found
    pytest.fail(
        "checkov not found: `make test` installs it into .cache/checkov (its pins clash with "
        "this project's, so it has a virtualenv of its own): python3 -m venv .cache/checkov "
        "&& .cache/checkov/bin/pip install checkov==3.3.30; or set CHECKOV=/path/to/checkov",
        False,
    )


@pytest.mark.slow
def test_checkov(tmp_path: Path) -> None:
    for name in VALUE_SETS:
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifests.yaml").write_text(rendered(name).manifest())
    proc = subprocess.run(
        [
            find_checkov(),
            "-d",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "-o",
            "json",
            "--skip-download",
            "--compact",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["check_type"] == "kubernetes"
    summary = report["summary"]
    objects = sum(len(rendered(name).objects) for name in VALUE_SETS)
    assert summary["parsing_errors"] == 0, summary
    assert summary["resource_count"] >= objects, summary  # everything rendered was scanned
    assert summary["passed"] > 100, summary

    def value_set(check: dict[str, Any]) -> str:
        return Path(check["file_path"]).parts[1]

    unexpected, used = [], set()
    for check in report["results"]["failed_checks"]:
        sets, _ = CHECKOV_JUSTIFIED.get(check["check_id"], (set(), ""))
        if value_set(check) in sets:
            used.add((check["check_id"], value_set(check)))
        else:
            unexpected.append(
                f"{check['check_id']} {check['check_name']}: {check['resource']} "
                f"({value_set(check)})"
            )
    assert not unexpected, "checkov failures without a justification:\n" + "\n".join(unexpected)
    unneeded = [
        (cid, s)
        for cid, (sets, _) in CHECKOV_JUSTIFIED.items()
        for s in sets
        if (cid, s) not in used
    ]
    assert not unneeded, f"justified checkov failures that no longer fail: {unneeded}"
    passed = {(c["check_id"], value_set(c)) for c in report["results"]["passed_checks"]}
    assert ("CKV_K8S_43", "replicas") in passed  # a digest passes
    assert ("CKV_K8S_35", "secret-files") in passed  # secrets as files pass
