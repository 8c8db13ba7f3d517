"""The real Deno CLI (the `deno` wheel of the test extras) and the scripts in tests/deno/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.paths import CACHE, DENO_SCRIPTS


def deno_binary() -> str:
    found = shutil.which("deno", path=str(Path(sys.executable).parent)) or shutil.which("deno")
    if not found:
        raise RuntimeError("the deno CLI is not installed; run `make install`")
    return found


def deno_env(token: str | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "DENO_DIR": str(CACHE / "deno"),
        "DENO_NO_UPDATE_CHECK": "1",
        "NO_COLOR": "1",
    }
    if token is not None:
        env["DENO_KV_ACCESS_TOKEN"] = token
    return env


def run_deno(script: str, *args: str, token: str | None = None, timeout: float = 120) -> Any:
    """Run tests/deno/<script> with the real Deno CLI; return the JSON it printed last.

    Any JSON value (typed `Any`): each script prints its own shape, which its test knows.
    """
    proc = subprocess.run(
        [deno_binary(), "run", "--unstable-kv", "-A", str(DENO_SCRIPTS / script), *args],
        env=deno_env(token),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"deno {script} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
