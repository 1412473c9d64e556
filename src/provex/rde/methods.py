"""The four rate-distortion methods, registered with :func:`provex.explain`.

``"rc-rde"``, ``"mr-rde"``, ``"ord-rde"`` and ``"l-rde"`` share the distortion options
(``distortion``, ``n_samples``, ``noise``, ``grid``, ``batch_size``, ``seed``), the solver
options (``max_iter``, ``tol``, ``step``, ``progress``) and the ``info`` they return:
``objective`` per iteration, FW dual ``gap`` per iteration, ``iterations``,
``model_passes`` (batched objective calls), ``model_inputs``, ``model_seconds`` (time inside
model passes), ``solver_seconds`` (wall time of the solver) and the final ``distortion``.
All problems of all images (and all rates) advance together: one model pass per iteration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from provex.explanation import Explanation
from provex.fw import Birkhoff, KSparseNonNegative, frank_wolfe, resolve_step
from provex.fw import SolverResult as FWResult
from provex.fw.projected import projected_gradient
from provex.rde.components import Components
from provex.rde.distortion import KINDS, Distortion, make_distortion
from provex.rde.noise import GaussianNoise
from provex.rde.ordering import OrderingObjective
from provex.registry import register_method

__all__ = ["DEFAULT_MNIST_RATES", "l_rde", "mr_rde", "ord_rde", "rc_rde"]

FAMILY = "rate-distortion"
DEFAULT_MNIST_RATES = (50, 100, 150, 200, 250, 300, 350, 400)  # of 784 MNIST pixels (the papers)
REFERENCE_N = 784
ORD_MAX_COMPONENTS = 256  # Ord-RDE's automatic grid keeps n <= this


# ----- option handling shared by the four methods -----


def _noise(noise: str | GaussianNoise, model: nn.Module, x: torch.Tensor) -> GaussianNoise:
    if isinstance(noise, GaussianNoise):
        return noise
    if noise not in ("per-pixel", "global"):
        raise ValueError(f"noise must be 'per-pixel', 'global' or a GaussianNoise, got {noise!r}")
    per_pixel = noise == "per-pixel"
    card = getattr(model, "card", None)
    if getattr(card, "data_mean", None) is not None and getattr(card, "data_var", None) is not None:
        return GaussianNoise.from_model(model, per_pixel)
    if per_pixel and x.shape[0] < 2:
        raise ValueError(
            "noise: the model has no card with data statistics and one image cannot give per-pixel "
            "statistics; pass noise='global' or noise=GaussianNoise.from_data(x_train)"
        )
    return GaussianNoise.from_data(x, per_pixel)


def _batch_size(batch_size: int | None, device: torch.device) -> int:
    if batch_size is None:
        return 64 if device.type == "cpu" else 1024  # CPU caches favour small chunks
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _rate(value: Any, n: int, name: str = "rate") -> int:
    """A rate is a whole number of components in 1..n."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(f"{name} must be a whole number of components, got {value!r}")
    if not 1 <= int(value) <= n:
        raise ValueError(f"{name} must be in 1..{n} (the number of components), got {value!r}")
    return int(value)


def _scaled_rates(n: int) -> list[int]:
    """The papers' MNIST rates 50..400 (of 784), scaled to ``n`` components."""
    return sorted({max(1, round(r * n / REFERENCE_N)) for r in DEFAULT_MNIST_RATES})


def _setup(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    distortion: str,
    n_samples: int,
    batch_size: int | None,
    seed: int | None,
    noise: str | GaussianNoise,
    grid: int | None,
    fixed_noise: bool = False,
) -> tuple[Distortion, Components]:
    if distortion not in KINDS:
        raise ValueError(f"distortion must be one of {KINDS}, got {distortion!r}")
    _positive_int(n_samples, "n_samples")
    comps = Components(tuple(x.shape[1:]), grid)
    dist = make_distortion(
        distortion,
        model,
        x,
        target,
        _noise(noise, model, x),
        comps,
        n_samples=n_samples,
        batch_size=_batch_size(batch_size, x.device),
        seed=seed,
        fixed_noise=fixed_noise,
    )
    return dist, comps


def _step(step: str | None, stochastic: bool) -> str:
    if step is None:
        return "2/(t+2)" if stochastic else "monotone"
    return resolve_step(step)


def _info(res: FWResult, dist: Distortion, shape: tuple[int, ...], **extra: Any) -> dict[str, Any]:
    """Diagnostics common to the four methods; ``shape`` reshapes per-problem vectors."""
    t = res.objective.shape[0]
    counters = dist.counters()
    info = {
        "objective": res.objective.reshape(t, *shape).cpu(),
        "gap": res.gap.reshape(res.gap.shape[0], *shape).cpu(),
        "iterations": res.iterations.reshape(shape).cpu(),
        "time": res.times,
        "model_passes": res.evaluations,
        "model_inputs": counters["model_inputs"],
        "model_seconds": counters["model_seconds"],
        "solver_seconds": res.seconds,
        "overhead_fraction": max(0.0, 1.0 - counters["model_seconds"] / max(res.seconds, 1e-12)),
        "distortion_kind": dist.kind,
        "stochastic": dist.stochastic,
        "components": dist.components.n,
        "grid": dist.components.grid,
        "noise": "per-pixel" if dist.noise.per_pixel else "global",
    }
    info.update(extra)
    return info


def _final_distortion(dist: Distortion, s: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Distortion of the final masks (not counted in the solver's passes)."""
    counters = (dist.evaluations, dist.inputs, dist.model_seconds)
    with torch.no_grad():
        values, _ = dist(s, image, need_grad=False)
    dist.evaluations, dist.inputs, dist.model_seconds = counters
    return values


def _solve_rates(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    rates: list[int] | None,
    *,
    distortion: str,
    n_samples: int,
    max_iter: int,
    tol: float,
    step: str | None,
    seed: int | None,
    batch_size: int | None,
    progress: bool,
    noise: str | GaussianNoise,
    grid: int | None,
    fixed_noise: bool,
    rate_name: str,
    desc: str,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, dict[str, Any], Components, list[int]]:
    """RC-RDE for every (rate, image) pair as one batched FW run; masks (R, N, n)."""
    dist, comps = _setup(
        model,
        x,
        target,
        distortion=distortion,
        n_samples=n_samples,
        batch_size=batch_size,
        seed=seed,
        noise=noise,
        grid=grid,
        fixed_noise=fixed_noise,
    )
    n, num = comps.n, x.shape[0]
    if rates is None:
        rates = _scaled_rates(n)
    rates = [_rate(r, n, rate_name) for r in rates]
    k = torch.tensor(rates, device=x.device).repeat_interleave(num)  # problem p = r * N + i
    image = torch.arange(num, device=x.device).repeat(len(rates))
    rule = _step(step, dist.stochastic)

    def objective(s: torch.Tensor, idx: torch.Tensor, need_grad: bool = True):
        return dist(s, image[idx], need_grad)

    res = frank_wolfe(
        objective,
        KSparseNonNegative(k, n),
        torch.zeros(len(rates) * num, n, dtype=x.dtype, device=x.device),
        max_iter=_nonneg_int(max_iter, "max_iter"),
        step=rule,
        rtol=_tol(tol),
        stochastic=dist.stochastic,
        progress=progress,
        desc=desc,
        callback=callback,
    )
    final = _final_distortion(dist, res.x, image)
    info = _info(res, dist, (len(rates), num), step=rule, rates=rates)
    info["distortion"] = final.view(len(rates), num).cpu()
    return res.x.view(len(rates), num, n), info, comps, rates


def _nonneg_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _tol(tol: Any) -> float:
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
        raise ValueError(f"tol must be a non-negative number, got {tol!r}")
    return float(tol)


# ----- the four methods -----


COMMON_DOC = """
    Common options: ``distortion`` "adf" (diagonal assumed density filtering, deterministic,
    one pass per iteration; the reference choice), "adf-lowrank" (ADF keeping the noise
    correlations: tracks Monte Carlo within ~1%, costs ~one pass per pixel; small images
    only) or "mc" (Monte Carlo with ``n_samples`` fresh
    draws per iteration: stochastic FW with momentum; ``fixed_noise=True`` keeps the same
    draws, a deterministic objective); ``noise`` "per-pixel" or "global" statistics (from the
    model card, else from ``x``) or a :class:`~provex.rde.GaussianNoise`; ``grid`` None (every
    entry of the image is a component) or b (b x b blocks, channels tied); ``tol`` stops a
    problem when its FW gap is below ``tol`` times its initial objective; ``step``
    "monotone", "2/(t+2)" or "1/sqrt(t+1)" (default: monotone for deterministic objectives,
    2/(t+2) for stochastic ones); ``batch_size`` model inputs per pass (default 64 on CPU,
    1024 on GPUs); ``seed`` for the noise draws and rate sampling; ``progress`` shows a bar;
    ``callback(t, x)`` is called after every iteration with the solver's variable (masks
    (R*N, n) for RC/MR-RDE, rate-major; (N, n, n) matrices for Ord-RDE; do not modify it).
"""


@register_method(
    "rc-rde",
    family=FAMILY,
    description="rate-constrained RDE: min distortion s.t. sum(s) <= rate, by Frank-Wolfe (Macdonald et al. 2022)",
)
def rc_rde(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    rate: int | None = None,
    distortion: str = "adf",
    n_samples: int = 64,
    max_iter: int = 300,
    tol: float = 0.0,
    step: str | None = None,
    seed: int | None = 0,
    batch_size: int | None = None,
    progress: bool = True,
    noise: str | GaussianNoise = "per-pixel",
    grid: int | None = None,
    fixed_noise: bool = False,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> Explanation:
    """Sparse mask ``s in [0,1]^n`` with ``sum(s) <= rate`` that keeps the target logit.

    ``rate`` defaults to 100/784 of the components (100 MNIST pixels).
    """
    n = Components(tuple(x.shape[1:]), grid).n
    k = max(1, round(100 * n / REFERENCE_N)) if rate is None else rate
    masks, info, comps, rates = _solve_rates(
        model,
        x,
        target,
        [k],
        distortion=distortion,
        n_samples=n_samples,
        max_iter=max_iter,
        tol=tol,
        step=step,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        noise=noise,
        grid=grid,
        fixed_noise=fixed_noise,
        rate_name="rate",
        desc="RC-RDE",
        callback=callback,
    )
    for key in ("objective", "gap", "distortion"):
        info[key] = info[key].squeeze(-2)
    info["iterations"] = info["iterations"].squeeze(0)
    info["rate"] = rates[0]
    del info["rates"]
    return Explanation(comps.expand(masks[0]).detach(), "rc-rde", target.detach().clone(), info)


@register_method(
    "mr-rde",
    family=FAMILY,
    description="multi-rate RDE: mean of RC-RDE masks over several rates (Macdonald et al. 2022)",
)
def mr_rde(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    rates: list[int] | tuple[int, ...] | None = None,
    distortion: str = "adf",
    n_samples: int = 64,
    max_iter: int = 200,
    tol: float = 0.0,
    step: str | None = None,
    seed: int | None = 0,
    batch_size: int | None = None,
    progress: bool = True,
    noise: str | GaussianNoise = "per-pixel",
    grid: int | None = None,
    fixed_noise: bool = False,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> Explanation:
    """Unweighted mean of the RC-RDE masks at ``rates`` (all rates x images solved together).

    ``rates`` defaults to the papers' MNIST rates 50, 100, ..., 400 (of 784), scaled to the
    number of components. ``max_iter`` defaults to 200 (RC-RDE: 300) because MR-RDE solves
    one problem per rate: every image was within 1% of its 2000-iteration objective by
    then in the convergence benchmark. ``info["maps"]`` (R, N, C, H, W) keeps every per-rate mask and
    ``Explanation.maps`` names them ``k=<rate>`` for plotting.
    """
    if rates is not None:
        if isinstance(rates, (int, float)):
            rates = [rates]
        if not isinstance(rates, (list, tuple)) or len(rates) == 0:
            raise ValueError(f"rates must be a non-empty list of whole numbers, got {rates!r}")
        if len(set(rates)) != len(rates):
            raise ValueError(f"rates must be distinct, got {list(rates)}")
    masks, info, comps, rates = _solve_rates(
        model,
        x,
        target,
        None if rates is None else list(rates),
        distortion=distortion,
        n_samples=n_samples,
        max_iter=max_iter,
        tol=tol,
        step=step,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        noise=noise,
        grid=grid,
        fixed_noise=fixed_noise,
        rate_name="rates",
        desc="MR-RDE",
        callback=callback,
    )
    r, num, n = masks.shape
    maps = comps.expand(masks.reshape(r * num, n)).view(r, num, *x.shape[1:]).detach()
    info["maps"] = maps.cpu()
    rel = maps.mean(0)
    named = {f"k={k}": maps[i] for i, k in enumerate(rates)}
    return Explanation(rel, "mr-rde", target.detach().clone(), info, maps=named)


def _auto_grid(shape: tuple[int, ...]) -> int:
    """Smallest block size b dividing H and W with (H/b)(W/b) <= ORD_MAX_COMPONENTS (b >= 2 if C*H*W is larger)."""
    _, h, w = shape
    for b in range(1, min(h, w) + 1):
        if h % b == 0 and w % b == 0 and (h // b) * (w // b) <= ORD_MAX_COMPONENTS:
            return b
    raise ValueError(f"grid: no block size divides {h}x{w} into at most {ORD_MAX_COMPONENTS} components")


@register_method(
    "ord-rde",
    family=FAMILY,
    description="ordering RDE: relevance ordering over the Birkhoff polytope by (stochastic) Frank-Wolfe",
)
def ord_rde(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    distortion: str = "adf",
    n_samples: int = 64,
    max_iter: int = 100,
    tol: float = 0.0,
    step: str | None = "1/sqrt(t+1)",
    seed: int | None = 0,
    batch_size: int | None = None,
    progress: bool = True,
    noise: str | GaussianNoise = "per-pixel",
    grid: int | str | None = "auto",
    stochastic: bool = True,
    rates_per_iter: int | None = None,
    fixed_noise: bool = False,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> Explanation:
    """Doubly stochastic S minimising the mean distortion of its masks ``S p_k`` over all rates.

    ``relevance = S @ linspace(0, 1, n)`` per component; ``ordering`` is each component's
    rank (0 = least relevant). ``stochastic=True`` samples ``rates_per_iter`` rates per
    iteration (default ``(n-1)//20 + 1``, 10 on MNIST blocks; the reference used about n/10
    rates and 200 iterations, which cost 4x more for the same ordering quality in our
    measurements, see the notes); ``stochastic=False`` uses all n-1 rates.
    ``grid="auto"`` picks the smallest block size with at most 256 components (2 x 2 on
    MNIST: n = 196), since each iteration costs one linear assignment of size n per image.
    ``info["masks"]`` holds ``S p_k`` at ``info["mask_rates"]`` (the MR-RDE rates).
    """
    if grid == "auto":
        grid = _auto_grid(tuple(x.shape[1:]))
    dist, comps = _setup(
        model,
        x,
        target,
        distortion=distortion,
        n_samples=n_samples,
        batch_size=batch_size,
        seed=seed,
        noise=noise,
        grid=grid,
        fixed_noise=fixed_noise,
    )
    n, num = comps.n, x.shape[0]
    if n > 2048:
        raise ValueError(f"grid: Ord-RDE with n = {n} components needs an n x n matrix per image; use a coarser grid")
    if stochastic:
        m = (n - 1) // 20 + 1 if rates_per_iter is None else rates_per_iter
    else:
        if rates_per_iter not in (None, n - 1):
            raise ValueError("rates_per_iter must be None when stochastic=False (all n - 1 rates are used)")
        m = n - 1
    image = torch.arange(num, device=x.device)
    obj = OrderingObjective(dist, image, m, seed)
    rule = _step(step, obj.stochastic)
    s0 = torch.eye(n, dtype=x.dtype, device=x.device).expand(num, n, n).clone()
    res = frank_wolfe(
        obj,
        Birkhoff(),
        s0,
        max_iter=_nonneg_int(max_iter, "max_iter"),
        step=rule,
        rtol=_tol(tol),
        stochastic=obj.stochastic,
        progress=progress,
        desc="Ord-RDE",
        callback=callback,
    )
    S = res.x
    lin = torch.linspace(0, 1, n, dtype=x.dtype, device=x.device)
    score = S @ lin  # (N, n)
    rank = score.argsort(1).argsort(1)
    mask_rates = _scaled_rates(n)
    pk = torch.zeros(n, len(mask_rates), dtype=x.dtype, device=x.device)
    for j, k in enumerate(mask_rates):
        pk[n - k :, j] = 1
    masks = (S @ pk).transpose(1, 2)  # (N, R, n)
    info = _info(res, dist, (num,), step=rule, rates_per_iter=m)
    info["stochastic"] = obj.stochastic
    info["masks"] = comps.expand(masks.transpose(0, 1).reshape(-1, n)).view(len(mask_rates), num, *x.shape[1:]).cpu()
    info["mask_rates"] = mask_rates
    return Explanation(
        comps.expand(score).detach(),
        "ord-rde",
        target.detach().clone(),
        info,
        ordering=comps.expand(rank),
    )


@register_method(
    "l-rde",
    family=FAMILY,
    description="Lagrangian RDE: min distortion + mu*logit^2*mean(s) by projected gradient (Macdonald et al. 2019)",
)
def l_rde(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    mu: float = 0.5,
    distortion: str = "adf",
    n_samples: int = 64,
    max_iter: int = 500,
    tol: float = 1e-5,
    seed: int | None = 0,
    batch_size: int | None = None,
    progress: bool = True,
    noise: str | GaussianNoise = "per-pixel",
    grid: int | None = None,
    momentum: float = 0.85,
    init: float = 0.25,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> Explanation:
    """Mask ``s in [0,1]^n`` minimising ``D(s) + mu * Phi(x)^2 * mean(s)`` (s0 = ``init``).

    ``tol`` stops an image when its objective fell by less than ``tol * |f|`` over 10
    iterations. With ``distortion="mc"`` the noise draws are fixed (the line search needs a
    deterministic objective).
    """
    if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not mu >= 0:
        raise ValueError(f"mu must be a non-negative number, got {mu!r}")
    if isinstance(init, bool) or not isinstance(init, (int, float)) or not 0 <= init <= 1:
        raise ValueError(f"init must be in [0, 1], got {init!r}")
    dist, comps = _setup(
        model,
        x,
        target,
        distortion=distortion,
        n_samples=n_samples,
        batch_size=batch_size,
        seed=seed,
        noise=noise,
        grid=grid,
        fixed_noise=True,
    )
    n, num = comps.n, x.shape[0]
    image = torch.arange(num, device=x.device)
    weight = float(mu) * dist.phi.square() / n  # d/ds of mu * Phi(x)^2 * mean(s)

    def objective(s: torch.Tensor, idx: torch.Tensor, need_grad: bool = True):
        d, g = dist(s, image[idx], need_grad)
        w = weight[idx]
        f = d + w * s.sum(1)
        return f, (None if g is None else g + w[:, None])

    res = projected_gradient(
        objective,
        torch.full((num, n), float(init), dtype=x.dtype, device=x.device),
        max_iter=_nonneg_int(max_iter, "max_iter"),
        tol=_tol(tol),
        momentum=momentum,
        progress=progress,
        desc="L-RDE",
        callback=callback,
    )
    info = _info(res, dist, (num,), mu=float(mu), line_search_trials=res.info["line_search_trials"])
    info["distortion"] = _final_distortion(dist, res.x, image).cpu()
    info["rate"] = res.x.sum(1).cpu()
    return Explanation(comps.expand(res.x).detach(), "l-rde", target.detach().clone(), info)


for _fn in (rc_rde, mr_rde, ord_rde, l_rde):
    _fn.__doc__ = (_fn.__doc__ or "") + COMMON_DOC
