"""End-to-end concept importance for a zoo classifier with CAV concepts (``provex test-concepts``).

1. Embed training and test images with :class:`ModelEncoder` (the input of the last layer).
2. Learn one CAV per concept from example sets of training images (MNIST stroke concepts, or
   your own sets), giving concept scores Z = normalize(H) c^T for both splits.
3. Optionally add a control concept: the first concept's scores shuffled across images
   (independent of the prediction by construction, so a test on it is under H0).
4. For each class k, Y = the class-k logit on the test images, and run SKIT (global), cSKIT
   (global conditional, with a KDE conditional sampler over the training concept table) or
   xSKIT (one test image, random conditioning sets, embeddings by nearest-neighbour lift),
   ``repeats`` times on random orders of the data, vectorised over repeats and concepts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from provex import models
from provex.checks import unknown
from provex.concepts.bottleneck import ConceptBottleneck, learn_cav
from provex.concepts.encoders import ModelEncoder
from provex.concepts.mnist import mnist_concept_sets
from provex.stats import BatchBettingResult, KDESampler, cskit, fdr_betting, skit, xskit

__all__ = ["ConceptData", "load_concept_sets", "prepare_mnist_concepts", "run_concept_tests"]

CONTROL_PREFIX = "control: shuffled "


@dataclass
class ConceptData:
    """Concept scores and embeddings of a model on train/test images."""

    names: list[str]
    z_train: torch.Tensor
    z_test: torch.Tensor
    h_train: torch.Tensor
    h_test: torch.Tensor
    logits_test: torch.Tensor
    head: nn.Module
    cav_accuracy: dict[str, float] = field(default_factory=dict)


def load_concept_sets(path: str | os.PathLike, pool: torch.Tensor, seed: int = 0) -> dict[str, tuple[Any, Any]]:
    """Concept example sets from an ``.npz`` file: one array of images (n, C, H, W) in [0, 1]
    per concept name; counterexamples are the array ``negative`` if present, else random
    images from ``pool``. Returns ``name -> (examples, counterexamples)`` image tensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--concepts: no such file {path}")
    rng = np.random.default_rng(seed)
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: torch.from_numpy(np.asarray(f[k], dtype=np.float32)) for k in f.files}
    neg = arrays.pop("negative", None)
    if not arrays:
        raise ValueError(f"--concepts: {path} holds no concept arrays")
    out = {}
    for name, pos in arrays.items():
        if pos.ndim == 3:
            pos = pos.unsqueeze(1)
        if pos.shape[1:] != pool.shape[1:] or pos.shape[0] < 2:
            raise ValueError(f"--concepts: {name!r} must hold >= 2 images of shape {tuple(pool.shape[1:])}")
        n = neg if neg is not None else pool[rng.choice(pool.shape[0], min(pool.shape[0], 2 * pos.shape[0]), False)]
        out[name] = (pos, n)
    return out


def prepare_mnist_concepts(
    model_name: str = "mnist-cnn",
    root: str | os.PathLike | None = None,
    n_train: int = 10000,
    n_test: int = 10000,
    n_examples: int = 500,
    concepts_file: str | os.PathLike | None = None,
    control: bool = True,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = False,
) -> ConceptData:
    """Steps 1-3 of the module docstring for a zoo model trained on MNIST."""
    from provex.data import load_mnist

    if n_train < 100 or n_test < 100:
        raise ValueError(f"n_train and n_test must be at least 100, got {n_train} and {n_test}")
    model = models.load(model_name, device=device)
    x_train, _ = load_mnist("train", root=root)
    x_test, _ = load_mnist("test", root=root)
    x_train, x_test = x_train[:n_train], x_test[:n_test]
    enc = ModelEncoder(model)
    h_train = enc.encode(x_train, progress=progress).cpu()
    h_test = enc.encode(x_test, progress=progress).cpu()
    if concepts_file is None:
        sets = {k: (h_train[p], h_train[n]) for k, (p, n) in mnist_concept_sets(x_train, n_examples, seed).items()}
    else:
        sets = {
            k: (enc.encode(p).cpu(), enc.encode(n).cpu())
            for k, (p, n) in load_concept_sets(concepts_file, x_train, seed).items()
        }
    cavs = {k: learn_cav(p, n, seed=seed) for k, (p, n) in sets.items()}
    cb = ConceptBottleneck.from_cavs(cavs)
    z_train, z_test = cb.scores(h_train), cb.scores(h_test)
    names = list(cb.names)
    if control:
        g = torch.Generator().manual_seed(seed + 1)
        names.append(CONTROL_PREFIX + names[0])
        z_train = torch.cat([z_train, z_train[torch.randperm(n_train, generator=g), :1]], 1)
        z_test = torch.cat([z_test, z_test[torch.randperm(n_test, generator=g), :1]], 1)
    head = enc.head_module.cpu()
    with torch.no_grad():
        logits = head(h_test)
    return ConceptData(
        names=names,
        z_train=z_train.double(),
        z_test=z_test.double(),
        h_train=h_train,
        h_test=h_test,
        logits_test=logits.double(),
        head=head,
        cav_accuracy={k: c.accuracy for k, c in cavs.items()},
    )


def run_concept_tests(
    data: ConceptData,
    cls: int,
    test: str = "cskit",
    kernel: str = "rbf",
    alpha: float = 0.05,
    tau_max: int = 200,
    repeats: int = 20,
    seed: int = 0,
    fdr: bool = False,
    index: int = 0,
    cond_size: int = 2,
    n_eff: float | None = None,
    progress: bool = False,
) -> tuple[BatchBettingResult, Any]:
    """Step 4 for class ``cls``: a (repeats, concepts) batch result and the e-BH result (or None)."""
    k = len(data.names)
    n_classes = data.logits_test.shape[1]
    if isinstance(cls, bool) or not isinstance(cls, int) or not 0 <= cls < n_classes:
        raise ValueError(f"class must be in 0..{n_classes - 1}, got {cls!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    stop_at = k / alpha if fdr else None
    y = data.logits_test[:, cls]
    n = y.shape[0]
    if test == "skit":
        res = skit(
            y.expand(repeats, k, n),
            data.z_test.T.expand(repeats, k, n),
            kernel,
            alpha,
            tau_max,
            seed + cls,
            stop_at=stop_at,
            progress=progress,
        )
    elif test == "cskit":
        sampler = KDESampler(data.z_train, n_eff=n_eff)
        res = cskit(
            y.expand(repeats, n),
            data.z_test.expand(repeats, n, k),
            list(range(k)),
            sampler,
            kernel,
            alpha,
            tau_max,
            seed + cls,
            stop_at=stop_at,
            progress=progress,
        )
    elif test == "xskit":
        if not 0 <= index < n:
            raise ValueError(f"index must be in 0..{n - 1}, got {index}")
        if not 0 <= cond_size < k:
            raise ValueError(f"cond_size must be in 0..{k - 1}, got {cond_size}")
        sampler = KDESampler(data.z_train, embeddings=data.h_train, n_eff=n_eff)
        rng = np.random.default_rng(seed)
        head = data.head

        def classify(h: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return head(h.float())[:, cls].double()

        parts = []
        for r in range(repeats):
            sets = [
                sorted(rng.choice([i for i in range(k) if i != j], cond_size, replace=False).tolist()) for j in range(k)
            ]
            parts.append(
                xskit(
                    data.z_test[index],
                    list(range(k)),
                    sets,
                    sampler.sample_embedding,
                    classify,
                    kernel,
                    alpha,
                    tau_max,
                    seed + 1000 * r + cls,
                    stop_at=stop_at,
                )
            )
        res = BatchBettingResult(
            rejected=torch.stack([p.rejected for p in parts]),
            tau=torch.stack([p.tau for p in parts]),
            wealth=torch.stack([p.wealth for p in parts]),
            payoffs=torch.stack([p.payoffs for p in parts]),
            alpha=alpha,
            tau_max=tau_max,
            test="xskit",
            kernel=parts[0].kernel,
        )
    else:
        raise unknown("test", test, ("skit", "cskit", "xskit"))
    return res, (fdr_betting(res) if fdr else None)


def summary_rows(res: BatchBettingResult, names: Sequence[str], fdr_res: Any = None) -> list[dict[str, Any]]:
    """Per concept: rejection rate, mean tau / tau_max, important; sorted by mean tau."""
    from provex.stats import rank_concepts

    ranked = rank_concepts(res.rejected, res.tau, res.tau_max, names, res.alpha)
    rows = []
    for c in ranked:
        row: dict[str, Any] = {
            "concept": c.name,
            "rejection_rate": c.rejection_rate,
            "mean_tau": c.mean_tau,
            "important": c.important,
        }
        if fdr_res is not None:
            j = list(names).index(c.name)
            row["fdr_rejection_rate"] = float(fdr_res.rejected[:, j].double().mean())
        rows.append(row)
    return rows
