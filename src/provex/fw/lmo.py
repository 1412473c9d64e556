"""Linear minimisation oracles (LMOs): ``v = argmin_{v in C} <g, v>`` for batches of problems.

Every oracle takes a batch of gradients, one row per problem (shape ``(P, n)``, or
``(P, n, n)`` for the Birkhoff polytope), and returns one vertex of its set per problem. An
optional ``index`` (P,) says which of the oracle's problems the rows belong to, so that
problem-specific parameters (the rate ``k`` of each problem) follow a solver that only
advances the problems that have not converged yet.

Ties. A gradient computed in float32 by a batched model changes in its last bits with the
batch composition, and a vertex is a discrete choice: left alone, exact or near ties (e.g.
components whose gradient is exactly zero) are resolved by whatever path the sort or the
assignment solver takes, which those last bits steer. With ``tie_break=True`` (default) the
k-sparse and Birkhoff oracles first round each problem's gradient to ``2^-TIE_BITS`` of its
largest entry and then break the remaining ties by a fixed rule (lower index first; for
permutations the one closest to the identity order), so the vertex is a deterministic
function of the rounded gradient. The vertex is optimal for the rounded gradient, within
``n * 2^-TIE_BITS * max|g|`` of the exact minimum of ``<g, v>``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = ["LMO", "TIE_BITS", "Birkhoff", "Box", "KSparseNonNegative", "Simplex", "rounded"]

TIE_BITS = 16  # gradients are rounded to 2^-16 of each problem's largest entry before choosing a vertex


def rounded(grad: torch.Tensor, bits: int = TIE_BITS) -> torch.Tensor:
    """Each problem's gradient (first dimension) in units of ``2^-bits`` of its largest magnitude, rounded (float64)."""
    g = grad.detach().to(torch.float64)
    scale = g.abs().flatten(1).amax(1).view(-1, *([1] * (g.ndim - 1)))
    unit = torch.where(scale > 0, scale * 2.0**-bits, torch.ones_like(scale))
    return torch.round(g / unit)


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
    ``tie_break``: see the module doc (ties go to the lower index).
    """

    def __init__(self, k: int | torch.Tensor, n: int | None = None, tie_break: bool = True) -> None:
        self.tie_break = tie_break
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
        kmax = min(int(k if k.ndim == 0 else _rows(k, index).max()), n)
        if self.tie_break:
            key = -rounded(grad)  # whole numbers up to 2^TIE_BITS: key * n + rank is exact in float64
            order = torch.arange(n - 1, -1, -1, device=grad.device, dtype=key.dtype)
            _, idx = torch.topk(key * n + order, kmax, dim=1)
            vals = key.gather(1, idx)
        else:
            vals, idx = torch.topk(-grad, kmax, dim=1)
        keep = vals > 0
        if k.ndim > 0:
            keep = keep & (torch.arange(kmax, device=grad.device) < _rows(k, index)[:, None])
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
    ``tie_break``: see the module doc; among assignments tied after rounding, the one
    maximising ``sum_i i * col(i)`` (closest to the identity order) is preferred.
    """

    def __init__(self, tie_break: bool = True) -> None:
        self.tie_break = tie_break

    def permutations(self, grad: torch.Tensor) -> torch.Tensor:
        """(P, n, n) gradients -> (P, n) long: row ``i`` of problem ``p`` goes to column ``out[p, i]``."""
        if self.tie_break:
            n = grad.shape[1]
            i = torch.arange(n, dtype=torch.float64)
            prefer = -torch.outer(i, i) / (2.0 * max(n, 1) ** 3)  # sums to less than half a rounding unit
            g = (rounded(grad.detach().cpu()) + prefer).numpy()
        else:
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
