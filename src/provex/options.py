"""``KEY=VALUE`` option pairs from the command line or a benchmark's flags, as a dict.

Shared by the CLI (``provex explain -O``, ``provex run``, ``provex test-regions``) and the
benchmarks that take per-method options, so that an app never imports another app for it.
"""

from __future__ import annotations

import ast
from typing import Any

__all__ = ["parse_options"]


def parse_options(pairs: list[str] | None, name: str = "--option") -> dict[str, Any]:
    """``["rate=100", "distortion=adf"]`` -> ``{"rate": 100, "distortion": "adf"}``.

    Values are Python literals where they parse as one (numbers, tuples, None, ...) and
    strings otherwise; dashes in keys become underscores. ``name`` is the option named by
    the one-line ``ValueError`` for a pair without ``=``.
    """
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"{name} must look like key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        try:
            out[key.strip().replace("-", "_")] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key.strip().replace("-", "_")] = raw
    return out
