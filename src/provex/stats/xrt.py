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
``"shap-xrt"`` does it for image classifiers region by region: ``grid`` is the region side in
pixels (default: the four quadrants), dropped regions are redrawn from the reference
distribution (``reference=``: given > model card > each image's own per-channel statistics),
``n_samples`` draws are averaged per statistic (the paper's M; ``M`` is its deprecated option
name) and every image has its own random stream (``seed``, see :mod:`provex.seeding`).
Shapley values come from :func:`provex.shapley.shapley_from_table` over the same value
function.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from provex.checks import check_bool, check_choice, check_float, check_int, check_optional
from provex.explanation import Explanation
from provex.reference import Reference, resolve_reference
from provex.registry import register_method
from provex.seeding import generator, image_seeds
from provex.shapley.exact import coalitions, shapley_from_table
from provex.stats.regions import grid_regions, paint
from provex.stats.samplers import RegionSampler, check_keep

__all__ = ["ValueFunction", "XRTResult", "shap_xrt", "xrt_features", "xrt_regions"]

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
        batch_size: int = 512,
    ) -> None:
        self.f, self.sampler, self.x = f, sampler, x
        self.draws, self.n_features, self.gen, self.batch_size = draws, n_features, generator, batch_size
        self.outputs: dict[tuple[int, ...], torch.Tensor] = {}
        self._shapley: torch.Tensor | None = None

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

    def shapley_values(self) -> torch.Tensor:
        """Exact Shapley values (n,) float64 of every feature: the value function on all 2^n
        subsets, handed to :func:`provex.shapley.shapley_from_table`."""
        n = self.n_features
        if n > MAX_SHAPLEY_FEATURES:
            raise ValueError(
                f"exact Shapley values need 2^n subsets; n={n} > {MAX_SHAPLEY_FEATURES} (pass shapley=False)"
            )
        if self._shapley is None:
            table = torch.tensor([self(row.nonzero()[:, 0].tolist()) for row in coalitions(n)], dtype=torch.float64)
            self._shapley = shapley_from_table(table, n)
        return self._shapley

    def shapley(self, j: int) -> float:
        """Exact Shapley value of feature ``j`` (see :meth:`shapley_values`)."""
        return float(self.shapley_values()[j])


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


def _check_counts(K: int, M: int, m_name: str = "M") -> None:
    check_int(K, "K")
    check_int(M, m_name)


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
    if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < n:  # the message names the range
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
    check_choice(context, "context", ("empty", "rest"))
    n = _n_features(sampler, x, n_features)
    gen = torch.Generator(device=x.device).manual_seed(seed) if seed is not None else None
    vf = ValueFunction(f, sampler, x, K * M, n, gen)
    return _features(vf, context, K, M, shapley)


def _features(vf: ValueFunction, context: str, K: int, M: int, shapley: bool) -> dict[str, torch.Tensor]:
    """p-values, gammas (and Shapley values) of every feature from one value function."""
    n = vf.n_features
    ps, gammas = [], []
    for j in range(n):
        c = [] if context == "empty" else [i for i in range(n) if i != j]
        p, _, _ = _test(vf, j, c, K, M)
        ps.append(p)
        gammas.append(vf([*c, j]) - vf(c))
    out = {"p_value": torch.tensor(ps, dtype=torch.float64), "gamma": torch.tensor(gammas, dtype=torch.float64)}
    if shapley:
        out["shapley"] = vf.shapley_values()
    return out


def xrt_regions(height: int, width: int, grid: int | None) -> torch.Tensor:
    """``grid`` x ``grid`` pixel blocks (the last row / column narrower when ``grid`` does not
    divide the side), or the four near-equal quadrants when ``grid`` is None."""
    if grid is None:
        return grid_regions(height, width, min(2, height), min(2, width))
    grid = check_int(grid, "grid")
    if grid > max(height, width):
        raise ValueError(f"grid={grid} is larger than the image ({height} x {width})")
    rows, cols = math.ceil(height / grid), math.ceil(width / grid)
    r = torch.arange(height) // grid
    c = torch.arange(width) // grid
    ids = r[:, None] * cols + c[None, :]
    return ids[None] == torch.arange(rows * cols)[:, None, None]


@register_method(
    "shap-xrt",
    family="statistical importance",
    description="SHAP-XRT p-value per image region and the regions' exact Shapley values (Teneggi et al. 2023)",
    cheap_options={"K": 4, "n_samples": 1},
    deprecated={"M": "n_samples"},
)
def _shap_xrt_method(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    reference: Reference | str | os.PathLike | None = None,
    grid: int | None = None,
    K: int = 100,
    n_samples: int = 1,
    context: str = "empty",
    alpha: float = 0.05,
    shapley: bool = True,
    seed: int | Sequence[int] | None = 0,
    batch_size: int = 512,
    progress: bool = True,
) -> Explanation:
    """Regions of ``grid`` x ``grid`` pixels (default: the four quadrants) are the features;
    dropped regions are redrawn from the reference N(mean, diag(var)). Relevance paints each
    region's Shapley value (``gamma`` for the tested context when ``shapley=False``); ``info``
    holds the p-values. Cost per image: (2^R subsets, or R + 1 without Shapley values) x K x
    n_samples model inputs for R regions."""
    _check_counts(K, n_samples, "n_samples")
    check_choice(context, "context", ("empty", "rest"))
    check_float(alpha, "alpha", low=0, high=1, low_open=True, high_open=True)
    check_bool(shapley, "shapley")
    batch_size = check_int(batch_size, "batch_size")
    check_optional(check_int, grid, "grid")
    n, ch, h, w = x.shape
    regions = xrt_regions(h, w, grid)
    if shapley and regions.shape[0] > MAX_SHAPLEY_FEATURES:
        raise ValueError(
            f"grid={grid} gives {regions.shape[0]} regions of {h} x {w} pixels, but exact Shapley values need at most "
            f"{MAX_SHAPLEY_FEATURES}: pass a larger grid (the region side in pixels; before this release it was "
            "the number of regions per side) or shapley=False"
        )
    ref = resolve_reference(reference, model, x)
    seeds = image_seeds(seed, n)
    pvals, gammas, phis = [], [], []
    for i in tqdm(range(n), desc="shap-xrt", disable=not progress, leave=False):
        cls = int(target[i])
        mean, var = (ref.mean[i], ref.var[i]) if ref.per_image else (ref.mean, ref.var)
        sampler = RegionSampler(regions, fill=(mean, var), clamp=None)

        def f(xs: torch.Tensor, cls: int = cls) -> torch.Tensor:
            return torch.softmax(model(xs), dim=1)[:, cls]

        vf = ValueFunction(f, sampler, x[i], K * n_samples, sampler.num_features, generator(seeds[i], x.device))
        vf.batch_size = batch_size
        res = _features(vf, context, K, n_samples, shapley)
        pvals.append(res["p_value"])
        gammas.append(res["gamma"])
        phis.append(res.get("shapley", res["gamma"]))
    p = torch.stack(pvals)
    score = torch.stack(phis)
    relevance = paint(score, regions.to(score.device)).unsqueeze(1).expand(-1, ch, -1, -1).to(x.dtype).contiguous()
    return Explanation(
        relevance=relevance,
        method="shap-xrt",
        target=target,
        info={
            "per_image": {"p_values": p, "rejected": p <= alpha},
            "p_values": p,
            "gamma": torch.stack(gammas),
            "shapley": score if shapley else None,
            "rejected": p <= alpha,
            "regions": regions,
            "context": context,
            "reference": ref.describe(),
            "seeds": seeds,
        },
    )
