"""Default cell sizes (``grid="auto"``) against brute force, and the methods that use them."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import provex
from provex.cells import auto_side


def _count(h: int, w: int, b: int, ragged: bool) -> int:
    return math.ceil(h / b) * math.ceil(w / b) if ragged else max(1, h // b) * max(1, w // b)


@pytest.mark.parametrize("ragged", [True, False])
def test_auto_side_is_the_smallest_side_within_the_cap(ragged: bool) -> None:
    for h, w in [(28, 28), (224, 224), (100, 120), (227, 227), (5, 300), (3, 3), (64, 48)]:
        for cap in (1, 16, 196, 256, 784):
            for at_least in (1, 2, 4):
                b = auto_side(h, w, cap, at_least=at_least, ragged=ragged)
                short = min(h, w)
                fits = [s for s in range(min(at_least, short), short + 1) if _count(h, w, s, ragged) <= cap]
                # brute force: the smallest admissible side, or the image's shorter side if none fits
                want = min(s for s in fits if s >= min(at_least, short)) if fits else short
                assert b == want, (h, w, cap, at_least, ragged, b, want)


def test_auto_side_refuses_nonpositive_caps() -> None:
    with pytest.raises(ValueError, match="max_cells"):
        auto_side(28, 28, 0)


class _Net(nn.Module):
    """Any image size -> 3 logits (global pooling), for the grid checks at several sizes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize("method", ["kernel-shap", "lime"])
def test_perturbation_methods_size_their_blocks_by_the_image(method: str) -> None:
    net = _Net().eval()
    small = torch.rand(1, 3, 28, 28)
    auto = provex.explain(net, small, method, target=0, n_samples=40, progress=False)
    fixed = provex.explain(net, small, method, target=0, n_samples=40, grid=2, progress=False)
    assert auto.info["grid"] == 2 and torch.equal(auto.relevance, fixed.relevance)  # the old default on MNIST
    big = torch.rand(1, 3, 224, 224)
    exp = provex.explain(net, big, method, target=0, n_samples=40, progress=False)
    assert exp.info["grid"] == 16 and int(exp.info["per_image"]["n_features"][0]) == 196
    # every 16 x 16 block carries one value (channels tied)
    blocks = exp.relevance[0, 0].reshape(14, 16, 14, 16)
    assert torch.equal(blocks, blocks[:, :1, :, :1].expand_as(blocks))


def test_h_shap_sizes_its_cells_by_the_image() -> None:
    net = _Net().eval()
    small = torch.rand(1, 3, 28, 28)
    auto = provex.explain(net, small, "h-shap", target=0, reference=0.0, progress=False)
    fixed = provex.explain(net, small, "h-shap", target=0, reference=0.0, grid=4, progress=False)
    assert auto.info["grid"] == 4 and torch.equal(auto.relevance, fixed.relevance)  # the old default on MNIST
    exp = provex.explain(net, torch.rand(1, 3, 224, 224), "h-shap", target=0, reference=0.0, progress=False)
    assert exp.info["grid"] == 14
    # at most 16 x 16 = 256 finest cells: the map is constant on every 14 x 14 cell
    cells = exp.relevance[0, 0].reshape(16, 14, 16, 14)
    assert torch.equal(cells, cells[:, :1, :, :1].expand_as(cells))
