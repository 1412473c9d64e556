"""SHAP-XRT: local conditional randomization tests that share the Shapley value's value function.

For an input x, a feature j and a set C not containing j, with a conditional sampler that
redraws the features outside S given x_S, the value function is
``v(S) = E f(x~_S)``. The test of
H0: f(x~_{C+j}) has the same distribution as f(x~_C) uses the statistic
``T = mean of M draws of f(x~_{C+j})`` and K null statistics, each the mean of M draws of
``f(x~_C)``; the one-sided p-value is ``p = (1 + #{k : T - T~_k <= 0}) / (K + 1)``
(Teneggi, Bharti, Romano & Sulam, TMLR 2023). The marginal contribution
``gamma_{j,C} = v(C+j) - v(C)`` and the Shapley value
``phi_j = sum_C gamma_{j,C} / (n binom(n-1, |C|))`` come from the same estimates of v.
For binary f and M = 1, ``E[p] = 1 - K/(K+1) v(C+j)(1 - v(C)) <= 1 - K/(K+1) gamma``: a
marginal contribution near 1 forces a small expected p-value (gamma >= 1 - alpha gives
E[p] <= alpha + (1 - alpha)/(K+1)).

Features can be coordinates of a vector (with e.g. :class:`GaussianSampler`) or image
regions (:class:`RegionSampler` over :func:`grid_regions` / :func:`quadrant_regions`);
:func:`xrt_features` tests every feature of one input at once, and the registered method
``"shap-xrt"`` does it for image classifiers region by region.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from provex.explanation import Explanation
from provex.registry import register_method
from provex.stats.regions import grid_regions, paint
from provex.stats.samplers import RegionSampler, check_keep

__all__ = ["ValueFunction", "XRTResult", "shap_xrt", "xrt_features"]

Sampler = Callable[[torch.Tensor, Sequence[int], "torch.Generator | None"], torch.Tensor]
MAX_SHAPLEY_FEATURES = 12


class ValueFunction:
    """Monte Carlo ``v(S) = E f(x~_S)`` with ``draws`` samples per subset, memoised.

    The raw outputs are kept, so a test and the Shapley value use the very same draws.
    """

    def __init__(
        self,
        f: Callable[[torch.Tensor], torch.Tensor],
        sampler: Sampler,
        x: torch.Tensor,
        draws: int,
        n_features: int,
        generator: torch.Generator | None = None,
        batch_size: int = 4096,
    ) -> None:
        self.f, self.sampler, self.x = f, sampler, x
        self.draws, self.n_features, self.gen, self.batch_size = draws, n_features, generator, batch_size
        self.outputs: dict[tuple[int, ...], torch.Tensor] = {}

    def samples(self, subset: Sequence[int]) -> torch.Tensor:
        """f at ``draws`` conditional samples given the features in ``subset`` (draws,)."""
        key = tuple(check_keep(subset, self.n_features, "C"))
        if key not in self.outputs:
            fn = self.sampler.sample if hasattr(self.sampler, "sample") else self.sampler
            outs = []
            for start in range(0, self.draws, self.batch_size):
                m = min(self.batch_size, self.draws - start)
                xs = fn(self.x[None].expand(m, *self.x.shape).contiguous(), list(key), self.gen)
                with torch.no_grad():
                    y = self.f(xs)
                if not isinstance(y, torch.Tensor) or y.reshape(-1).shape != (m,):
                    got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
                    raise ValueError(f"f must return one number per sample, shape ({m},), got {got}")
                outs.append(y.reshape(-1).to(torch.float64))
            out = torch.cat(outs)
            if not bool(torch.isfinite(out).all()):
                raise ValueError("f returned NaN or inf values")
            self.outputs[key] = out
        return self.outputs[key]

    def __call__(self, subset: Sequence[int]) -> float:
        return float(self.samples(subset).mean())

    def shapley(self, j: int) -> float:
        """Exact Shapley value of feature j over all 2^(n-1) subsets of the others."""
        n = self.n_features
        if n > MAX_SHAPLEY_FEATURES:
            raise ValueError(
                f"exact Shapley values need 2^n subsets; n={n} > {MAX_SHAPLEY_FEATURES} (pass shapley=False)"
            )
        others = [i for i in range(n) if i != j]
        phi = 0.0
        for size in range(n):
            weight = 1.0 / (n * math.comb(n - 1, size))
            for c in itertools.combinations(others, size):
                phi += weight * (self([*c, j]) - self(c))
        return phi


@dataclass
class XRTResult:
    """One SHAP-XRT test: p-value, statistics and the value-function quantities."""

    p_value: float
    statistic: float
    null_statistics: torch.Tensor
    gamma: float
    shapley: float | None
    j: int
    C: list[int]
    K: int
    M: int
    values: dict[str, float] = field(default_factory=dict)


def _check_counts(K: int, M: int) -> None:
    for name, v in (("K", K), ("M", M)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _n_features(sampler: Sampler, x: torch.Tensor, n_features: int | None) -> int:
    if n_features is not None:
        return int(n_features)
    n = getattr(sampler, "num_features", None)
    if n is not None:
        return int(n)
    if x.ndim == 1:
        return x.shape[0]
    raise ValueError("cannot tell the number of features: give the sampler a num_features attribute or pass n_features")


def _test(vf: ValueFunction, j: int, c: list[int], K: int, M: int) -> tuple[float, float, torch.Tensor]:
    t_stat = vf.samples([*c, j])[:M].mean()
    null = vf.samples(c)[: K * M].reshape(K, M).mean(1)
    p = (1 + int((t_stat - null <= 0).sum())) / (K + 1)
    return p, float(t_stat), null


def shap_xrt(
    f: Callable[[torch.Tensor], torch.Tensor],
    sampler: Sampler,
    x: torch.Tensor,
    j: int,
    C: Sequence[int] = (),
    K: int = 100,
    M: int = 1,
    seed: int | None = None,
    *,
    shapley: bool = True,
    n_features: int | None = None,
) -> XRTResult:
    """SHAP-XRT p-value for feature ``j`` given ``C`` on input ``x``, and the Shapley value.

    Args:
        f: maps a batch of inputs (m, *x.shape) to one number each (m,), e.g. a class
            probability; for a binary classifier, 0/1 decisions.
        sampler: ``sampler(xs, keep, generator)`` redrawing the features not in ``keep``
            (see :mod:`provex.stats.samplers`).
        x: the input (one sample, no batch axis).
        j, C: the tested feature and the conditioning set (j not in C).
        K: null statistics; M: draws averaged per statistic.
        seed: seeds the sampler's generator.
        shapley: also compute the exact Shapley value of j from the same value function
            (2^n subsets with K*M draws each; n <= 12).
    """
    _check_counts(K, M)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf values")
    n = _n_features(sampler, x, n_features)
    if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < n:
        raise ValueError(f"j must be a feature index in 0..{n - 1}, got {j!r}")
    c = check_keep(C, n, "C")
    if j in c:
        raise ValueError(f"C must not contain the tested feature j={j}")
    gen = torch.Generator(device=x.device).manual_seed(seed) if seed is not None else None
    vf = ValueFunction(f, sampler, x, K * M, n, gen)
    p, t_stat, null = _test(vf, j, c, K, M)
    gamma = vf([*c, j]) - vf(c)
    phi = vf.shapley(j) if shapley else None
    return XRTResult(
        p_value=p,
        statistic=t_stat,
        null_statistics=null,
        gamma=gamma,
        shapley=phi,
        j=j,
        C=c,
        K=K,
        M=M,
        values={"v(C+j)": vf([*c, j]), "v(C)": vf(c)},
    )


def xrt_features(
    f: Callable[[torch.Tensor], torch.Tensor],
    sampler: Sampler,
    x: torch.Tensor,
    context: str = "empty",
    K: int = 100,
    M: int = 1,
    seed: int | None = None,
    *,
    shapley: bool = True,
    n_features: int | None = None,
) -> dict[str, torch.Tensor]:
    """Test every feature of ``x``: C = {} (``context="empty"``) or all others (``"rest"``).

    Returns tensors over features: ``p_value``, ``gamma`` and (with ``shapley``) ``shapley``,
    all from one shared value function.
    """
    _check_counts(K, M)
    if context not in ("empty", "rest"):
        raise ValueError(f"context must be 'empty' or 'rest', got {context!r}")
    n = _n_features(sampler, x, n_features)
    gen = torch.Generator(device=x.device).manual_seed(seed) if seed is not None else None
    vf = ValueFunction(f, sampler, x, K * M, n, gen)
    ps, gammas, phis = [], [], []
    for j in range(n):
        c = [] if context == "empty" else [i for i in range(n) if i != j]
        p, _, _ = _test(vf, j, c, K, M)
        ps.append(p)
        gammas.append(vf([*c, j]) - vf(c))
        if shapley:
            phis.append(vf.shapley(j))
    out = {"p_value": torch.tensor(ps, dtype=torch.float64), "gamma": torch.tensor(gammas, dtype=torch.float64)}
    if shapley:
        out["shapley"] = torch.tensor(phis, dtype=torch.float64)
    return out


@register_method(
    "shap-xrt",
    family="statistical importance",
    description="SHAP-XRT p-value per image region (grid) and the regions' exact Shapley values",
)
def _shap_xrt_method(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    grid: int = 2,
    K: int = 100,
    M: int = 1,
    context: str = "empty",
    alpha: float = 0.05,
    shapley: bool = True,
    seed: int = 0,
) -> Explanation:
    """Regions of a ``grid x grid`` split are the features; dropped regions are redrawn from the
    model card's per-pixel training mean and variance. Relevance paints each region's Shapley
    value (``gamma`` for the tested context when ``shapley=False``); ``info`` holds the p-values."""
    card = getattr(model, "card", None)
    if card is None or getattr(card, "data_mean", None) is None or getattr(card, "data_var", None) is None:
        raise ValueError(
            "shap-xrt fills dropped regions from the model card's data_mean/data_var; for other models use "
            "provex.stats.xrt_features with a RegionSampler"
        )
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    _, ch, h, w = x.shape
    regions = grid_regions(h, w, grid)
    sampler = RegionSampler(regions, fill=(card.data_mean.to(x), card.data_var.to(x)))
    pvals, gammas, phis = [], [], []
    for i in range(x.shape[0]):
        cls = int(target[i])

        def f(xs: torch.Tensor, cls: int = cls) -> torch.Tensor:
            return torch.softmax(model(xs), dim=1)[:, cls]

        res = xrt_features(f, sampler, x[i], context, K, M, seed + i, shapley=shapley)
        pvals.append(res["p_value"])
        gammas.append(res["gamma"])
        phis.append(res.get("shapley", res["gamma"]))
    p = torch.stack(pvals)
    score = torch.stack(phis)
    relevance = paint(score, regions).unsqueeze(1).expand(-1, ch, -1, -1).to(x.dtype).contiguous()
    return Explanation(
        relevance=relevance,
        method="shap-xrt",
        target=target,
        info={
            "p_values": p,
            "gamma": torch.stack(gammas),
            "shapley": score if shapley else None,
            "rejected": p <= alpha,
            "regions": regions,
            "context": context,
        },
    )
