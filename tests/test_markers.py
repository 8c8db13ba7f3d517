"""The markers stay honest: tests/support/markers.py fails a test that starts Deno, Node.js, an S3
server, the chart tools or Chromium without the marker that `make test-fast` leaves out.

Checked on a small pytest run of its own (pytester) whose conftest loads the same plugin
as ours, so what is shown is what happens to a real test of this suite.
"""

from __future__ import annotations

import pytest

from tests.support.markers import program_markers

pytest_plugins = ("pytester",)

# The inner run: our hooks, a fixture named like the moto one (it starts nothing), and
# the markers and options of pyproject.toml.
INI = """
[pytest]
addopts = --strict-markers -p no:cacheprovider
asyncio_default_fixture_loop_scope = function
markers =
    deno
    node
    s3
    chart
    browser
    slow
"""
CONFTEST = """
import pytest

pytest_plugins = ("tests.support.markers",)

@pytest.fixture
def s3_bucket():
    return ("http://127.0.0.1:1", "bucket")
"""


def inner_run(pytester: pytest.Pytester, tests: str, *args: str) -> pytest.RunResult:
    pytester.makeini(INI)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_inner=tests)
    return pytester.runpytest_inprocess(*args)


def test_programs_map_to_their_markers() -> None:
    assert program_markers("/venv/bin/deno", ["/venv/bin/deno", "run", "x.ts"]) == {"deno"}
    assert program_markers("node", ["node", "core.mjs"]) == {"node"}
    assert program_markers("/usr/bin/node", ["node", "-e", "require('s3rver')"]) == {"node", "s3"}
    assert program_markers("/venv/bin/python", ["python", "-m", "moto.server", "-p", "1"]) == {"s3"}
    assert program_markers("/usr/bin/chromedriver", ["chromedriver"]) == {"browser"}
    assert program_markers("/c/bin/checkov", ["checkov", "-d", "."]) == {"chart"}
    assert program_markers("/bin/sh", ["/bin/sh", "-c", "npm install"]) == {"node"}
    assert program_markers("/venv/bin/python", ["python", "-m", "cli.main", "serve"]) == set()


def test_an_unmarked_test_that_starts_deno_fails(pytester: pytest.Pytester) -> None:
    result = inner_run(
        pytester,
        """
        import subprocess
        import pytest

        def start_deno():
            try:  # deno need not be on PATH here: only the check before it starts counts
                subprocess.run(["deno", "--version"], check=False, capture_output=True)
            except FileNotFoundError:
                pass

        def test_unmarked():
            start_deno()

        @pytest.mark.deno
        def test_marked():
            start_deno()
        """,
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_unmarked starts*deno*lacks @pytest.mark.deno*"])


def test_a_fixture_without_its_marker_stops_the_run(pytester: pytest.Pytester) -> None:
    result = inner_run(
        pytester,
        """
        import pytest

        def test_unmarked(s3_bucket):
            pass

        @pytest.mark.s3
        def test_marked(s3_bucket):
            pass
        """,
        "-m",
        "not s3",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_unmarked: needs s3*"])


def test_a_fixture_taken_with_getfixturevalue_needs_its_marker(pytester: pytest.Pytester) -> None:
    result = inner_run(
        pytester,
        """
        def test_dynamic(request):
            request.getfixturevalue("s3_bucket")
        """,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*test_dynamic uses a fixture that needs @pytest.mark.s3*"])
