"""``provex benchmark ordering``: output files and format, method checks, the claim check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from provex.benchmarks import BENCHMARKS
from provex.benchmarks.relevance_ordering import PAPER_METHODS, claim_check, main
from provex.cli import main as cli_main
from provex.evaluate import OrderingCurve
from provex.explanation import Explanation


def test_small_run_writes_results_and_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--step",
        "10",
        "--n-noise",
        "8",
        "--no-compile",
        "--images",
        "2",
        "--grid-images",
        "2",
        "--batch-size",
        "128",
    ]
    argv += ["--methods", "sensitivity", "deep-taylor"]
    assert main([*argv, "-O", "deep-taylor:low=-0.5", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res) == {"settings", "methods"}
    assert list(res["methods"]) == ["sensitivity", "deep-taylor"]
    for m in res["methods"].values():
        assert set(m) == {"auc_distortion", "auc_accuracy", "seconds_per_image", "curve"}
        assert 0 <= m["auc_distortion"] <= 1 and 0 <= m["auc_accuracy"] <= 1
        assert len(m["curve"]["distortion"]) == len(m["curve"]["fraction_kept"]) == 80  # ceil(784 / 10) + 1
        assert m["curve"]["settings"]["n_noise"] == 8
    s = res["settings"]
    assert s["images"] == 2 and s["step"] == 10 and not s["quick"] and not s["compile"]
    assert s["method_options"] == {"sensitivity": {"absolute": True}, "deep-taylor": {"low": -0.5}}
    assert s["throughput"]["evaluation_forward_passes"] == 2 * (2 + 2 * 79 * 8)
    for name in ("ordering.png", "maps.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert Explanation.load(tmp_path / "maps" / "deep-taylor.pt").relevance.shape == (2, 1, 28, 28)
    out = capsys.readouterr().out
    assert "dist. AUC" in out and "claim check skipped" in out
    assert "claim check skipped" in (tmp_path / "summary.txt").read_text()


def test_registered_and_defaults_to_the_papers_methods(capsys: pytest.CaptureFixture[str]) -> None:
    assert BENCHMARKS["ordering"] == "provex.benchmarks.relevance_ordering"
    assert PAPER_METHODS[-3:] == ["l-rde", "mr-rde", "ord-rde"] and len(PAPER_METHODS) == 10
    assert cli_main(["benchmark", "ordering", "--methods", "sensitivity", "magic"]) == 2
    err = capsys.readouterr().err
    assert "not registered: magic; registered methods: " in err and "deep-taylor" in err


def test_gaussian_noise_option_and_saved_maps(tmp_path: Path) -> None:
    argv = ["--images", "2", "--step", "392", "--n-noise", "2", "--batch-size", "8", "--no-compile"]
    argv += ["--noise", "gaussian", "--methods", "sensitivity"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert res["settings"]["noise"].startswith("gaussian") and not res["settings"]["compile"]
    assert res["methods"]["sensitivity"]["curve"]["settings"]["noise"] == "gaussian"
    assert len(res["methods"]["sensitivity"]["curve"]["distortion"]) == 3
    # re-evaluating the saved maps with the same settings reproduces the areas (up to float32
    # differences of the model between batch compositions)
    maps = str(tmp_path / "a" / "maps")
    assert main([*argv, "--images", "1", "--maps-from", maps, "--out", str(tmp_path / "b")]) == 0
    again = json.loads((tmp_path / "b" / "results.json").read_text())
    assert again["settings"]["maps_from"] == maps and again["settings"]["images"] == 1
    first = res["methods"]["sensitivity"]["curve"]["per_image_auc_distortion"][0]
    assert again["methods"]["sensitivity"]["auc_distortion"] == pytest.approx(first, rel=1e-9)
    with pytest.raises(FileNotFoundError, match=r"no saved map .*deep-taylor"):
        main([*argv, "--methods", "deep-taylor", "--maps-from", maps, "--out", str(tmp_path / "c")])


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--methods", "sensitivity", "sensitivity"], "lists a method twice"),
        (["--methods", "sensitivity", "-O", "lime:n_samples=5"], "not among --methods"),
        (["--methods", "sensitivity", "-O", "absolute=True"], "METHOD:KEY=VALUE"),
        (["--methods", "sensitivity", "--images", "51"], "--images must be in 1..50"),
        (["--methods", "sensitivity", "--n-noise", "0"], "--n-noise must be >= 1"),
    ],
)
def test_bad_arguments(tmp_path: Path, argv: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        main([*argv, "--out", str(tmp_path)])
    assert not (tmp_path / "results.json").exists()


def _curve(per_image_auc: list[float]) -> OrderingCurve:
    """A two-point curve whose per-image areas are ``per_image_auc`` (distortion 0 -> 2 * auc)."""
    d = torch.tensor([[0.0, 2 * a] for a in per_image_auc], dtype=torch.float64)
    z = torch.zeros(2, dtype=torch.float64)
    return OrderingCurve(
        fraction_kept=torch.tensor([1.0, 0.0], dtype=torch.float64),
        distortion=d.mean(0),
        distortion_se=z,
        accuracy=z,
        accuracy_se=z,
        per_image_distortion=d,
        per_image_accuracy=torch.zeros_like(d),
        auc_distortion=sum(per_image_auc) / len(per_image_auc),
        auc_distortion_se=0.0,
        auc_accuracy=0.0,
        auc_accuracy_se=0.0,
    )


def test_claim_check() -> None:
    good = {"mr-rde": _curve([0.1, 0.2]), "ord-rde": _curve([0.1, 0.1]), "l-rde": _curve([0.3, 0.3])}
    lines = claim_check(good)
    assert "HOLDS" in lines[-1] and "DOES NOT" not in lines[-1]
    assert "mr-rde lower on 2/2 images" in lines[0]
    bad = {**good, "lime": _curve([0.12, 0.05])}
    assert "DOES NOT HOLD" in claim_check(bad)[-1]
    partial = claim_check({"ord-rde": _curve([0.1, 0.1]), "lime": _curve([0.2, 0.2])})
    assert "missing: mr-rde" in partial[-1]


@pytest.mark.slow
def test_quick_run_of_every_paper_method(tmp_path: Path) -> None:
    """The quick run (one image, the paper's settings) with the full default method list."""
    assert main(["--quick", "--out", str(tmp_path)]) == 0
    assert set(json.loads((tmp_path / "results.json").read_text())["methods"]) == set(PAPER_METHODS)
