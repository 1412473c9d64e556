"""The ``provex`` command. Each sub-command lives in its own module with a ``register`` hook.

A module in :data:`COMMAND_MODULES` provides ``register(subparsers)``, which adds its parser
and sets ``func`` (called with the parsed namespace, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from provex._version import __version__

__all__ = ["COMMAND_MODULES", "build_parser", "main", "main_exit"]

COMMAND_MODULES: list[str] = [
    "provex.cli.explain",
    "provex.cli.models",
    "provex.cli.benchmark",
    "provex.cli.test_concepts",
    "provex.cli.lpn",
    "provex.cli.report",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="provex",
        description="What did my model learn? Explanations with a precise meaning for PyTorch models.",
    )
    parser.add_argument("--version", action="version", version=f"provex {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (errors print one line, exit code 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, NotImplementedError) as err:
        print(f"provex {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main_exit() -> None:
    """Console-script entry point: exit with :func:`main`'s code."""
    sys.exit(main())
