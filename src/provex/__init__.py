"""provex: what did my model learn? Explanations with a precise meaning for PyTorch models.

>>> import provex
>>> model = provex.models.load("mnist-cnn")
>>> x, y = provex.data.samples("mnist")
>>> exp = provex.explain(model, x[:4], "sensitivity")
>>> exp.plot("sensitivity.png", images=x[:4])

Subpackages (``provex.stats``, ``provex.evaluate``, ``provex.rde``, ...) are imported on first
attribute access, so ``import provex`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from provex import data, models
from provex._version import __version__
from provex.explanation import Explanation
from provex.models.spec import load_model
from provex.reference import Reference
from provex.registry import explain, methods, register_method

_SUBPACKAGES = (
    "baselines",
    "concepts",
    "evaluate",
    "fw",
    "inverse",
    "io",
    "rde",
    "reporting",
    "seeding",
    "shapley",
    "stats",
    "viz",
)
# public functions that live in subpackages: name -> "module:attribute"
_LAZY: dict[str, str] = {
    "run": "provex.runs:run",
    "load_run": "provex.runs:load_run",
    "report": "provex.reporting:write_report",
}

__all__ = [
    "Explanation",
    "Reference",
    "__version__",
    "data",
    "explain",
    "load_model",
    "methods",
    "models",
    "register_method",
    *_SUBPACKAGES,
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        module = importlib.import_module(f"provex.{name}")
        globals()[name] = module
        return module
    if name in _LAZY:
        module_name, attr = _LAZY[name].split(":")
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'provex' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
