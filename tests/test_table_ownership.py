"""Deno's tables have one owner: no module but `denokv/tables.py` runs SQL on them.

The rule (docs/design.md) keeps the version counter, redo capture and watchers
in one place. This test reads the package's source and fails on any SQL
statement naming `kv`, `data_version`, `queue`, `queue_running` or
`migration_state` outside that module.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.paths import ROOT

PACKAGES = ("denokv", "timemachine", "replica", "cli")
OWNER = ROOT / "denokv" / "tables.py"
DENO_TABLES = r"(kv|data_version|queue|queue_running|migration_state)"
STATEMENT = re.compile(
    rf"""["'][^"'\n]*\b(select\b[^"'\n]*\bfrom|insert\s+(or\s+\w+\s+)?into|update|delete\s+from|"""
    rf"""create\s+table(\s+if\s+not\s+exists)?|alter\s+table|drop\s+table)\s+{DENO_TABLES}\b""",
    re.IGNORECASE,
)


def sources() -> list[Path]:
    return [
        p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py")) if "proto" not in p.parts
    ]


def test_only_the_tables_module_names_denos_tables_in_sql() -> None:
    offenders = []
    for path in sources():
        if path == OWNER:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if STATEMENT.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "SQL on Deno's tables outside denokv/tables.py:\n" + "\n".join(offenders)


def test_the_check_would_notice_one() -> None:
    assert STATEMENT.search('conn.execute("delete from kv where k = ?")')
    assert STATEMENT.search('"update data_version set version = 1"')
    assert STATEMENT.search("'insert or replace into queue_running values (?)'")
    assert not STATEMENT.search('"select k from denokv_redo_log"')
    assert OWNER.read_text().count("data_version") > 0
