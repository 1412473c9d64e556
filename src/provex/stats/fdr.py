"""Error control over many concepts (e-BH) and ranking by rejection time.

The wealth of a betting test stopped at any stopping time is an e-value under its null
(E[K_tau] <= 1, optional stopping for a nonnegative martingale). The e-BH procedure
(Wang & Ramdas 2022) rejects the k* hypotheses with the largest e-values, where
``k* = max{k : e_(k) >= K / (alpha k)}``; it controls the false discovery rate at
``alpha * K0 / K`` for arbitrarily dependent e-values. Run the K concept tests with
``stop_at = K / alpha`` (a test that reaches it is rejected whatever the others do) and pass
the batch result to :func:`fdr_betting`.

Ranking: over repeated tests, a concept's importance is summarised by its rejection rate and
mean rejection time (non-rejections count as tau_max); concepts are ordered by mean rejection
time, and called important when the rejection rate is above alpha (as in the paper).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from provex.stats._engine import BatchBettingResult, check_alpha

__all__ = ["ConceptImportance", "FDRResult", "ebh", "fdr_betting", "rank_concepts"]


def ebh(e_values: torch.Tensor, alpha: float = 0.05) -> torch.Tensor:
    """e-BH rejections (bool, same shape) over the last axis of ``e_values`` (..., K)."""
    alpha = check_alpha(alpha)
    e = torch.as_tensor(e_values, dtype=torch.float64)
    if e.ndim == 0 or e.shape[-1] == 0:
        raise ValueError("e_values must have a non-empty last axis of K hypotheses")
    if bool(torch.isnan(e).any()) or bool((e < 0).any()):
        raise ValueError("e_values must be nonnegative numbers (no NaN)")
    k = e.shape[-1]
    sorted_e, order = torch.sort(e, dim=-1, descending=True)
    ranks = torch.arange(1, k + 1, dtype=torch.float64, device=e.device)
    ok = sorted_e >= k / (alpha * ranks)
    # k* = largest rank that passes (0 if none)
    kstar = torch.where(ok, ranks, torch.zeros_like(ranks)).amax(-1, keepdim=True)
    reject_sorted = ranks <= kstar
    out = torch.zeros_like(reject_sorted)
    return out.scatter(-1, order, reject_sorted)


@dataclass
class FDRResult:
    """e-BH decisions over the last (concept) axis.

    ``rejected`` (*batch, K); ``tau`` (*batch, K): for rejected concepts the first step at which
    the wealth reached the e-BH threshold K / (alpha k*), else tau_max; ``e_values`` the
    stopped wealth used.
    """

    rejected: torch.Tensor
    tau: torch.Tensor
    e_values: torch.Tensor
    alpha: float
    tau_max: int


def fdr_betting(result: BatchBettingResult, alpha: float | None = None) -> FDRResult:
    """e-BH over the last axis of a batch of betting tests (one per concept).

    The e-value of each test is its wealth where it stopped; run the tests with
    ``stop_at=K / alpha`` (or ``float("inf")``) so that strong evidence is not cut off at 1/alpha.
    """
    if not isinstance(result, BatchBettingResult) or result.rejected.ndim == 0:
        raise ValueError("result must be a BatchBettingResult with a concept axis last")
    a = check_alpha(result.alpha if alpha is None else alpha)
    e = result.final_wealth()
    rej = ebh(e, a)
    k = e.shape[-1]
    kstar = rej.sum(-1, keepdim=True).clamp_min(1).double()
    thresh = k / (a * kstar)  # (*batch, 1)
    w = result.wealth.nan_to_num(nan=-1.0)
    crossed = w >= thresh[..., None]
    first = torch.where(crossed.any(-1), crossed.double().argmax(-1), torch.full_like(e, result.tau_max)).long()
    tau = torch.where(rej, first, torch.full_like(first, result.tau_max))
    return FDRResult(rejected=rej, tau=tau, e_values=e, alpha=a, tau_max=result.tau_max)


@dataclass
class ConceptImportance:
    """One concept's summary over repeats."""

    name: str
    rejection_rate: float
    mean_tau: float  # mean rejection time / tau_max, non-rejections count as 1
    important: bool

    def row(self) -> list[object]:
        return [self.name, self.rejection_rate, self.mean_tau, "yes" if self.important else "no"]


def rank_concepts(
    rejected: torch.Tensor, tau: torch.Tensor, tau_max: int, names: Sequence[str], alpha: float = 0.05
) -> list[ConceptImportance]:
    """Concepts sorted by mean rejection time over repeats; rejected/tau are (repeats, K)."""
    alpha = check_alpha(alpha)
    if rejected.ndim != 2 or tau.shape != rejected.shape:
        raise ValueError(f"rejected and tau must both be (repeats, K), got {tuple(rejected.shape)}, {tuple(tau.shape)}")
    if len(names) != rejected.shape[1]:
        raise ValueError(f"names has {len(names)} entries for {rejected.shape[1]} concepts")
    rate = rejected.double().mean(0)
    mtau = tau.double().mean(0) / tau_max
    rows = [ConceptImportance(str(n), float(r), float(t), bool(r > alpha)) for n, r, t in zip(names, rate, mtau)]
    return sorted(rows, key=lambda c: (c.mean_tau, -c.rejection_rate))
