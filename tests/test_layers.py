"""Layers of the package, read from the source with ``ast`` (nothing is imported).

cli -> apps (benchmarks, runs, reporting) -> library: the library never imports an app or
the CLI, the benchmarks never import the CLI, and the import graph of ``src/provex`` has
no circle, imports inside functions included (the graph code is the one of
``benchmarks/structure/structure.py``, which produces the issue-17 figures).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "provex"
APPS = ("provex.cli", "provex.benchmarks", "provex.runs", "provex.reporting", "provex.__main__")


def _structure():
    spec = importlib.util.spec_from_file_location(
        "_provex_structure", ROOT / "benchmarks" / "structure" / "structure.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


S = _structure()


def _graph() -> dict[str, set[str]]:
    """Module -> the provex modules it imports (module level and inside functions)."""
    import ast

    files = sorted(SRC.rglob("*.py"))
    known = {S.module_name(p, SRC) for p in files}
    graph = {}
    for p in files:
        tree = ast.parse(p.read_text())
        S.mark_functions(tree)
        mod = S.module_name(p, SRC)
        top, lazy = S.imports(tree, mod, p.name == "__init__.py", known)
        graph[mod] = top | lazy
    return graph


def _in(mod: str, packages: tuple[str, ...]) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in packages)


GRAPH = _graph()


def test_the_graph_sees_the_package():
    # the reader finds the modules and their imports (a check that cannot pass on an empty graph)
    assert len(GRAPH) > 100
    assert "provex.explanation" in GRAPH["provex.rde.rc_rde"]
    assert "provex.cli.options" in GRAPH["provex.cli.explain"]


def test_the_cycle_finder_finds_a_planted_circle():
    assert S.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert S.cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("app", ["provex.cli", "provex.benchmarks", "provex.runs", "provex.reporting"])
def test_the_library_never_imports_an_app(app):
    bad = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() if not _in(m, APPS) for t in targets if _in(t, (app,)))
    assert bad == []


def test_benchmarks_never_import_the_cli():
    bad = sorted(
        f"{m} -> {t}"
        for m, targets in GRAPH.items()
        if _in(m, ("provex.benchmarks",))
        for t in targets
        if _in(t, ("provex.cli",))
    )
    assert bad == []


def test_no_private_module_of_another_package_is_imported():
    # e.g. provex.concepts must use provex.stats' public names, not provex.stats._engine
    bad = []
    for m, targets in GRAPH.items():
        for t in targets:
            parts = t.split(".")
            private = [i for i, part in enumerate(parts) if part.startswith("_") and not part.startswith("__")]
            if not private:
                continue
            owner = ".".join(parts[: private[0]])  # the package the private module belongs to
            if m != owner and not m.startswith(owner + "."):
                bad.append(f"{m} -> {t}")
    assert sorted(bad) == []


def test_no_import_circle_lazy_imports_included():
    assert S.cycles(GRAPH) == []


BOTTOM = ("provex.io", "provex.checks", "provex.options", "provex.seeding", "provex.cells", "provex.explanation_data")


def test_the_bottom_modules_import_only_each_other():
    # the README's layer map: these sit under everything (validators, files, seeds, the result's data)
    assert {m: sorted(GRAPH[m] - set(BOTTOM)) for m in BOTTOM} == {m: [] for m in BOTTOM}
