"""The pytest plugin that keeps the test markers honest (loaded by tests/conftest.py).

PYTEST_DONT_REWRITE (tests/test_markers.py loads it again in a pytest run of its own).

`make test-fast` deselects the tests marked deno, node, s3, chart, browser and slow and
must then need none of those programs. Two checks keep the markers true: fixtures that
start one (known by name) need the marker at collection time, and every program a test
starts by whatever path (fixture, helper, subprocess call) is checked as it starts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

FIXTURE_MARKERS: dict[str, frozenset[str]] = {
    "moto_s3": frozenset({"s3"}),
    "s3_bucket": frozenset({"s3"}),
    "fault_proxy": frozenset({"s3"}),
    "s3rver_server": frozenset({"s3", "node"}),
    "s3rver_s3": frozenset({"s3", "node"}),
    "auth_moto": frozenset({"s3"}),  # tests/test_cli_s3.py: a moto that checks credentials
}
_PROGRAM_MARKERS = {
    "deno": "deno",
    "node": "node",
    "npm": "node",
    "npx": "node",
    "chromedriver": "browser",
    "chromium": "browser",
    "checkov": "chart",
}
_SHELLS = ("sh", "bash", "dash")


def program_markers(executable: object, args: object) -> set[str]:
    """The markers a test needs to start this program (`subprocess.Popen`'s audit event)."""
    argv = [os.fsdecode(a) for a in args] if isinstance(args, list) else []  # always a list
    first = os.fsdecode(executable) if isinstance(executable, str | bytes | os.PathLike) else ""
    if Path(first).name in _SHELLS and len(argv) >= 3 and argv[1] == "-c":
        words = argv[2].split()
        first, argv = (words[0] if words else ""), words
    needed = set()
    if Path(first).name in _PROGRAM_MARKERS:
        needed.add(_PROGRAM_MARKERS[Path(first).name])
    if "moto.server" in argv or Path(first).name == "moto_server":
        needed.add("s3")
    if "node" in needed and any("s3rver" in a for a in argv):
        needed.add("s3")
    return needed


def item_markers(item: pytest.Item) -> set[str]:
    return {mark.name for mark in item.iter_markers()}


_running: list[pytest.Item] = []  # the test whose setup, call or teardown runs now
_audit_installed = False


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event != "subprocess.Popen" or not _running:
        return
    item = _running[-1]
    missing = program_markers(args[0], args[1]) - item_markers(item)
    if missing:
        marks = ", ".join(f"@pytest.mark.{m}" for m in sorted(missing))
        pytest.fail(f"{item.nodeid} starts {args[1]!r} but lacks {marks}", pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    global _audit_installed
    if not _audit_installed:  # an audit hook stays for the life of the process
        sys.addaudithook(_audit)
        _audit_installed = True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.remove(item)


def fixture_markers(fixturenames: Iterable[str]) -> set[str]:
    needed: set[str] = set()
    for name in fixturenames:
        needed |= FIXTURE_MARKERS.get(name, frozenset())
    return needed


def fixture_marker_problems(items: list[pytest.Item]) -> list[str]:
    """One line per test that asks for a fixture of FIXTURE_MARKERS without its markers."""
    problems = []
    for item in items:
        missing = fixture_markers(getattr(item, "fixturenames", ())) - item_markers(item)
        if missing:
            problems.append(f"{item.nodeid}: needs {', '.join(sorted(missing))}")
    return problems


@pytest.fixture(autouse=True)
def _fixtures_match_markers(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the test: the fixtures it took with `getfixturevalue` need their markers too."""
    yield
    missing = fixture_markers(request.fixturenames) - item_markers(request.node)
    if missing:
        marks = ", ".join(f"@pytest.mark.{m}" for m in sorted(missing))
        pytest.fail(f"{request.node.nodeid} uses a fixture that needs {marks}", pytrace=False)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: every collected test is checked
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    problems = fixture_marker_problems(items)
    if problems:
        raise pytest.UsageError(
            "tests without the markers their fixtures need:\n" + "\n".join(problems)
        )
