"""Concept bottleneck Z = H c^T over any encoder, with CAV or text concepts.

``ConceptBottleneck(concepts, names)`` holds unit concept vectors c_j (K, D). Concept scores of
embeddings H (n, D) are ``Z = normalize(H) c^T`` (cosine similarities). Concept vectors come
from:

- :func:`learn_cav`: a concept activation vector (Kim et al. 2018): the unit normal of a
  logistic-regression boundary between embeddings of examples of the concept and of
  counterexamples, learned in any model's embedding;
- ``ConceptBottleneck.from_text(encoder, names)``: text embeddings of concept names, for
  encoders whose text and input embeddings share a space (CLIP), or for text inputs (MiniLM).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["CAV", "ConceptBottleneck", "learn_cav", "learn_cavs"]


@dataclass
class CAV:
    """A learned concept direction and how well it separates held-out examples."""

    vector: torch.Tensor
    accuracy: float
    n_positive: int
    n_negative: int


def learn_cav(
    positive: torch.Tensor, negative: torch.Tensor, C: float = 1.0, holdout: float = 0.2, seed: int = 0
) -> CAV:
    """Unit concept vector separating ``positive`` (n, D) from ``negative`` (m, D) embeddings.

    Embeddings are L2-normalised first (as the concept scores are). A logistic regression with
    inverse regularisation ``C`` is fitted on all examples; ``accuracy`` is that of a fit on
    (1 - holdout) of them, evaluated on the rest.
    """
    from sklearn.linear_model import LogisticRegression

    for name, t in (("positive", positive), ("negative", negative)):
        if not isinstance(t, torch.Tensor) or t.ndim != 2 or t.shape[0] < 2:
            raise ValueError(f"{name} must be an (n, D) tensor of at least 2 embeddings")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf values")
    if positive.shape[1] != negative.shape[1]:
        raise ValueError(f"positive and negative embeddings differ in size: {positive.shape[1]} vs {negative.shape[1]}")
    x = F.normalize(torch.cat([positive, negative]).double(), dim=1).numpy()
    y = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    cut = int(len(y) * (1 - holdout))
    acc = float("nan")
    if 0 < holdout < 1 and len(np.unique(y[perm[:cut]])) == 2:
        clf = LogisticRegression(C=C, max_iter=2000).fit(x[perm[:cut]], y[perm[:cut]])
        acc = float(clf.score(x[perm[cut:]], y[perm[cut:]]))
    clf = LogisticRegression(C=C, max_iter=2000).fit(x, y)
    w = torch.from_numpy(clf.coef_[0]).float()
    return CAV(vector=w / w.norm().clamp_min(1e-12), accuracy=acc, n_positive=len(positive), n_negative=len(negative))


def learn_cavs(
    examples: Mapping[str, tuple[torch.Tensor, torch.Tensor]], C: float = 1.0, seed: int = 0
) -> dict[str, CAV]:
    """:func:`learn_cav` for each ``name -> (positive, negative)`` embedding pair."""
    return {name: learn_cav(pos, neg, C=C, seed=seed) for name, (pos, neg) in examples.items()}


class ConceptBottleneck:
    """Unit concept vectors (K, D) with names; ``scores(H)`` = normalize(H) c^T."""

    def __init__(self, concepts: torch.Tensor, names: Sequence[str]) -> None:
        if not isinstance(concepts, torch.Tensor) or concepts.ndim != 2:
            raise ValueError("concepts must be a (K, D) tensor")
        if len(names) != concepts.shape[0]:
            raise ValueError(f"names has {len(names)} entries for {concepts.shape[0]} concepts")
        if len(set(names)) != len(names):
            raise ValueError("concept names must be unique")
        if not bool(torch.isfinite(concepts).all()) or bool((concepts.norm(dim=1) == 0).any()):
            raise ValueError("concepts must be finite and nonzero")
        self.concepts = F.normalize(concepts.float(), dim=1)
        self.names = list(names)

    @classmethod
    def from_cavs(cls, cavs: Mapping[str, CAV]) -> ConceptBottleneck:
        return cls(torch.stack([c.vector for c in cavs.values()]), list(cavs))

    @classmethod
    def from_text(
        cls, encode_text: Callable[[Sequence[str]], torch.Tensor], names: Sequence[str], template: str = "{}"
    ) -> ConceptBottleneck:
        """Concept vectors = text embeddings of ``template.format(name)``."""
        return cls(encode_text([template.format(n) for n in names]), names)

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        """Concept scores Z (n, K) of embeddings H (n, D)."""
        if h.ndim != 2 or h.shape[1] != self.concepts.shape[1]:
            raise ValueError(f"embeddings must be (n, {self.concepts.shape[1]}), got {tuple(h.shape)}")
        return F.normalize(h.float(), dim=1) @ self.concepts.to(h.device).T

    def __len__(self) -> int:
        return len(self.names)
