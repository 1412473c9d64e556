"""The ``provex`` command through its entry function (and once as a real subprocess)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import provex
from provex.benchmarks import BENCHMARKS
from provex.cli import main
from provex.explanation import Explanation


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert provex.__version__ in capsys.readouterr().out


def test_methods(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods", "-v"]) == 0
    out = capsys.readouterr().out
    assert "sensitivity" in out and "absolute=False" in out


def test_explain_default_writes_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--out", str(tmp_path)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("sensitivity on 8 image(s) (mnist-samples) with mnist-cnn")
    exp = Explanation.load(tmp_path / "mnist-samples-sensitivity.pt")
    assert exp.relevance.shape == (8, 1, 28, 28)
    assert (tmp_path / "mnist-samples-sensitivity.png").read_bytes()[:4] == b"\x89PNG"


def test_explain_options_and_input(tmp_path: Path) -> None:
    x, _ = provex.data.samples()
    torch.save(x[:2], tmp_path / "in.pt")
    assert main(["explain", "--input", str(tmp_path / "in.pt"), "-O", "absolute=True", "--out", str(tmp_path)]) == 0
    exp = Explanation.load(tmp_path / "in-sensitivity.pt")
    assert exp.relevance.shape[0] == 2 and bool((exp.relevance >= 0).all())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explain", "--method", "nope"], "unknown method 'nope'; available: "),
        (["explain", "--model", "nope"], "'nope' is not a zoo model"),
        (["explain", "--model", "lpn-mnist"], "is a denoiser, not a classifier"),
        (["explain", "--index", "50"], "--index out of range"),
        (["explain", "--target", "12"], "target out of range"),
        (["explain", "-O", "rate"], "key=value"),
        (["explain", "--threads", "0"], "--threads must be a positive integer"),
        (["benchmark", "nope"], "available: "),
    ],
)
def test_errors_exit_2_and_write_nothing(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)] if argv[0] == "explain" else argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_models_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == 0
    assert "mnist-cnn" in capsys.readouterr().out


def test_model_speed_benchmark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchmark", "model-speed", "--batch-sizes", "1", "4", "--repeats", "1", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "results.json").is_file() and (tmp_path / "model_speed.png").is_file()
    assert "fwd+bwd" in capsys.readouterr().out


def test_console_script_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "provex", "--version"],
        capture_output=True,
        text=True,
        check=False,
        env={**__import__("os").environ, "PYTHONPATH": str(Path(provex.__file__).parents[1])},
    )
    assert proc.returncode == 0 and provex.__version__ in proc.stdout


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_every_benchmark_has_the_shared_quick(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``--quick`` means the same everywhere: its help is the shared definition plus what is made smaller."""
    from provex.benchmarks.common import QUICK

    with pytest.raises(SystemExit) as e:
        importlib.import_module(BENCHMARKS[name]).main(["--help"])
    assert e.value.code == 0
    text = "".join(capsys.readouterr().out.split())
    assert "--quick" in text and "".join(QUICK.split()) in text


def test_long_commands_show_progress_by_default() -> None:
    from provex.cli import build_parser

    parser = build_parser()
    for argv in (["explain"], ["test-concepts"]):
        assert parser.parse_args(argv).progress is True
        assert parser.parse_args([*argv, "--no-progress"]).progress is False
