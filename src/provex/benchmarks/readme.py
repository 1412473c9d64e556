"""The README runs as written: every code block executed, and timed.

``provex benchmark readme [--quick] [--readme README.md] [--out DIR]`` runs every code block of
the README in order and records each block's wall time against the cost the README states;
``tests/test_readme.py`` runs the same blocks in the test suite (slow ones with ``--runslow``).

Conventions (stated at the top of the README too):

* Every fenced block carries a language: ``python``, ``bash`` or ``text``.
* ``python`` blocks run in order in one shared namespace (as in a notebook), in a scratch
  folder laid out like a clone: ``examples/`` of the repository is there (and a copy of
  ``benchmarks/``, whose committed results the README reports on) and ``../shared``
  points at the shared data, so relative paths in the README work as written.
* ``bash`` blocks: each command runs: ``provex ...`` and ``python -m provex ...`` in-process
  through the CLI's ``main``, which the caller hands in (``provex benchmark readme`` passes
  itself, the test suite passes :func:`provex.cli.main`; this app never imports the CLI),
  else as a ``python -m provex`` subprocess; ``python FILE.py`` as a subprocess. ``A && B``
  chains run their parts in turn; ``NAME=VALUE`` prefixes set the environment for that
  command; ``#`` starts a comment. Installing
  (``python3 -m venv``, ``. .venv/bin/activate``, ``pip install``) and the test command
  (``python -m pytest``) are not run here: ``.ci/run`` runs them from a fresh clone. Any other
  command is an error, so nothing in the README goes untested by accident.
* ``text`` blocks are output or file listings and are not run; they may not hold commands.
* ``<!-- slow: COST -->`` on the line before a block: it takes over a minute (COST says how
  long on the 2-core development machine); the test suite skips it unless ``--runslow``,
  this benchmark runs it.
* ``<!-- not-run: REASON -->`` on the line before a block: never executed (for things such as
  multi-machine commands); use sparingly and say why.

``--quick`` (the same meaning on every benchmark, see :mod:`provex.benchmarks.common`) runs the
blocks not marked slow.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provex.benchmarks.common import add_quick_argument, environment, print_table, write_json

__all__ = ["Block", "ReadmeRunner", "main", "parse_blocks", "shell_commands"]

_FENCE = re.compile(r"^```([A-Za-z0-9_+-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*(slow|not-run)\s*:\s*(.*?)\s*-->\s*$")
LANGUAGES = ("python", "bash", "text")
_SETUP = (
    ("python3", "-m", "venv"),
    ("python", "-m", "venv"),
    ("python3", "-m", "pip"),
    ("python", "-m", "pip"),
    ("pip",),
    ("pip3",),
    (".",),
    ("source",),
)
_SUITE = (("python", "-m", "pytest"), ("python3", "-m", "pytest"), ("pytest",))


@dataclass(frozen=True)
class Block:
    """A fenced code block of the README: where it starts, its language, code and marker."""

    line: int
    lang: str
    code: str
    marker: str | None = None
    note: str = ""

    @property
    def id(self) -> str:
        tag = f"-{self.marker}" if self.marker else ""
        return f"L{self.line}-{self.lang or 'untagged'}{tag}"


def parse_blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, with the marker comment on the line before each."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        mk = _MARKER.match(lines[k]) if k >= 0 else None
        blocks.append(
            Block(
                i + 1, m.group(1), "\n".join(lines[i + 1 : j]), mk.group(1) if mk else None, mk.group(2) if mk else ""
            )
        )
        i = j + 1
    return blocks


def shell_commands(code: str) -> list[tuple[dict[str, str], list[str]]]:
    """The commands of a bash block: ``(environment prefix, argv)`` per command, in order."""
    out: list[tuple[dict[str, str], list[str]]] = []
    for line in code.replace("\\\n", " ").splitlines():
        tokens = shlex.split(line, comments=True)
        segment: list[str] = []
        for tok in [*tokens, "&&"]:
            if tok != "&&":
                segment.append(tok)
                continue
            if segment:
                env: dict[str, str] = {}
                while segment and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", segment[0]):
                    key, value = segment.pop(0).split("=", 1)
                    env[key] = value
                if segment:
                    out.append((env, segment))
            segment = []
    return out


def _starts(argv: list[str], prefixes: tuple[tuple[str, ...], ...]) -> bool:
    return any(tuple(argv[: len(p)]) == p for p in prefixes)


def classify(argv: list[str]) -> str:
    """``provex``, ``script``, ``setup`` (install; not run), ``suite`` (the tests; not run) or ``unknown``."""
    if argv[0] == "provex" or argv[:3] in (["python", "-m", "provex"], ["python3", "-m", "provex"]):
        return "provex"
    if _starts(argv, _SUITE):
        return "suite"
    if _starts(argv, _SETUP):
        return "setup"
    if argv[0] in ("python", "python3") and len(argv) > 1 and argv[1].endswith(".py"):
        return "script"
    return "unknown"


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class ReadmeRunner:
    """Runs README blocks in a scratch folder laid out like a clone (``examples/``, a copy of
    ``benchmarks/``, ``../shared``).

    ``cli``: the CLI's ``main(argv) -> exit code``, to run ``provex`` commands in-process
    (None: each runs as a ``python -m provex`` subprocess).
    """

    def __init__(
        self, root: str | os.PathLike, scratch: str | os.PathLike, cli: Callable[[list[str]], int] | None = None
    ) -> None:
        self.root = Path(root).resolve()
        self.cli = cli
        base = Path(scratch).resolve()
        self.work = base / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        for name in ("examples",):
            link = self.work / name
            if (self.root / name).exists() and not link.exists():
                link.symlink_to(self.root / name)
        # the committed benchmark results (READMEs report them), copied: a block may write there
        if (self.root / "benchmarks").is_dir() and not (self.work / "benchmarks").exists():
            shutil.copytree(self.root / "benchmarks", self.work / "benchmarks")
        shared = base / "shared"
        if not shared.exists():
            if (self.root.parent / "shared").is_dir():
                shared.symlink_to(self.root.parent / "shared")
            elif os.environ.get("PROVEX_DATA"):
                shared.mkdir()
                (shared / "data").symlink_to(Path(os.environ["PROVEX_DATA"]).resolve())
        self.env = {"MPLBACKEND": "Agg"}
        if not os.environ.get("PROVEX_DATA") and (shared / "data").exists():
            self.env["PROVEX_DATA"] = str(shared / "data")
        self.namespace: dict[str, Any] = {"__name__": "__readme__"}

    def run(self, block: Block) -> list[str]:
        """Execute one block in ``self.work``; returns what was skipped (setup / suite commands)."""
        if block.lang not in LANGUAGES:
            raise ValueError(f"README line {block.line}: tag the block as one of {LANGUAGES}, got {block.lang!r}")
        skipped: list[str] = []
        cwd = Path.cwd()
        os.chdir(self.work)
        try:
            with _environ(self.env):
                if block.lang == "python":
                    exec(compile(block.code, f"README.md:{block.line}", "exec"), self.namespace)
                elif block.lang == "bash":
                    for env, argv in shell_commands(block.code):
                        skipped += self._command(block, env, argv)
        finally:
            os.chdir(cwd)
        return skipped

    def _command(self, block: Block, env: dict[str, str], argv: list[str]) -> list[str]:
        kind = classify(argv)
        where = f"README line {block.line}: {shlex.join(argv)}"
        if kind in ("setup", "suite"):
            return [shlex.join(argv)]
        if kind == "unknown":
            raise ValueError(f"{where}: not a command the README runner knows (provex, python FILE.py, install, tests)")
        with _environ(env):
            if kind == "script":
                proc = subprocess.run([sys.executable, *argv[1:]], cwd=self.work, check=False)
                code = proc.returncode
            else:
                args = argv[1:] if argv[0] == "provex" else argv[3:]
                if self.cli is None:
                    code = subprocess.run(
                        [sys.executable, "-m", "provex", *args], cwd=self.work, check=False
                    ).returncode
                else:
                    try:
                        code = self.cli(args)
                    except SystemExit as stop:  # --version, --help
                        code = stop.code if isinstance(stop.code, int) else 0
        if code != 0:
            raise AssertionError(f"{where}: exit code {code}")
        return []


def check_text_blocks(blocks: list[Block]) -> list[str]:
    """Problems: untagged blocks, and text blocks that hold commands (which would go untested)."""
    problems = []
    for b in blocks:
        if b.lang not in LANGUAGES:
            problems.append(f"line {b.line}: tag the block as one of {', '.join(LANGUAGES)}")
        if b.lang == "text":
            for ln in b.code.splitlines():
                s = ln.strip().lstrip("$ ")
                if s.startswith(("provex ", "python ", "python3 ", "pip ")):
                    problems.append(f"line {b.line}: a text block holds a command ({s[:40]}); make it a bash block")
        if b.marker == "slow" and not re.search(r"\d\s*(s|sec|min|minutes?|h|hours?)\b", b.note):
            problems.append(f"line {b.line}: a slow marker must state the cost, e.g. <!-- slow: about 25 min -->")
    return problems


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished children."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _find_readme(path: str | None) -> Path:
    if path is not None:
        return Path(path)
    for base in (Path.cwd(), *Path(__file__).resolve().parents):
        if (base / "README.md").is_file() and (base / "pyproject.toml").is_file():
            return base / "README.md"
    raise ValueError("--readme: no README.md found here or above the package; pass --readme PATH")


def _plot(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from provex.viz.heatmap import save_figure

    ran = [r for r in rows if r["seconds"] is not None]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(ran) + 1.2))
    colors = ["tab:red" if not r["ok"] else ("tab:orange" if r["marker"] == "slow" else "tab:blue") for r in ran]
    ax.barh([r["id"] for r in ran], [r["seconds"] for r in ran], color=colors)
    ax.axvline(60, color="k", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("wall seconds (log); dashed: one minute; orange: marked slow; red: failed")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def main(argv: list[str] | None = None, cli: Callable[[list[str]], int] | None = None) -> int:
    """``provex benchmark readme``; ``cli`` is the CLI's ``main`` (see :class:`ReadmeRunner`)."""
    p = argparse.ArgumentParser(prog="provex benchmark readme", description=__doc__.split("\n\n")[0])
    add_quick_argument(p, "the blocks not marked slow")
    p.add_argument("--readme", default=None, help="the README to run (default: the repository's)")
    p.add_argument("--out", default="benchmarks/readme/results")
    p.add_argument("--scratch", default=None, help="scratch folder (default: a fresh temporary one)")
    a = p.parse_args(argv)
    import tempfile

    readme = _find_readme(a.readme)
    blocks = parse_blocks(readme.read_text())
    problems = check_text_blocks(blocks)
    for msg in problems:
        print(f"README {msg}")
    out = Path(a.out).resolve()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="provex-readme-") as tmp:
        runner = ReadmeRunner(readme.parent, a.scratch or tmp, cli=cli)
        for b in blocks:
            row: dict[str, Any] = {"id": b.id, "line": b.line, "lang": b.lang, "marker": b.marker, "note": b.note}
            if b.lang == "text" or b.marker == "not-run" or (a.quick and b.marker == "slow"):
                rows.append({**row, "seconds": None, "ok": True, "skipped": True})
                continue
            print(f"--- README line {b.line} ({b.lang}{', ' + b.marker if b.marker else ''})", flush=True)
            start, cpu = time.perf_counter(), _cpu_seconds()
            try:
                runner.run(b)
                ok, error = True, None
            except Exception as err:  # recorded, and the exit code says it failed
                ok, error = False, f"{type(err).__name__}: {err}"
                print(f"FAILED: {error}")
            wall, used = time.perf_counter() - start, _cpu_seconds() - cpu
            rows.append({**row, "seconds": wall, "cpu_seconds": used, "ok": ok, "error": error, "skipped": False})
    ran = [r for r in rows if not r["skipped"]]
    table = [
        [r["id"], f"{r['seconds']:.1f}", f"{r['cpu_seconds']:.1f}", "yes" if r["ok"] else "NO", r["note"]] for r in ran
    ]
    headers = ["block", "wall s", "CPU s", "ok", "stated cost"]
    print_table(table, headers)
    # over a minute: wall time inflates on a loaded machine, CPU time counts both cores; the
    # smaller of the two estimates the wall time on a quiet 2-core machine
    unmarked = [r["id"] for r in ran if min(r["seconds"], r["cpu_seconds"]) > 60 and r["marker"] != "slow"]
    summary = {
        "readme": str(readme),
        "quick": a.quick,
        "blocks": rows,
        "failed": [r["id"] for r in ran if not r["ok"]],
        "over_a_minute_unmarked": unmarked,
        "problems": problems,
        "total_seconds": sum(r["seconds"] for r in ran),
        "environment": environment(),
        "load_average": os.getloadavg(),
    }
    write_json(out / "results.json", summary)
    from provex.io import atomic_write

    with atomic_write(out / "table.md") as tmp_md:
        tmp_md.write_text(
            f"| {' | '.join(headers)} |\n|{'---|' * len(headers)}\n"
            + "".join(f"| {' | '.join(str(c) for c in row)} |\n" for row in table)
        )
    _plot(rows, out / "readme.png")
    print(
        f"\n{len(ran)} blocks in {summary['total_seconds']:.0f} s; failed: {summary['failed'] or 'none'}; "
        f"over a minute without a slow marker: {unmarked or 'none'}; wrote {out}"
    )
    return 1 if summary["failed"] or problems or unmarked else 0
