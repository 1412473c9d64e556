"""The README runs as written: every code block of README.md is executed here, in order.

Conventions (the runner is ``provex.benchmarks.readme``; its docstring has the details):

* every fenced block is tagged ``python``, ``bash`` or ``text``;
* ``python`` blocks share one namespace, in README order (a notebook), run in a scratch folder
  laid out like a clone: ``examples/`` is there and ``../shared/data`` holds the data;
* ``bash`` blocks: every ``provex ...`` command runs (in-process, through :func:`provex.cli.main`)
  and must exit 0; ``python FILE.py`` runs as a subprocess; install commands and the test
  command itself are left to ``.ci/run``; any other command fails the test;
* ``text`` blocks (output, listings) are not run and may hold no commands;
* ``<!-- slow: COST -->`` before a block: over a minute; skipped here unless ``--runslow``
  (``provex benchmark readme`` runs and times every block);
* ``<!-- not-run: REASON -->`` before a block: never run; for things like multi-machine
  commands only.

A block that fails may make later blocks fail too (they share names); read the first failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import provex
from provex.benchmarks.readme import Block, ReadmeRunner, check_text_blocks, classify, parse_blocks, shell_commands

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = parse_blocks((ROOT / "README.md").read_text())
RUN = [b for b in BLOCKS if b.lang != "text" and b.marker != "not-run"]


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> ReadmeRunner:
    from provex.cli import main

    return ReadmeRunner(ROOT, tmp_path_factory.mktemp("readme"), cli=main)


@pytest.mark.parametrize(
    "block", [pytest.param(b, marks=[pytest.mark.slow] if b.marker == "slow" else [], id=b.id) for b in RUN]
)
def test_readme_block(runner: ReadmeRunner, block: Block) -> None:
    runner.run(block)


def test_blocks_are_tagged_and_text_holds_no_commands() -> None:
    assert check_text_blocks(BLOCKS) == []


def test_the_first_two_commands() -> None:
    """(1) install + the main job on the shipped model and data, (2) the test command."""
    first = shell_commands(BLOCKS[0].code)
    kinds = [classify(argv) for _, argv in first]
    assert BLOCKS[0].lang == "bash" and BLOCKS[0].marker is None
    assert "setup" in kinds and kinds.count("provex") == 1 and kinds[-1] == "suite"
    assert any(argv[:2] == ["provex", "explain"] for _, argv in first)


def test_import_provex_reaches_every_subpackage() -> None:
    code = (
        "import provex\n"
        "for name in provex._SUBPACKAGES:\n"
        "    assert getattr(provex, name).__name__ == 'provex.' + name, name\n"
        "assert callable(provex.stats.skit) and callable(provex.evaluate.relevance_ordering)\n"
        "print('ok', len(provex._SUBPACKAGES))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(provex.__file__).parents[1])},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok ")


# ----- the runner itself, on made-up READMEs -----


def test_parser_and_command_rules(tmp_path: Path) -> None:
    text = (
        "intro\n\n```bash\nA=1 provex --version && pip install -e . # comment\nprovex methods \\\n  -v\n```\n\n"
        "<!-- slow: about 2 min -->\n```python\nvalue = 41 + 1\n```\n\n"
        "<!-- not-run: needs two machines -->\n```bash\nray start --head\n```\n\n```text\nprovex explain\n```\n"
        "```\nuntagged\n```\n"
    )
    blocks = parse_blocks(text)
    assert [(b.lang, b.marker) for b in blocks] == [
        ("bash", None),
        ("python", "slow"),
        ("bash", "not-run"),
        ("text", None),
        ("", None),
    ]
    assert shell_commands(blocks[0].code) == [
        ({"A": "1"}, ["provex", "--version"]),
        ({}, ["pip", "install", "-e", "."]),
        ({}, ["provex", "methods", "-v"]),
    ]
    problems = check_text_blocks(blocks)
    assert len(problems) == 2 and "holds a command" in problems[0] and "tag the block" in problems[1]
    assert classify(["ray", "start"]) == "unknown" and classify(["python", "-m", "pytest", "-q"]) == "suite"
    from provex.cli import main

    run = ReadmeRunner(tmp_path, tmp_path / "scratch", cli=main)
    assert run.run(blocks[0]) == ["pip install -e ."]
    run.run(blocks[1])
    assert run.namespace["value"] == 42
    with pytest.raises(ValueError, match="not a command the README runner knows"):
        run.run(Block(1, "bash", "ray start --head"))
    with pytest.raises(AssertionError, match="exit code 2"):
        run.run(Block(1, "bash", "provex explain --method nope"))


def test_without_the_cli_commands_run_as_subprocesses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the runner never imports the CLI (layers: apps below the CLI); without it, `python -m provex`
    monkeypatch.setenv("PYTHONPATH", str(Path(provex.__file__).parents[1]))
    run = ReadmeRunner(tmp_path, tmp_path / "scratch")
    assert run.run(Block(1, "bash", "provex --version")) == []
    with pytest.raises(AssertionError, match="exit code 2"):
        run.run(Block(1, "bash", "provex explain --method nope"))


def test_figures_referenced_by_the_readme_exist() -> None:
    import re

    paths = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", (ROOT / "README.md").read_text())
    assert paths, "the README shows at least the example figure"
    missing = [p for p in paths if not (ROOT / p).is_file()]
    assert missing == []
