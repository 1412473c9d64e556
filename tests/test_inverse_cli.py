"""``provex lpn prior|reconstruct`` and ``provex benchmark lpn`` on tiny settings and a small LPN."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from provex.cli import main
from provex.inverse import build_lpn
from provex.models import ModelCard, save_weights


@pytest.fixture(autouse=True)
def _threads() -> None:
    """Overrides conftest's: these tensors are tiny, and one thread avoids OpenMP overhead."""
    torch.set_num_threads(1)


@pytest.fixture
def small_weights(tmp_path: Path) -> Path:
    """A small untrained MNIST-shaped LPN saved like a zoo model (stands in for lpn-mnist)."""
    torch.manual_seed(0)
    config = {"arch": "conv", "in_channels": 1, "image_size": 28, "hidden": 4, "dense": 4, "beta": 10.0, "alpha": 0.5}
    return save_weights(
        build_lpn(**config), ModelCard(name="lpn-mnist", description="t", config=config), tmp_path / "w.pt"
    )


def test_reconstruct_writes_json_and_png(tmp_path: Path, small_weights: Path, mnist_root: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = [
        "lpn",
        "reconstruct",
        "--operator",
        "blur",
        "--weights",
        str(small_weights),
        "--images",
        "3",
        "--val-images",
        "2",
        "--iters",
        "3",
        "--tv-iters",
        "5",
        "--data",
        str(mnist_root),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    summary = json.loads((out / "reconstruct-blur-admm.json").read_text())
    assert summary["n_images"] == 3 and summary["iterations"] == 3
    assert set(summary["tuning"]) == {"pnp", "tv"} and summary["psnr_tv"] > 0
    assert (out / "reconstruct-blur-admm.png").read_bytes()[:4] == b"\x89PNG"
    assert "LPN" in capsys.readouterr().out


def test_reconstruct_refuses_pgd_step_outside_theorem(tmp_path: Path, small_weights: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = [
        "lpn",
        "reconstruct",
        "--operator",
        "inpaint",
        "--method",
        "pgd",
        "--eta",
        "2.0",
        "--weights",
        str(small_weights),
        "--out",
        str(out),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "eta = 2 violates" in err and "force" in err
    assert not out.exists()


def test_prior_cli(tmp_path: Path, small_weights: Path, mnist_root: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = [
        "lpn",
        "prior",
        "--weights",
        str(small_weights),
        "--images",
        "3",
        "--levels",
        "0",
        "0.3",
        "--perturb",
        "blur",
        "--data",
        str(mnist_root),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    summary = json.loads((out / "prior-blur.json").read_text())
    assert summary["levels"] == [0.0, 0.3] and len(summary["spearman_per_image"]) == 3
    assert summary["inversion_converged_fraction"] == 1.0
    assert (out / "prior-blur.png").is_file()
    assert "Spearman" in capsys.readouterr().out


def test_lpn_cli_rejects_non_lpn_model(tmp_path: Path, capsys) -> None:
    assert main(["lpn", "prior", "--model", "mnist-cnn", "--out", str(tmp_path / "o")]) == 2
    assert "not a learned proximal network" in capsys.readouterr().err
