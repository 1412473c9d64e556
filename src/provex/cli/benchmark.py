"""``provex benchmark NAME [options]``: run one of the reproducible experiments."""

from __future__ import annotations

import argparse
import importlib

from provex.benchmarks import BENCHMARKS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help=f"run a benchmark ({', '.join(sorted(BENCHMARKS))})")
    p.add_argument("name", help="benchmark name")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options (--help lists them)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {args.name!r}; available: {', '.join(sorted(BENCHMARKS))}")
    return int(importlib.import_module(BENCHMARKS[args.name]).main(args.rest) or 0)
