"""The crosses data, the crosses-cnn zoo model, h-Shap on it through explain() and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import provex
from provex.benchmarks.hshap import f1_scores, oracle_f1_scores
from provex.cli import main as cli_main
from provex.data import crosses


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models and batches: one thread avoids thread contention on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_crosses_are_deterministic_and_labelled() -> None:
    a = crosses(40, seed=3)
    b = crosses(40, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.images, crosses(40, seed=4).images)
    assert a.images.shape == (40, 3, 100, 120) and a.images.dtype == torch.float32
    assert float(a.images.min()) >= 0 and float(a.images.max()) <= 1
    assert torch.equal(a.labels, (a.counts > 0).long()) and int(a.labels.sum()) == 20
    # Each cross is an X of two 9-pixel diagonals (17 pixels), drawn in a non-white colour.
    assert torch.equal(a.masks.sum((1, 2, 3)), 17 * a.counts)
    ink = (a.images < 1).any(1, keepdim=True)
    assert bool(ink[a.masks].all())
    one = crosses(5, seed=0, positive_fraction=1.0, n_crosses=6)
    assert one.counts.tolist() == [6] * 5
    with pytest.raises(ValueError, match="n_crosses"):
        crosses(2, n_crosses=0)
    with pytest.raises(ValueError, match="multiples of cell"):
        crosses(2, height=95)
    with pytest.raises(ValueError, match="positive_fraction"):
        crosses(2, positive_fraction=1.5)


def test_crosses_cnn_is_accurate_on_fresh_images() -> None:
    model = provex.models.load("crosses-cnn")
    assert model.card.metrics["fresh_accuracy"] >= 0.99
    assert tuple(model.card.data_mean.shape) == (3, 100, 120)
    d = crosses(600, seed=424242)  # a seed the training never draws
    with torch.no_grad():
        acc = (model(d.images).argmax(1) == d.labels).double().mean()
    assert float(acc) >= 0.99


def test_f1_scores_against_hand_counts() -> None:
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, :2] = True  # 2 true pixels
    maps = torch.zeros(1, 4, 4, dtype=torch.float64)
    maps[0, 0, 0] = 1.0  # tp 1
    maps[0, 3, 3] = 0.5  # fp 1, fn 1 -> f1 = 2 / 4
    maps[0, 2, 2] = 1e-7  # below the paper's eps
    assert f1_scores(maps, mask).tolist() == [0.5]
    assert oracle_f1_scores(maps, mask).tolist() == [pytest.approx(2 / 3)]  # keep only the top pixel


def test_hshap_on_crosses_finds_the_cross(tmp_path: Path) -> None:
    model = provex.models.load("crosses-cnn")
    d = crosses(4, seed=7, positive_fraction=1.0, n_crosses=1)
    x0 = d.images.clone()
    exp = provex.explain(model, d.images, "h-shap", threshold=0.7, threshold_mode="relative")
    assert torch.equal(d.images, x0)
    assert exp.target.tolist() == [1, 1, 1, 1]
    # Every kept cell overlaps the cross's 9 x 9 box (relative 70% keeps the best cells).
    box = torch.nn.functional.max_pool2d(d.masks[:, :1].float(), 9, stride=1, padding=4) > 0
    kept = exp.relevance[:, :1] > 0
    assert bool(kept.any((1, 2, 3)).all()) and not bool((kept & ~box).any())
    evals = exp.info["per_image"]["model_calls"].tolist()
    assert all(e < 200 for e in evals)  # far fewer than the 2**750 coalitions of 4 x 4 cells


def test_cli_explain_crosses_with_hshap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x, y = provex.data.samples("crosses")
    assert x.shape == (10, 3, 100, 120) and int(y.sum()) == 8
    assert torch.equal(x, provex.data.samples("crosses")[0])  # generated deterministically
    code = cli_main(
        ["explain", "--model", "crosses-cnn", "--method", "h-shap", "--index", "0", "1", "--out", str(tmp_path)]
    )
    assert code == 0
    assert (tmp_path / "crosses-samples-h-shap.pt").is_file() and (tmp_path / "crosses-samples-h-shap.png").is_file()
    exp = provex.Explanation.load(tmp_path / "crosses-samples-h-shap.pt")
    assert exp.relevance.shape == (2, 3, 100, 120) and exp.info["model_calls"] > 0
    assert cli_main(["explain", "--model", "crosses-cnn", "--method", "h-shap", "-O", "grid=500"]) == 2
    assert "grid=500 is larger than the image" in capsys.readouterr().err


def test_crosses_training_is_reproducible_with_a_seed(tmp_path: Path) -> None:
    from provex.models.train_crosses import train_crosses_cnn

    kw = {"steps": 3, "seed": 5, "batch_size": 16, "progress": False, "eval_images": 40}
    m1, _ = train_crosses_cnn(out=tmp_path / "a.pt", **kw)
    m2, _ = train_crosses_cnn(**kw)
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    loaded = provex.models.load("crosses-cnn", path=tmp_path / "a.pt")
    assert loaded.card.training["steps"] == 3 and 0 <= loaded.card.metrics["fresh_accuracy"] <= 1
    assert tuple(loaded.card.data_mean.shape) == (3, 100, 120)
