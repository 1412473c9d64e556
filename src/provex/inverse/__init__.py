"""Learned proximal networks (LPN): learn a prior, evaluate it, use it to solve inverse problems.

Fang, Buchanan and Sulam, "What's in a prior? Learned proximal networks for inverse problems"
(ICLR 2024). A denoiser f is the proximal operator of *some* regulariser R exactly when it is
the gradient of a convex function (Gribonval and Nikolova 2020). An LPN is built that way,

    f_theta(x) = grad psi_theta(x),   psi_theta an input-convex network + alpha/2 ||x||^2,

so it is prox_R for a data-driven R, which can be *evaluated*: R(x) = <y*, x> - ||x||^2/2 -
psi(y*) with y* = argmin_y psi(y) - <y, x>. Trained with the proximal matching loss, f tends to
the MAP denoiser and R to the negative log-prior of the data (up to scale and a constant).

Pieces (one idea per module):

* :mod:`~provex.inverse.icnn` — :class:`VectorICNN`, :class:`ConvICNN` (non-negative hidden path,
  softplus(beta), input skips), projection and convexity checks;
* :mod:`~provex.inverse.lpn` — :class:`LPN` (f = grad psi by autograd), :func:`build_lpn`;
* :mod:`~provex.inverse.losses` — l2, l1, proximal matching, :class:`Stage` schedules;
* :mod:`~provex.inverse.train` — :func:`train_lpn` (progress bar, atomic resumable checkpoints, seed,
  weight averaging, grid interpolation for 1-D LPNs), samplers incl. :func:`laplace_qmc_sampler`;
* :mod:`~provex.inverse.prior` — :func:`evaluate_prior` (batched L-BFGS inversion, per-input convergence);
* :mod:`~provex.inverse.operators` — denoising, Gaussian blur (FFT), random inpainting, Gaussian
  compressed sensing, each with its adjoint, sigma_max(A)^2, (A^T A + rho I)^{-1} and a starting image;
* :mod:`~provex.inverse.pnp` — :func:`pnp_pgd` (step size checked against 1/sigma_max(A)^2) and :func:`pnp_admm`;
* :mod:`~provex.inverse.tv` — total-variation baseline (Chambolle-Pock);
* :mod:`~provex.inverse.metrics` — PSNR, SSIM;
* :mod:`~provex.inverse.deepinv_adapter` — the LPN as a deepinv denoiser / prior (optional extra).

Shipped models: ``provex.models.load("lpn-laplace")`` (1-D Laplace toy, (N, 1) -> (N, 1)) and
``provex.models.load("lpn-mnist")`` (MNIST, sigma = 0.1); recipes in :mod:`provex.inverse.recipes`.

Example::

    import provex
    from provex.inverse import evaluate_prior, make_operator, pnp_admm, psnr
    lpn = provex.models.load("lpn-mnist")
    x, _ = provex.data.samples("mnist")
    R = evaluate_prior(lpn, x).values                       # the learned prior at clean digits
    op = make_operator("blur", (1, 28, 28), sigma=1.5)
    y = op.measure(x, noise_std=0.02)
    rec = pnp_admm(y, op, lpn, rho=0.1, iters=100)
    print(psnr(rec.x.clamp(0, 1), x).mean())
"""

from provex.inverse.icnn import ICNN, ConvICNN, VectorICNN
from provex.inverse.losses import Stage, l1_loss, l2_loss, proximal_matching_loss, proximal_matching_schedule
from provex.inverse.lpn import LPN, build_lpn
from provex.inverse.metrics import psnr, ssim
from provex.inverse.operators import (
    CompressedSensing,
    Denoising,
    GaussianBlur,
    LinearOperator,
    RandomInpainting,
    make_operator,
)
from provex.inverse.pnp import check_step_size, pnp_admm, pnp_pgd
from provex.inverse.prior import InversionError, PriorResult, evaluate_prior
from provex.inverse.train import TrainResult, laplace_qmc_sampler, laplace_sampler, tensor_sampler, train_lpn
from provex.inverse.tv import tv_reconstruct

__all__ = [
    "ICNN",
    "LPN",
    "CompressedSensing",
    "ConvICNN",
    "Denoising",
    "GaussianBlur",
    "InversionError",
    "LinearOperator",
    "PriorResult",
    "RandomInpainting",
    "Stage",
    "TrainResult",
    "VectorICNN",
    "build_lpn",
    "check_step_size",
    "evaluate_prior",
    "l1_loss",
    "l2_loss",
    "laplace_qmc_sampler",
    "laplace_sampler",
    "make_operator",
    "pnp_admm",
    "pnp_pgd",
    "proximal_matching_loss",
    "proximal_matching_schedule",
    "psnr",
    "ssim",
    "tensor_sampler",
    "train_lpn",
    "tv_reconstruct",
]


def __getattr__(name: str) -> object:
    if name == "PnPResult":  # deprecated alias of provex.fw.SolverResult, kept for one release
        from provex.inverse import pnp

        return pnp.__getattr__(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
