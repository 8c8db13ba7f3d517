"""Command lines through the real `denokv` argument parser, as the chart and image run them."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
from typing import Any

import pytest

from cli.main import build_parser


def parse(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run argv (without the program name) through the real parser with `env` as the only
    DENO_KV_*/AWS_* environment; an argparse error becomes a test failure with its text."""
    for key in list(os.environ):
        if key.startswith(("DENO_KV_", "AWS_")):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(argv)
    except SystemExit:
        pass
    pytest.fail(f"the denokv parser rejects {shlex.join(argv)}:\n{err.getvalue()}", False)
