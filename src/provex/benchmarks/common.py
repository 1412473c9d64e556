"""Small helpers shared by the benchmarks: timing, JSON output, a plain-text table, common options.

``--quick`` means the same on every benchmark (:data:`QUICK`): the same code path and the same
method settings as the full run, on a small input (fewer images, repeats or sweep points) that
finishes in about a minute on the 2-core machine provex is developed on. It checks that the
benchmark runs end to end; its numbers are not the benchmark's result. Each benchmark adds it
with :func:`add_quick_argument`, naming what it makes smaller. Long benchmarks show progress
bars by default (:func:`add_progress_argument`: ``--no-progress`` turns them off).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from provex.io import atomic_write

__all__ = [
    "QUICK",
    "add_progress_argument",
    "add_quick_argument",
    "environment",
    "print_table",
    "time_call",
    "write_json",
]

QUICK = (
    "the same code path and method settings as the full run on a small input that finishes in about a minute "
    "on a 2-core CPU (checks that it runs; not the measured result)"
)


def add_quick_argument(parser: argparse.ArgumentParser, smaller: str) -> None:
    """``--quick`` with the shared meaning (:data:`QUICK`); ``smaller`` says what this benchmark reduces."""
    parser.add_argument("--quick", action="store_true", help=f"{QUICK}; here: {smaller}")


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress``, on by default."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="progress bars (default on; --no-progress turns them off)",
    )


def time_call(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically (numbers of numpy / torch as floats)."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=float))
    return Path(path)


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Print (and return) a fixed-width table; floats get 4 significant digits."""

    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    text = "\n".join(lines)
    print(text)
    return text
