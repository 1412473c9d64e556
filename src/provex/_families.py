"""Find and import every module that registers a method, without a hand-kept import list.

A method family registers its methods with ``@register_method(...)`` in its own module
(``provex.rde.methods`` registers the four RDE methods, ``provex.baselines.lrp`` the LRP
ones, ...). :func:`load` scans the source files of the ``provex`` package for that decorator
and imports the modules that use it, once. The apps (``cli``, ``benchmarks``, ``runs``,
``reporting``) are never scanned: the library does not import them. Modules in :data:`DERIVED`
register methods built from every other registered method (``"NAME+test"``), so they are
imported after the scan, last.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

__all__ = ["DERIVED", "load", "registering_modules"]

_DECORATOR = re.compile(r"^@(?:[A-Za-z_][\w.]*\.)?register_method\(", re.MULTILINE)
_SKIP = {"cli", "benchmarks", "runs", "reporting"}
DERIVED = ("provex.stats.region_methods",)
"""Modules that derive methods from all the others; imported after every registering module."""
_loaded = False


def registering_modules() -> list[str]:
    """Dotted names of the provex modules that contain ``@register_method(`` at top level."""
    root = Path(__file__).resolve().parent
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if (
            rel.parts[0] in _SKIP
            or path.name in ("registry.py", "_families.py")
            or ".".join(("provex", *rel.with_suffix("").parts)) in DERIVED
        ):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        if _DECORATOR.search(text):
            parts = ("provex", *rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.append(".".join(parts))
    return found


def load() -> None:
    """Import every registering module (first call only)."""
    global _loaded
    if _loaded:
        return
    for name in registering_modules():
        importlib.import_module(name)
    for name in DERIVED:
        importlib.import_module(name)
    _loaded = True
