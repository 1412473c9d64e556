"""Shared fixtures: the shipped model and samples, a tiny model, and the MNIST folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

import provex


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow; run with --runslow (or the matching benchmark)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def mnist_model() -> nn.Module:
    return provex.models.load("mnist-cnn")


@pytest.fixture(scope="session")
def mnist_samples() -> tuple[torch.Tensor, torch.Tensor]:
    return provex.data.samples("mnist")


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The folder with the MNIST IDX files; CI sets PROVEX_DATA (see .ci/run)."""
    for d in provex.data.mnist.mnist_dirs():
        if (d / "t10k-images-idx3-ubyte.gz").is_file() or (d / "t10k-images-idx3-ubyte").is_file():
            return d
    pytest.skip("MNIST IDX files not found; set PROVEX_DATA")


class TinyNet(nn.Sequential):
    """A small conv net on (N, 1, 6, 6) inputs with 3 classes, for exact checks."""

    def __init__(self) -> None:
        super().__init__(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(36, 3))


@pytest.fixture
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return TinyNet().double().eval()
