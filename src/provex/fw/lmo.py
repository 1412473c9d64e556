"""Linear minimisation oracles (LMOs): ``v = argmin_{v in C} <g, v>`` for batches of problems.

Every oracle takes a batch of gradients, one row per problem (shape ``(P, n)``, or
``(P, n, n)`` for the Birkhoff polytope), and returns one vertex of its set per problem. An
optional ``index`` (P,) says which of the oracle's problems the rows belong to, so that
problem-specific parameters (the rate ``k`` of each problem) follow a solver that only
advances the problems that have not converged yet.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = ["LMO", "Birkhoff", "Box", "KSparseNonNegative", "Simplex"]


class LMO(Protocol):
    """A linear minimisation oracle over a compact convex set."""

    def __call__(self, grad: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor: ...


def _rows(value: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    return value if index is None else value[index.to(value.device)]


class KSparseNonNegative:
    """The non-negative k-sparse polytope ``{s in [0, 1]^n : sum(s) <= k}``.

    Its vertices are the 0/1 vectors with at most ``k`` ones, so the minimiser of ``<g, v>``
    puts a 1 on the (at most) ``k`` most negative entries of ``g`` and 0 elsewhere (entries
    with ``g >= 0`` never help). ``k`` is one integer for all problems or one per problem.
    """

    def __init__(self, k: int | torch.Tensor, n: int | None = None) -> None:
        k_t = torch.as_tensor(k)
        if k_t.is_floating_point():
            if not bool((k_t == k_t.round()).all()):
                raise ValueError(f"k must be whole numbers, got {k_t.tolist()}")
            k_t = k_t.round()
        k_t = k_t.long()
        if bool((k_t < 1).any()):
            raise ValueError(f"k must be >= 1, got {k_t.tolist()}")
        if n is not None and bool((k_t > n).any()):
            raise ValueError(f"k must be <= n = {n}, got {k_t.tolist()}")
        self.k = k_t

    def __call__(self, grad: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        n = grad.shape[1]
        k = self.k.to(grad.device)
        if k.ndim == 0:
            kmax = min(int(k), n)
            vals, idx = torch.topk(-grad, kmax, dim=1)
            keep = vals > 0
        else:
            k = _rows(k, index)
            kmax = min(int(k.max()), n)
            vals, idx = torch.topk(-grad, kmax, dim=1)
            keep = (vals > 0) & (torch.arange(kmax, device=grad.device) < k[:, None])
        return torch.zeros_like(grad).scatter_(1, idx, keep.to(grad.dtype))


class Box:
    """The box ``[lo, hi]^n``: ``hi`` where the gradient is negative, ``lo`` elsewhere."""

    def __init__(self, lo: float = 0.0, hi: float = 1.0) -> None:
        if not lo < hi:
            raise ValueError(f"Box needs lo < hi, got lo={lo}, hi={hi}")
        self.lo, self.hi = lo, hi

    def __call__(self, grad: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        return torch.where(grad < 0, self.hi, self.lo).to(grad.dtype)


class Simplex:
    """The simplex ``{s >= 0 : sum(s) = radius}``: ``radius`` at the smallest gradient entry."""

    def __init__(self, radius: float = 1.0) -> None:
        if radius <= 0:
            raise ValueError(f"Simplex radius must be positive, got {radius}")
        self.radius = radius

    def __call__(self, grad: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        v = torch.zeros_like(grad)
        return v.scatter_(1, grad.argmin(1, keepdim=True), self.radius)


class Birkhoff:
    """The Birkhoff polytope of n x n doubly stochastic matrices (vertices: permutations).

    ``min <G, P>`` over permutation matrices is a linear assignment problem, solved exactly
    with :func:`scipy.optimize.linear_sum_assignment` (on the CPU, one problem at a time).
    """

    def permutations(self, grad: torch.Tensor) -> torch.Tensor:
        """(P, n, n) gradients -> (P, n) long: row ``i`` of problem ``p`` goes to column ``out[p, i]``."""
        g = grad.detach().to("cpu", torch.float64).numpy()
        cols = np.empty(g.shape[:2], dtype=np.int64)
        for p in range(g.shape[0]):
            _, cols[p] = linear_sum_assignment(g[p])
        return torch.from_numpy(cols).to(grad.device)

    def __call__(self, grad: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        if grad.ndim != 3 or grad.shape[1] != grad.shape[2]:
            raise ValueError(f"Birkhoff LMO needs (P, n, n) gradients, got {tuple(grad.shape)}")
        cols = self.permutations(grad)
        return torch.zeros_like(grad).scatter_(2, cols.unsqueeze(2), 1.0)
