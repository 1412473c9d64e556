"""The ``provex`` command. Each sub-command lives in its own module with a ``register`` hook.

A module in :data:`COMMAND_MODULES` provides ``register(subparsers)``, which adds its parser
and sets ``func`` (called with the parsed namespace, returning an exit code).

User errors end the same way everywhere: one line ``provex COMMAND: error: MESSAGE`` on stderr
and exit code 2, never a traceback. Commands raise ``ValueError`` (or ``FileNotFoundError``,
``NotImplementedError``, an ``OSError`` about a user's file); :func:`main` prints them. A
``--device`` option of any command is checked before the command runs.
"""

from __future__ import annotations

import argparse
import importlib
import pickle
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from provex._version import __version__

__all__ = ["COMMAND_MODULES", "build_parser", "main", "main_exit"]

COMMAND_MODULES: list[str] = [
    "provex.cli.explain",
    "provex.cli.models",
    "provex.cli.benchmark",
    "provex.cli.test_concepts",
    "provex.cli.lpn",
    "provex.cli.run",
    "provex.cli.test_regions",
    "provex.cli.report",
]


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (pointing at ``--help``), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="provex",
        description="What did my model learn? Explanations with a precise meaning for PyTorch models.",
    )
    parser.add_argument("--version", action="version", version=f"provex {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    sub.choices["benchmark"].set_defaults(cli=main)  # the README benchmark runs commands: it is handed the CLI
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (errors print one line, exit code 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    shown = warnings.showwarning
    warnings.showwarning = _one_line_warning(args.command)
    try:
        if isinstance(getattr(args, "device", None), str):
            from provex.cli.options import check_device

            check_device(args.device)
        return int(args.func(args) or 0)
    except (ValueError, NotImplementedError, pickle.UnpicklingError) as err:
        return _user_error(args, str(err))
    except OSError as err:  # a user's file: missing, a folder, unreadable, disk full
        if err.strerror is None:
            return _user_error(args, str(err))
        return _user_error(args, f"{err.strerror}: {err.filename}" if err.filename else err.strerror)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown


def _one_line_warning(command: str):
    """Warnings as one line each (``provex COMMAND: warning: ...``), not file/line/source triples."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"provex {command}: warning: {' '.join(str(message).split())}", file=file or sys.stderr)

    return show


def _user_error(args: argparse.Namespace, message: str) -> int:
    print(f"provex {args.command}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def main_exit() -> None:
    """Console-script entry point: exit with :func:`main`'s code."""
    sys.exit(main())
