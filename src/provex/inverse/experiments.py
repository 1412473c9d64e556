"""The measured protocols behind ``provex lpn prior|reconstruct`` and ``provex benchmark lpn``.

* :func:`prior_curves`: R(x) of images under growing perturbations (Gaussian noise clipped to
  [0, 1], or Gaussian blur), with the per-image Spearman correlation between perturbation level
  and R (the LPN paper's MNIST check: a learned prior should grow as images leave the data).
* :func:`compare_reconstruction`: an inverse problem solved by PnP (ADMM or PGD) with the LPN
  and by the TV baseline, each with its one parameter (rho / lam) tuned on separate validation
  images by PSNR; reports per-image PSNR and SSIM (outputs clipped to [0, 1] for both) and the
  PnP residuals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from provex.checks import unknown
from provex.inverse.metrics import psnr, ssim
from provex.inverse.operators import GaussianBlur, LinearOperator
from provex.inverse.pnp import pnp_admm, pnp_pgd
from provex.inverse.prior import evaluate_prior
from provex.inverse.tv import tv_reconstruct

__all__ = ["PERTURBATIONS", "compare_reconstruction", "perturb", "prior_curves"]

PERTURBATIONS: dict[str, list[float]] = {
    "noise": [0.0, 0.05, 0.1, 0.2, 0.3],  # Gaussian noise std (reference MNIST levels)
    "blur": [0.0, 0.5, 1.0, 2.0, 4.0],  # Gaussian blur std in pixels (reference MNIST levels)
}


def perturb(x: torch.Tensor, kind: str, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` with Gaussian noise of std ``level`` (clipped to [0, 1]) or blurred with std ``level`` px."""
    if level < 0:
        raise ValueError(f"level must be >= 0, got {level}")
    if kind == "noise":
        if level == 0:
            return x.clone()
        return (x + level * torch.randn(x.shape, generator=generator, dtype=x.dtype)).clamp(0, 1)
    if kind == "blur":
        if level == 0:
            return x.clone()
        radius = min(math.ceil(3 * level), (min(x.shape[-2:]) - 1) // 2)
        return GaussianBlur(tuple(x.shape[1:]), sigma=level, radius=radius)(x)
    raise unknown("perturbation", kind, PERTURBATIONS)


def prior_curves(
    lpn: torch.nn.Module,
    x: torch.Tensor,
    kind: str = "noise",
    levels: Sequence[float] | None = None,
    seed: int = 0,
    tol: float = 1e-4,
    max_iter: int = 500,
    progress: bool = True,
) -> dict[str, Any]:
    """R at every perturbation level for every image, and per-image Spearman(level, R)."""
    levels = list(PERTURBATIONS[kind] if levels is None else levels)
    if len(levels) < 2:
        raise ValueError("levels needs at least two perturbation levels")
    gen = torch.Generator().manual_seed(seed)
    values, converged, residual = [], [], []
    for level in tqdm(levels, desc=f"prior under {kind}", disable=not progress):
        xp = perturb(x, kind, level, gen)
        res = evaluate_prior(lpn, xp, tol=tol, max_iter=max_iter)
        values.append(res.values.cpu())
        converged.append(res.converged.cpu())
        residual.append(res.residual.cpu())
    v = torch.stack(values)  # (L, N)
    rho = np.array([spearmanr(levels, v[:, i].numpy()).statistic for i in range(v.shape[1])], dtype=float)
    return {
        "kind": kind,
        "levels": levels,
        "values": v,
        "converged": torch.stack(converged),
        "residual": torch.stack(residual),
        "spearman": torch.from_numpy(np.nan_to_num(rho, nan=0.0)),
    }


def _metrics(rec: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    r = rec.clamp(0, 1)
    return {"psnr": psnr(r, x), "ssim": ssim(r, x)}


def compare_reconstruction(
    lpn: torch.nn.Module,
    x: torch.Tensor,
    x_val: torch.Tensor,
    op: LinearOperator,
    noise_std: float,
    method: str = "admm",
    rho_grid: Sequence[float] = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0),
    lam_grid: Sequence[float] = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1),
    iters: int = 100,
    tv_iters: int = 3000,
    eta: float | None = None,
    seed: int = 0,
    tol: float = 1e-4,
    progress: bool = True,
) -> dict[str, Any]:
    """LPN-PnP against TV on ``x`` (rho / lam tuned on ``x_val``); per-image metrics and residuals."""
    if method not in ("admm", "pgd"):
        raise ValueError(f"method must be 'admm' or 'pgd', got {method!r}")
    gen = torch.Generator().manual_seed(seed)
    y_val = op.measure(x_val, noise_std, gen)
    y = op.measure(x, noise_std, gen)

    def run_pnp(yy: torch.Tensor, param: float) -> Any:
        if method == "admm":
            return pnp_admm(yy, op, lpn, rho=param, iters=iters, tol=tol)
        return pnp_pgd(yy, op, lpn, eta=param, iters=iters, tol=tol)

    tuning: dict[str, dict[str, float]] = {"pnp": {}, "tv": {}}
    if method == "admm":
        for r in tqdm(rho_grid, desc="tune rho", disable=not progress):
            tuning["pnp"][f"{r:g}"] = float(_metrics(run_pnp(y_val, r).x, x_val)["psnr"].mean())
        best = max(rho_grid, key=lambda r: tuning["pnp"][f"{r:g}"])
    else:
        best = 0.99 / op.norm_sq() if eta is None else eta
    for lam in tqdm(lam_grid, desc="tune TV lam", disable=not progress):
        tuning["tv"][f"{lam:g}"] = float(_metrics(tv_reconstruct(y_val, op, lam, tv_iters), x_val)["psnr"].mean())
    best_lam = max(lam_grid, key=lambda v: tuning["tv"][f"{v:g}"])
    pnp = run_pnp(y, best)
    tv = tv_reconstruct(y, op, best_lam, tv_iters)
    # TV is convex: started at the solvers' fill instead of A^T y it must reach the same images
    start = op.initial_guess(y)  # where the PnP solvers started
    tv_check = tv_reconstruct(y, op, best_lam, tv_iters, x0=start)
    m_pnp, m_tv = _metrics(pnp.x, x), _metrics(tv, x)
    return {
        "method": method,
        "operator": repr(op),
        "noise_std": noise_std,
        "param": best,
        "tv_lam": best_lam,
        "tuning": tuning,
        "pnp": m_pnp,
        "tv": m_tv,
        "tv_from_initial_guess": _metrics(tv_check, x),
        "tv_start_gap_max": float((tv - tv_check).abs().max()),
        "measurement": _metrics(op.adjoint(y), x),
        "initial_guess": _metrics(start, x),
        "x_start": start,
        "residuals": pnp.gap,
        "primal_residuals": pnp.info.get("primal_residuals"),
        "converged": pnp.converged,
        "iterations": int(pnp.iterations.max()),
        "x_pnp": pnp.x,
        "x_tv": tv,
        "y": y,
    }
