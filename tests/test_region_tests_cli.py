"""``provex test-regions`` on a zoo model and on a user model (FILE.py:FACTORY + weights + images + masks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import provex
from provex.cli import main
from provex.stats import RegionTestResult, block_regions

NET = '''
import torch
from torch import nn


class Net(nn.Module):
    """Class-1 logit = w . (mean of each 4 x 4 quadrant of an 8 x 8 image); class-0 logit 0."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(4))

    def forward(self, x):
        q = x.mean(1).unfold(1, 4, 4).unfold(2, 4, 4).mean((-1, -2)).flatten(1)  # (N, 4) row-major
        logit = q @ self.w
        return torch.stack([torch.zeros_like(logit), logit], 1)


def make():
    return Net()
'''


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_zoo_model_with_a_map(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["test-regions", "--method", "sensitivity", "--index", "0", "1", "--regions", "top-k", "--k", "2"]
    assert main([*argv, "--test", "betting", "--fdr", "--tau-max", "40", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "e-BH over the regions of each image" in out and "regions significant" in out
    res = RegionTestResult.load(tmp_path / "mnist-cnn-sensitivity-betting.safetensors")
    assert res.masks.shape == (2, 2, 28, 28) and res.e_values is not None
    assert json.loads((tmp_path / "mnist-cnn-sensitivity-betting.json").read_text())["test"] == "betting"
    assert (tmp_path / "mnist-cnn-sensitivity-betting.png").read_bytes()[:4] == b"\x89PNG"
    assert provex.Explanation.load(tmp_path / "mnist-cnn-sensitivity-betting-map.pt").method == "sensitivity"


def test_user_model_images_masks_and_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "net.py").write_text(NET)
    torch.save({"w": torch.tensor([2.0, 1.0, 0.0, 0.0])}, tmp_path / "w.pt")
    np.save(tmp_path / "x.npy", np.ones((3, 1, 8, 8), dtype=np.float32))
    np.save(tmp_path / "masks.npy", block_regions(8, 8, 4).numpy())
    provex.Reference(torch.zeros(1, 8, 8), torch.full((1, 8, 8), 0.01)).save(tmp_path / "ref.safetensors")
    argv = [
        "test-regions", "--model", f"{tmp_path / 'net.py'}:make", "--weights", str(tmp_path / "w.pt"),
        "--input", str(tmp_path / "x.npy"), "--masks", str(tmp_path / "masks.npy"),
        "--reference", str(tmp_path / "ref.safetensors"), "--fdr", "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    assert main(argv) == 0
    assert "6 of 12 regions significant" in capsys.readouterr().out
    res = RegionTestResult.load(tmp_path / "out" / "net-masks-xrt.safetensors")
    assert res.rejected.tolist() == [[True, True, False, False]] * 3
    assert res.p_values[:, 2:].eq(1.0).all() and "Benjamini-Hochberg" in res.control


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--alpha", "2"], "--alpha must be in (0, 1)"),
        (["--K", "0"], "--K must be a positive integer"),
        (["--masks", "nope.npy"], "--masks: no such file"),
        (["--index", "99"], "--index out of range"),
        (["--model", "lpn-mnist"], "not a classifier"),
        (["--masks", "MASKS"], "regions masks must be"),
    ],
)
def test_errors_exit_2_with_one_line(tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    np.save(tmp_path / "m.npy", np.ones((2, 5, 5), dtype=bool))
    extra = [str(tmp_path / "m.npy") if e == "MASKS" else e for e in extra]
    out = tmp_path / "out"
    assert main(["test-regions", "--method", "sensitivity", "--index", "0", *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()
