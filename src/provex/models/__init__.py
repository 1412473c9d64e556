"""Model zoo: trained models that ship inside the package, loaded offline.

Each entry is a weights file in ``provex/models/weights`` holding a ``state_dict`` and a
``card`` (architecture config, data statistics, measured metrics, how it was trained).
``load(name)`` rebuilds the module, loads the weights, puts it in eval mode and attaches the
card as ``model.card``. Families add entries with :func:`register_model`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from provex.checks import choose
from provex.io import atomic_write
from provex.models.mnist_cnn import MnistCNN

__all__ = [
    "WEIGHTS_DIR",
    "MnistCNN",
    "ModelCard",
    "ZooEntry",
    "available",
    "entry",
    "load",
    "register_model",
    "registered",
    "save_weights",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass
class ModelCard:
    """What a shipped model is, what data statistics it carries and how well it does."""

    name: str
    description: str
    config: dict[str, Any] = field(default_factory=dict)
    data_mean: torch.Tensor | None = None
    data_var: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain, ``weights_only``-loadable form for saving beside the state dict."""
        return {
            "name": self.name,
            "description": self.description,
            "config": dict(self.config),
            "data_mean": self.data_mean,
            "data_var": self.data_var,
            "metrics": dict(self.metrics),
            "training": dict(self.training),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        return cls(**d)


@dataclass(frozen=True)
class ZooEntry:
    """A registered model: how to build it from its card's config, and its weights file."""

    name: str
    builder: str | Callable[..., nn.Module]
    filename: str
    description: str
    samples: str | None = None  # name of the shipped sample set for default CLI runs
    trainer: str | None = None  # module with main(argv) (training) and evaluate(model, root)
    task: str = "classifier"  # "classifier" (explainable: logits per class) or "denoiser" (an LPN)

    def build(self, config: dict[str, Any]) -> nn.Module:
        builder = self.builder
        if isinstance(builder, str):
            module_name, attr = builder.split(":")
            builder = getattr(importlib.import_module(module_name), attr)
        return builder(**config)


_ZOO: dict[str, ZooEntry] = {}


def register_model(zoo_entry: ZooEntry) -> None:
    """Add a model to the zoo (later registrations of the same name replace earlier ones)."""
    _ZOO[zoo_entry.name] = zoo_entry


def entry(name: str) -> ZooEntry:
    """The zoo entry for ``name``; an unknown name lists the valid ones."""
    return choose("model", name, _ZOO)


def registered() -> list[str]:
    """Names of every model in the zoo, sorted (with or without weights installed)."""
    return sorted(_ZOO)


def available() -> list[str]:
    """Names of the models whose weights ship with this installation."""
    return sorted(name for name, e in _ZOO.items() if (WEIGHTS_DIR / e.filename).is_file())


def save_weights(model: nn.Module, card: ModelCard, path: str | Path) -> Path:
    """Write ``{"state_dict", "card"}`` atomically (:func:`provex.io.atomic_write`)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_write(path) as tmp:
        torch.save({"state_dict": state, "card": card.to_dict()}, tmp)
    return Path(path)


def load(name: str, device: str | torch.device | None = None, path: str | Path | None = None) -> nn.Module:
    """Load a zoo model in eval mode, with its :class:`ModelCard` as ``model.card``.

    ``path`` loads weights from another file (for example a model you retrained).
    """
    zoo_entry = entry(name)
    file = Path(path) if path is not None else WEIGHTS_DIR / zoo_entry.filename
    if not file.is_file():
        raise FileNotFoundError(
            f"weights for model {name!r} not found at {file}; reproduce them with "
            f"`provex train {name}` or reinstall the package"
        )
    blob = torch.load(file, map_location="cpu", weights_only=True)
    card = ModelCard.from_dict(blob["card"])
    model = zoo_entry.build(card.config)
    model.load_state_dict(blob["state_dict"])
    model.card = card  # type: ignore[assignment]
    model.eval()
    if device is not None:
        model.to(device)
    return model


register_model(
    ZooEntry(
        name="mnist-cnn",
        builder=MnistCNN,
        filename="mnist-cnn.pt",
        description="FW-RDE paper MNIST CNN: conv32-pool-conv64-pool-conv64-pool-fc1024-fc10, ReLU",
        samples="mnist",
        trainer="provex.models.train",
    )
)
register_model(
    ZooEntry(
        name="crosses-cnn",
        builder="provex.models.crosses_cnn:CrossesCNN",
        filename="crosses-cnn.pt",
        description="cross detector for provex.data.crosses (the h-Shap paper's synthetic task), 4k parameters",
        samples="crosses",
        trainer="provex.models.train_crosses",
    )
)

register_model(
    ZooEntry(
        name="lpn-laplace",
        builder="provex.inverse.lpn:build_lpn",
        filename="lpn-laplace.pt",
        description="Learned proximal network on the 1-D Laplace toy (b=1, sigma=1), (N,1)->(N,1); ~ soft-threshold",
        trainer="provex.inverse.recipes.laplace",
        task="denoiser",
    )
)
register_model(
    ZooEntry(
        name="lpn-mnist",
        builder="provex.inverse.lpn:build_lpn",
        filename="lpn-mnist.pt",
        description="Learned proximal network (convolutional ICNN gradient) denoising MNIST at sigma=0.1",
        samples="mnist",
        trainer="provex.inverse.recipes.mnist",
        task="denoiser",
    )
)
register_model(
    ZooEntry(
        name="lpn-laplace-l2",
        builder="provex.inverse.lpn:build_lpn",
        filename="lpn-laplace-l2.pt",
        description="Comparison for lpn-laplace: the same 1-D LPN trained with l2 (MMSE), not soft-thresholding",
        trainer="provex.inverse.recipes.laplace_l2",
        task="denoiser",
    )
)
