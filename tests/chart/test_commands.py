"""Every command line the chart and the image run goes through the real `denokv` parser.

Each container's command + args, with `$(VAR)` expanded and the container's environment
in place, and the Dockerfile's ENTRYPOINT + CMD (whose program the chart must run too).
"""

from __future__ import annotations

import pytest

from tests.support.argv import parse
from tests.support.chart import (
    EXISTING_SECRET_DATA,
    TOKEN,
    VALUE_SETS,
    argv_of,
    command_lines,
    pod_labels,
    rendered,
)
from tests.support.dockerfile import exec_form, final_stage

# The Helm Go SDK, kubernetes-validate and checkov: `make test` installs them.
pytestmark = pytest.mark.chart


CONTAINERS = [(s, ident) for s in VALUE_SETS for ident, _, _ in command_lines(rendered(s))]


@pytest.mark.parametrize(
    ("value_set", "ident"), CONTAINERS, ids=[f"{s}:{i}" for s, i in CONTAINERS]
)
def test_container_command_line_accepted_by_cli(
    value_set: str, ident: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = rendered(value_set)
    [(_, workload, c)] = [x for x in command_lines(r) if x[0] == ident]
    argv, env = argv_of(r, c)
    assert argv[0] == "denokv", f"{ident}: the command must be the denokv console script"
    ns = parse(argv[1:], env, monkeypatch)
    replica = pod_labels(workload)["app.kubernetes.io/component"] == "replica"
    assert ns.sqlite_path == ("/data/replica.sqlite" if replica else "/data/denokv.sqlite")
    backup = r.values.get("backup", {})
    if backup.get("enabled"):
        assert ns.s3_bucket == backup["s3"]["bucket"]
        assert ns.s3_prefix == backup["s3"]["prefix"]
        assert ns.s3_endpoint == backup["s3"].get("endpoint")
        assert ns.s3_region == backup["s3"].get("region")
    if c["name"] == "restore":
        assert (ns.command, ns.pitr_command, ns.if_not_exists) == ("pitr", "restore", True)
        return
    assert ns.command == "serve"
    assert ns.addr == "0.0.0.0:4512"
    if backup.get("enabled") and not replica:
        assert ns.s3_sync_interval == 1 and ns.s3_retention == 7 * 86400
    file_mode = r.values.get("secrets", {}).get("mode") == "file"
    if file_mode:
        assert ns.access_token_file == "/etc/denokv/secrets/access-token"
    else:
        existing = "existingSecret" in r.values.get("secrets", {})
        expected = EXISTING_SECRET_DATA["token"] if existing else TOKEN
        assert ns.access_token == expected


def test_dockerfile_entrypoint_and_cmd_accepted_by_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    stage = dict(final_stage())  # last of each instruction wins, as in Docker
    entrypoint = exec_form(stage["ENTRYPOINT"])
    cmd = exec_form(stage["CMD"])
    assert entrypoint == ["denokv"]
    ns = parse(cmd, {}, monkeypatch)
    assert ns.command == "serve"
    assert ns.sqlite_path.startswith("/data/")
    assert ns.addr.endswith(":4512")
    # the chart runs the same program the image names
    for _, _, c in command_lines(rendered("backup")):
        assert c["command"] == entrypoint
