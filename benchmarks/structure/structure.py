"""Code-structure figures for issue 17: largest modules and functions, import cycles.

    python benchmarks/structure/structure.py [SRC_DIR] [--json OUT]

Reads ``src/provex`` with ``ast`` only (nothing is imported): module sizes in lines, function
sizes (def line to last line, nested functions counted inside their parent too), and the
cycles of the package-internal import graph (module level imports and imports inside
functions listed separately, since lazy imports are how layers are often broken on purpose).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def resolve(mod: str, node: ast.ImportFrom, is_pkg: bool) -> str | None:
    if node.level == 0:
        return node.module
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(tree: ast.AST, mod: str, is_pkg: bool, known: set[str]) -> tuple[set[str], set[str]]:
    """(module-level, function-level) internal imports of one module."""
    top, lazy = set(), set()

    def add(target: str | None, names: list[str], into: set[str]) -> None:
        if not target or not target.startswith("provex"):
            return
        for n in names:
            cand = f"{target}.{n}"
            into.add(cand if cand in known else target)

    for node in ast.walk(tree):
        into = top
        # find whether the import is inside a function
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            into = lazy if getattr(node, "_in_func", False) else top
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("provex"):
                    into.add(a.name if a.name in known else a.name.rsplit(".", 1)[0])
        elif isinstance(node, ast.ImportFrom):
            add(resolve(mod, node, is_pkg), [a.name for a in node.names], into)
    return top - {mod}, lazy - {mod} - top


def mark_functions(tree: ast.AST) -> None:
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(fn):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    sub._in_func = True  # type: ignore[attr-defined]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def measure(root: Path) -> dict:
    files = sorted(root.rglob("*.py"))
    known = {module_name(p, root) for p in files}
    modules, functions, top_graph, all_graph = [], [], {}, {}
    for p in files:
        src = p.read_text()
        tree = ast.parse(src)
        mark_functions(tree)
        mod = module_name(p, root)
        modules.append((len(src.splitlines()), mod))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{mod}.{node.name}"))
        top, lazy = imports(tree, mod, p.name == "__init__.py", known)
        top_graph[mod] = top
        all_graph[mod] = top | lazy
    modules.sort(reverse=True)
    functions.sort(reverse=True)
    # a package imports its parent package implicitly; only explicit edges are counted
    return {
        "modules": len(modules),
        "lines": sum(n for n, _ in modules),
        "largest_modules": [{"module": m, "lines": n} for n, m in modules[:10]],
        "largest_functions": [{"function": f, "lines": n} for n, f in functions[:10]],
        "functions_over_100_lines": sum(1 for n, _ in functions if n > 100),
        "cycles_module_level": cycles(top_graph),
        "cycles_including_lazy_imports": cycles(all_graph),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", nargs="?", default="src/provex")
    p.add_argument("--json", default=None, help="write the figures here")
    a = p.parse_args(argv)
    res = measure(Path(a.src).resolve())
    text = json.dumps(res, indent=2)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
