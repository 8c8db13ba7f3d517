"""The Dockerfile, read without Docker: the image's shape and its HEALTHCHECK, run for real.

No Helm and no chart tools: these run in `make test-fast`. (The image's ENTRYPOINT + CMD
through the parser, beside the chart's command lines, is in test_commands.py.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.dockerfile import PYPROJECT, dockerfile_instructions, exec_form, final_stage
from tests.support.paths import ROOT


def test_dockerfile_image_shape() -> None:
    instructions = dockerfile_instructions()
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert len(froms) >= 2, "multi-stage build"
    args = dict(rest.split("=", 1) for word, rest in instructions if word == "ARG" and "=" in rest)
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], froms[-1].split()[0])
    assert base == "python:3.11-slim"
    stage = final_stage()
    users = [rest for word, rest in stage if word == "USER"]
    assert users and users[-1].split(":")[0] == "10001"
    assert ("EXPOSE", "4512") in stage
    assert any(word == "VOLUME" and "/data" in rest for word, rest in stage)
    env = " ".join(rest for word, rest in stage if word == "ENV")
    assert "DENO_KV_SQLITE_PATH=/data/denokv.sqlite" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # nothing written under a read-only root
    [health] = [rest for word, rest in stage if word == "HEALTHCHECK"]
    assert "curl" not in health and "wget" not in health
    # every package the distribution ships is in the build context
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert ignore[0] == "*", "the build context is an allow-list"
    for package in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert f"!{package.rstrip('*')}/" in ignore, package
    assert "!pyproject.toml" in ignore and "!README.md" in ignore


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_dockerfile_healthcheck_runs(status: int, healthy: bool) -> None:
    """The HEALTHCHECK command, run as Docker would, against a stand-in /healthz."""
    [health] = [rest for word, rest in final_stage() if word == "HEALTHCHECK"]
    command = exec_form(health.split(" CMD ", 1)[1])
    assert command[0] == "python"
    handler = type("Handler", (_Health,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/healthz"
        proc = subprocess.run(
            [sys.executable, *command[1:]],
            capture_output=True,
            timeout=30,
            check=False,
            env={**os.environ, "DENO_KV_HEALTHCHECK_URL": url},
        )
    finally:
        server.shutdown()
        server.server_close()
    assert (proc.returncode == 0) is healthy, proc.stderr
