"""Where things are in the checkout, for tests that start programs from it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
CACHE = ROOT / ".cache"
NODE_DIR = TESTS / "node"
DENO_SCRIPTS = TESTS / "deno"
