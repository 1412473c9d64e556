"""``provex benchmark NAME [options]``: run one of the reproducible experiments."""

from __future__ import annotations

import argparse
import importlib
import inspect

from provex.benchmarks import BENCHMARKS
from provex.checks import choose


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help=f"run a benchmark ({', '.join(sorted(BENCHMARKS))})")
    p.add_argument("name", help="benchmark name")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options (--help lists them)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    main = importlib.import_module(choose("benchmark", args.name, BENCHMARKS)).main
    # a benchmark that drives the CLI (the README runner) is handed it: apps never import the CLI
    extra = {"cli": args.cli} if "cli" in inspect.signature(main).parameters else {}
    return int(main(args.rest, **extra) or 0)
