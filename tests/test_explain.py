"""The explain() registry, the sensitivity method against independent truths, and bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import provex
from provex.explanation import Explanation


def test_registry_lists_sensitivity() -> None:
    assert "sensitivity" in provex.methods()
    spec = {s.name: s for s in provex.methods(details=True)}["sensitivity"]
    assert spec.options == {"absolute": False}


def test_sensitivity_matches_finite_differences(tiny_model: nn.Module) -> None:
    torch.manual_seed(1)
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    exp = provex.explain(tiny_model, x, "sensitivity", target=torch.tensor([0, 2]))
    eps = 1e-6
    for n, t in enumerate([0, 2]):
        fd = torch.zeros(36, dtype=torch.float64)
        for i in range(36):
            e = torch.zeros(36, dtype=torch.float64)
            e[i] = eps
            up = tiny_model((x[n].flatten() + e).view(1, 1, 6, 6))[0, t]
            dn = tiny_model((x[n].flatten() - e).view(1, 1, 6, 6))[0, t]
            fd[i] = (up - dn) / (2 * eps)
        torch.testing.assert_close(exp.relevance[n].flatten(), fd, rtol=1e-5, atol=1e-7)


def test_batch_equals_one_at_a_time_and_default_target(mnist_model: nn.Module, mnist_samples) -> None:
    x, _ = mnist_samples
    x = x[:5]
    batch = provex.explain(mnist_model, x, "sensitivity")
    pred = mnist_model(x).argmax(1)
    assert batch.target.tolist() == pred.tolist() == batch.prediction.tolist()
    for i in range(5):
        single = provex.explain(mnist_model, x[i : i + 1], "sensitivity", absolute=True)
        torch.testing.assert_close(single.relevance[0], batch.relevance[i].abs(), rtol=1e-4, atol=1e-6)
    assert "seconds" in batch.info and batch.info["options"] == {"absolute": False}


def test_parameters_gradients_untouched(mnist_model: nn.Module, mnist_samples) -> None:
    x, _ = mnist_samples
    provex.explain(mnist_model, x[:2], "sensitivity")
    assert all(p.grad is None for p in mnist_model.parameters())


def test_unknown_method_lists_valid(mnist_model: nn.Module, mnist_samples) -> None:
    with pytest.raises(ValueError, match=r"available methods: .*sensitivity"):
        provex.explain(mnist_model, mnist_samples[0][:1], "magic")


def test_unknown_option(mnist_model: nn.Module, mnist_samples) -> None:
    with pytest.raises(ValueError, match="valid options: \\['absolute'\\]"):
        provex.explain(mnist_model, mnist_samples[0][:1], "sensitivity", rate=3)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.rand(1, 28, 28), "shape \\(N, C, H, W\\).*unsqueeze"),
        (torch.zeros(1, 1, 28, 28, dtype=torch.int64), "floating dtype"),
        (torch.full((1, 1, 28, 28), float("nan")), "x contains NaN"),
        (torch.full((1, 1, 28, 28), float("inf")), "x contains inf"),
        ([[0.0]], "torch.Tensor"),
    ],
)
def test_bad_x(mnist_model: nn.Module, x, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        provex.explain(mnist_model, x, "sensitivity")


@pytest.mark.parametrize(
    ("target", "match"),
    [
        (10, "target out of range"),
        (-1, "target out of range"),
        (torch.tensor([1, 2, 3]), "target must"),
        (1.5, "integer"),
    ],
)
def test_bad_target(mnist_model: nn.Module, mnist_samples, target, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        provex.explain(mnist_model, mnist_samples[0][:2], "sensitivity", target=target)


def test_explanation_save_load_roundtrip(tmp_path, mnist_model: nn.Module, mnist_samples) -> None:
    exp = provex.explain(mnist_model, mnist_samples[0][:3], "sensitivity")
    exp.info["curve"] = [0.1, 0.2]
    exp.ordering = torch.arange(3 * 784).view(3, 1, 28, 28)
    path = exp.save(tmp_path / "e.pt")
    back = Explanation.load(path)
    torch.testing.assert_close(back.relevance, exp.relevance)
    assert back.method == "sensitivity" and back.target.tolist() == exp.target.tolist()
    assert back.info["curve"] == [0.1, 0.2] and back.info["options"] == {"absolute": False}
    assert torch.equal(back.ordering, exp.ordering) and torch.equal(back.prediction, exp.prediction)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.pt"]


def test_load_rejects_foreign_file(tmp_path) -> None:
    torch.save({"a": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a provex explanation"):
        Explanation.load(tmp_path / "x.pt")


def test_plot_writes_png(tmp_path, mnist_model: nn.Module, mnist_samples) -> None:
    x = mnist_samples[0][:3]
    exp = provex.explain(mnist_model, x, "sensitivity")
    path = exp.plot(tmp_path / "p.png", images=x)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]


def test_failed_save_leaves_nothing(tmp_path, monkeypatch, mnist_model: nn.Module, mnist_samples) -> None:
    exp = provex.explain(mnist_model, mnist_samples[0][:1], "sensitivity")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        exp.save(tmp_path / "e.pt")
    assert list(tmp_path.iterdir()) == []


def test_explanation_validates_shapes() -> None:
    with pytest.raises(ValueError, match="relevance must be"):
        Explanation(torch.zeros(3, 3), "m", torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="target must have shape"):
        Explanation(torch.zeros(2, 1, 3, 3), "m", torch.zeros(3, dtype=torch.long))
