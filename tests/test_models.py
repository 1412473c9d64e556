"""The model zoo: architecture, shipped card, accuracy on the full test split, reproducibility."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import provex
from provex.models import MnistCNN, ModelCard, save_weights
from provex.models.train import accuracy, train_mnist_cnn


def test_available_and_unknown() -> None:
    assert "mnist-cnn" in provex.models.available()
    with pytest.raises(ValueError, match="mnist-cnn"):
        provex.models.load("resnet-9000")


def test_architecture_matches_paper(mnist_model: nn.Module) -> None:
    convs = [m for m in mnist_model if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 32, (5, 5), (2, 2)),
        (32, 64, (5, 5), (2, 2)),
        (64, 64, (5, 5), (2, 2)),
    ]
    assert sum(isinstance(m, nn.AvgPool2d) for m in mnist_model) == 3
    linears = [m for m in mnist_model if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(576, 1024), (1024, 10)]
    assert not mnist_model.training
    assert mnist_model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_card_has_data_statistics(mnist_model: nn.Module) -> None:
    card = mnist_model.card
    assert card.data_mean.shape == (1, 28, 28) and card.data_var.shape == (1, 28, 28)
    assert 0.1 < float(card.data_mean.mean()) < 0.16  # MNIST's mean intensity is about 0.13
    assert float(card.data_var.min()) >= 0.0
    weights = Path(provex.models.WEIGHTS_DIR / "mnist-cnn.pt")
    assert weights.stat().st_size < 5 * 2**20


def test_shipped_accuracy_on_all_test_images(mnist_model: nn.Module, mnist_root: Path) -> None:
    x, y = provex.data.load_mnist("test", root=mnist_root)
    assert x.shape[0] == 10_000
    assert accuracy(mnist_model, x, y) >= 0.99


def test_save_load_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = MnistCNN().eval()
    card = ModelCard(name="mnist-cnn", description="t", data_mean=torch.rand(1, 28, 28), metrics={"a": 0.5})
    path = save_weights(model, card, tmp_path / "w.pt")
    loaded = provex.models.load("mnist-cnn", path=path)
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x))
    assert loaded.card.metrics == {"a": 0.5}
    assert list(tmp_path.iterdir()) == [path]


def test_training_is_reproducible_with_a_seed(mnist_root: Path) -> None:
    kw = dict(epochs=1, batch_size=32, root=mnist_root, progress=False, max_steps=3)
    a, _ = train_mnist_cnn(seed=5, **kw)
    b, _ = train_mnist_cnn(seed=5, **kw)
    c, _ = train_mnist_cnn(seed=6, **kw)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.state_dict().values(), c.state_dict().values()))
