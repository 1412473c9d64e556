"""The synthetic experiment of Teneggi & Sulam (2024), where every conditional is known.

Concepts: Z1 ~ N(1, 1), Z2 ~ N(-1, 1), Z3 = Z1 + N(0, 1), i.e. a Gaussian with mean
(1, -1, 1) and covariance [[1, 0, 1], [0, 1, 0], [1, 0, 2]]; response
Y = sigmoid(b1 z1 + b2 z3 z2 + b3 z3) + N(0, 0.01^2). Z2 matters only through the
interaction with Z3 (b2), so at b2 = 0 every test on Z2 is under its null.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from provex.stats.samplers import GaussianSampler

__all__ = ["SYNTHETIC_COV", "SYNTHETIC_MEAN", "sample_synthetic", "synthetic_model", "synthetic_sampler"]

SYNTHETIC_MEAN = (1.0, -1.0, 1.0)
SYNTHETIC_COV = ((1.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 2.0))


def synthetic_sampler() -> GaussianSampler:
    """Exact conditionals of (Z1, Z2, Z3)."""
    return GaussianSampler(SYNTHETIC_MEAN, SYNTHETIC_COV)


def synthetic_model(z: torch.Tensor, beta: Sequence[float] = (0.3, 0.0, 0.3)) -> torch.Tensor:
    """Noise-free response ``sigmoid(b1 z1 + b2 z3 z2 + b3 z3)`` for z (..., 3)."""
    b1, b2, b3 = (float(b) for b in beta)
    z1, z2, z3 = z[..., 0], z[..., 1], z[..., 2]
    return torch.sigmoid(b1 * z1 + b2 * z3 * z2 + b3 * z3)


def sample_synthetic(
    n: int,
    beta: Sequence[float] = (0.3, 0.0, 0.3),
    repeats: int | None = None,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, y)``: z of shape ([repeats,] n, 3) and y of shape ([repeats,] n), float64."""
    r = 1 if repeats is None else repeats
    z = synthetic_sampler().draw(r * n, generator).reshape(r, n, 3)
    y = synthetic_model(z, beta) + noise * torch.randn(r, n, generator=generator, dtype=torch.float64)
    return (z[0], y[0]) if repeats is None else (z, y)
