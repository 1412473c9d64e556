"""Small fixed sample sets that ship inside the package, so default runs need no data folder.

``samples("mnist")``: 50 MNIST *test* images, the first 5 of each digit 0-9 in test-set
order, sorted by index (the indices are returned in ``info`` and listed in the README).
:func:`build_mnist_samples` recreates the shipped file from the IDX files.

Synthetic sets are not shipped but generated deterministically on each call (see
:data:`GENERATED`): ``samples("crosses")`` is 10 images of :func:`provex.data.crosses` from a
fixed seed, 8 with 1-3 crosses and 2 without.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from provex.checks import unknown
from provex.data.crosses import crosses
from provex.data.mnist import load_mnist
from provex.io import atomic_write

__all__ = ["ASSETS_DIR", "GENERATED", "build_mnist_samples", "sample_indices", "samples"]

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
_FILES = {"mnist": "mnist_samples.npz"}
PER_CLASS = 5
CROSSES_SEED = 2024


def _crosses_samples() -> tuple[torch.Tensor, torch.Tensor]:
    d = crosses(10, seed=CROSSES_SEED, positive_fraction=0.8, n_crosses=(1, 2, 3))
    return d.images, d.labels


GENERATED: dict[str, Callable[[], tuple[torch.Tensor, torch.Tensor]]] = {"crosses": _crosses_samples}
"""Sample sets generated from a fixed seed instead of shipped: name -> ``() -> (images, labels)``."""


def _read(name: str) -> dict[str, np.ndarray]:
    if name not in _FILES:
        raise unknown("sample set", name, [*_FILES, *GENERATED])
    with np.load(ASSETS_DIR / _FILES[name], allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def samples(name: str = "mnist") -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)``: float32 images in [0, 1] and int64 labels; for ``"mnist"``,
    (50, 1, 28, 28) and (50,), for ``"crosses"`` (10, 3, 100, 120) and (10,)."""
    if name in GENERATED:
        return GENERATED[name]()
    d = _read(name)
    x = torch.from_numpy(d["images"].astype(np.float32) / 255.0).unsqueeze(1)
    return x.contiguous(), torch.from_numpy(d["labels"].astype(np.int64))


def sample_indices(name: str = "mnist") -> list[int]:
    """Positions of the shipped samples in the original test split (generated sets: 0..n-1)."""
    if name in GENERATED:
        return list(range(GENERATED[name]()[0].shape[0]))
    return [int(i) for i in _read(name)["indices"]]


def build_mnist_samples(root: str | os.PathLike | None = None, out: str | os.PathLike | None = None) -> Path:
    """Recreate the shipped MNIST sample file from the IDX files (first 5 test images per class)."""
    x, y = load_mnist("test", root=root)
    idx = np.sort(np.concatenate([np.nonzero(y.numpy() == c)[0][:PER_CLASS] for c in range(10)]))
    images = np.rint(x[idx, 0].numpy() * 255.0).astype(np.uint8)
    final = Path(out or ASSETS_DIR / _FILES["mnist"])
    with atomic_write(final) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, images=images, labels=y[idx].numpy().astype(np.uint8), indices=idx.astype(np.int32))
    return final
