"""The import graph of the four packages: no cycles, and imports only point down.

`denokv` (the database) imports none of `timemachine`, `replica`, `cli`; `timemachine`
(the backup) imports no `replica` and no `cli`; `replica` imports no `cli`. Every import
counts, also those inside functions and under `if TYPE_CHECKING:`: a lazy or type-only
import still ties the two modules together. The imports are read with `ast`, so nothing
is executed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("denokv", "timemachine", "replica", "cli")
# What each package may not import (the layers above it).
FORBIDDEN = {
    "denokv": ("timemachine", "replica", "cli"),
    "timemachine": ("replica", "cli"),
    "replica": ("cli",),
    "cli": (),
}
# Cycles known today, each to be broken by a planned change; the test fails if one of them
# is gone (so the entry is removed) or if any other cycle appears. None is left.
KNOWN_CYCLES: list[frozenset[str]] = []


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imported_names(path: Path, name: str) -> Iterator[str]:
    """Every module name the file imports, anywhere in it, made absolute."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            # `pkg.name`: the module pkg.name if there is one, else (an attribute) pkg.
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of the four packages it imports (itself excluded)."""
    modules = package_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target in imported_names(path, name):
            while target and target not in modules:  # `a.b.attr` -> the module `a.b`
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                edges.add(target)  # (a module importing its own package's __init__ is no cycle)
        graph[name] = edges
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """The groups of modules that reach each other (Tarjan), those of two or more."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_graph_is_read_from_every_module() -> None:
    graph = import_graph()
    assert {"denokv.engine", "timemachine.shipper", "replica.follower", "cli.main"} <= set(graph)
    # Imports inside functions and under TYPE_CHECKING are edges too.
    assert "timemachine.restore" in graph["cli.pitr"]  # imported inside parse_point
    assert "denokv.server.host" in graph["denokv.server.rsgi"]  # under TYPE_CHECKING


def test_no_package_imports_a_layer_above_it() -> None:
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in targets
        if target.split(".")[0] in FORBIDDEN[module.split(".")[0]]
    )
    assert upward == []


def test_no_import_cycles_beyond_the_known_ones() -> None:
    cycles = [frozenset(group) for group in strongly_connected(import_graph())]
    unexpected = [sorted(c) for c in cycles if c not in KNOWN_CYCLES]
    assert unexpected == []
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in cycles]
    assert gone == [], "a known cycle is broken: remove it from KNOWN_CYCLES"


def test_the_value_codec_imports_before_the_client() -> None:
    # `denokv.values` raises `denokv.client.errors.KvValidationError`, and the client
    # imports the codec: only a package __init__ that loads nothing keeps this working
    # when the codec is imported first (as the console does). The graph above cannot
    # see it (a package's __init__ is no edge), so it is run.
    code = "import denokv.values, denokv.console.literal, denokv.client.errors"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
