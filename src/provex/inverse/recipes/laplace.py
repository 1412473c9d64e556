"""Reproduce the shipped ``lpn-laplace``: the 1-D Laplace toy of the LPN paper.

Clean x ~ Laplace(0, b = 1), noisy y = x + N(0, sigma^2 = 1). The MAP denoiser is
soft-thresholding with lambda = sigma^2 / b = 1, the proximal operator of R(x) = |x|; the MMSE
denoiser (what l2 training finds) is a smooth shrinkage that is not. ``evaluate`` measures how
close the LPN is to soft-thresholding on [-3, 3] and how close its recovered R is to |x| once
the free additive constant is removed (the constant minimising the maximum error).

``provex train lpn-laplace [--loss prox|l2] [--steps ...]``; the defaults reproduce the shipped
weights (``--loss l2`` the comparison model ``lpn-laplace-l2``, saved by the benchmark).

How it is trained, and why: at small proximal-matching gammas only the samples whose clean x
lies within about gamma of f(y) carry gradient, and in the smooth parts of the posterior that
signal shrinks with gamma while its Monte-Carlo noise grows. With i.i.d. batches of 16 000 the
error stalled at 0.106 after 26 000 steps. So each batch here is 2^20 pairs (x, noise) drawn by
randomised quasi-Monte Carlo (:func:`provex.inverse.laplace_qmc_sampler`: exact marginals, far
less gradient noise), and f is evaluated on a grid of 4 001 inputs in [-16, 16] and interpolated
(``train_lpn(grid=...)``), so such batches cost about as much as 16 000 direct evaluations.
The weights are averaged (EMA) over the last stage.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from provex.inverse.losses import Stage
from provex.inverse.lpn import LPN, build_lpn
from provex.inverse.prior import evaluate_prior
from provex.inverse.train import laplace_qmc_sampler, laplace_sampler, train_lpn
from provex.models import WEIGHTS_DIR, ModelCard, save_weights

__all__ = ["evaluate", "laplace_errors", "main", "soft_threshold", "train_laplace_lpn"]

B, SIGMA = 1.0, 1.0
EMA_DECAY = 0.998  # the shipped weights are the EMA of the weights over the last stage
BATCH = 2**20  # (x, noise) pairs per step
GRID = (-16.0, 16.0, 4001)  # f is evaluated here and interpolated at the batch


def soft_threshold(x: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """prox of lam * |x|: sign(x) * max(|x| - lam, 0)."""
    return torch.sign(x) * torch.clamp(x.abs() - lam, min=0.0)


def laplace_errors(lpn: nn.Module, points: int = 601, lo: float = -3.0, hi: float = 3.0) -> dict[str, float]:
    """Max / mean |f(x) - soft(x)| and max / mean |R(x) - |x| - c| (best c) on a grid of [lo, hi]."""
    x = torch.linspace(lo, hi, points).unsqueeze(1)
    lpn = lpn.eval()
    with torch.no_grad():
        fx = lpn(x)
    err = (fx - soft_threshold(x)).abs().squeeze(1)
    pr = evaluate_prior(lpn, x, tol=1e-5, max_iter=2000, on_fail="ignore")
    d = (pr.values - x.abs().squeeze(1)).double()
    c = 0.5 * (d.max() + d.min())  # the constant that minimises the maximum error
    r_err = (d - c).abs()
    return {
        "prox_max_error": float(err.max()),
        "prox_mean_error": float(err.mean()),
        "argmax_x": float(x[err.argmax(), 0]),
        "prior_max_error": float(r_err.max()),
        "prior_mean_error": float(r_err.mean()),
        "prior_constant": float(c),
        "inversion_converged_fraction": float(pr.converged.float().mean()),
        "inversion_max_residual": float(pr.residual.max()),
    }


def default_stages(loss: str = "prox") -> list[Stage]:
    """The shipped schedules (see notes/issue-6.md for the experiments behind them).

    Proximal matching: l1 warm start, then gamma 0.3 -> 0.025 with falling learning rates. The
    PM-optimal denoiser itself is 0.110 / 0.064 / 0.048 / 0.036 from soft-thresholding at the
    kink for gamma 0.1 / 0.05 / 0.035 / 0.025, so gamma must end well below 0.1.
    """
    if loss == "l2":
        return [Stage(2000, "l2", 1e-3, batch_size=BATCH), Stage(1000, "l2", 1e-4, batch_size=BATCH)]
    return [
        Stage(1000, "l1", 1e-3, batch_size=BATCH),
        Stage(800, "proximal_matching", 5e-4, 0.3, BATCH),
        Stage(1000, "proximal_matching", 2e-4, 0.1, BATCH),
        Stage(1000, "proximal_matching", 1e-4, 0.05, BATCH),
        Stage(1200, "proximal_matching", 5e-5, 0.035, BATCH),
        Stage(1500, "proximal_matching", 2e-5, 0.025, BATCH),
    ]


def train_laplace_lpn(
    loss: str = "prox",
    stages: list[Stage] | None = None,
    hidden: int = 50,
    layers: int = 4,
    beta: float = 20.0,
    alpha: float = 0.0,
    batch_size: int = BATCH,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    report_stages: bool = False,
    ema_decay: float | str | None = "default",
    ema_start: int | None = None,
    sampler: str = "qmc",
    grid_points: int | None = GRID[2],
) -> tuple[LPN, ModelCard]:
    """Train the 1-D LPN; returns it (eval mode) with its card (errors measured on [-3, 3]).

    ``report_stages`` measures the errors after every stage (kept in the card, and printed; these
    are the raw weights, not the average). ``ema_decay`` (default: :data:`EMA_DECAY` for
    proximal matching, None for l2) averages the weights from step ``ema_start`` (default: the
    start of the last stage) on; the returned LPN has the averaged weights. ``sampler`` "qmc"
    (:func:`laplace_qmc_sampler`) or "iid" (:func:`laplace_sampler`); ``grid_points`` > 0
    interpolates f from that many inputs in [-16, 16] (None or 0: f at every sample).
    """
    if loss not in ("prox", "l2"):
        raise ValueError(f"loss must be 'prox' or 'l2', got {loss!r}")
    if sampler not in ("qmc", "iid"):
        raise ValueError(f"sampler must be 'qmc' or 'iid', got {sampler!r}")
    grid = (GRID[0], GRID[1], int(grid_points)) if grid_points else None
    torch.manual_seed(seed)
    config = {"arch": "vector", "dim": 1, "hidden": hidden, "layers": layers, "beta": beta, "alpha": alpha}
    lpn = build_lpn(**config)
    stages = default_stages(loss) if stages is None else stages
    if ema_decay == "default":
        ema_decay = EMA_DECAY if loss == "prox" else None
    if ema_start is None:
        ema_start = sum(s.steps for s in stages[:-1])
    start = time.perf_counter()
    per_stage: list[dict[str, float]] = []

    def report(k: int, model: nn.Module) -> None:
        e = {"stage": float(k), **laplace_errors(model)}
        per_stage.append(e)
        print(
            f"stage {k} ({stages[k].loss}, gamma {stages[k].gamma}, lr {stages[k].lr:g}): "
            f"max |f - soft| {e['prox_max_error']:.4f} at x = {e['argmax_x']:.2f}, mean {e['prox_mean_error']:.4f}; "
            f"max |R - |x| - c| {e['prior_max_error']:.4f}",
            flush=True,
        )

    res = train_lpn(
        lpn,
        laplace_qmc_sampler(B) if sampler == "qmc" else laplace_sampler(B),
        SIGMA,
        stages,
        batch_size=batch_size,
        seed=seed,
        checkpoint=checkpoint,
        progress=progress,
        log_every=100,
        on_stage_end=report if report_stages else None,
        ema_decay=ema_decay,  # type: ignore[arg-type]
        ema_start=ema_start,
        grid=grid,
    )
    lpn = lpn.cpu().eval()
    metrics = laplace_errors(lpn)
    name = "lpn-laplace" if loss == "prox" else "lpn-laplace-l2"
    card = ModelCard(
        name=name,
        description="1-D LPN on Laplace(b=1) + N(0,1) noise, trained with "
        + ("proximal matching" if loss == "prox" else "l2"),
        config=config,
        metrics=metrics,
        training={
            "seed": seed,
            "sigma": SIGMA,
            "b": B,
            "batch_size": batch_size,
            "stages": [s.to_dict() for s in stages],
            "sampler": sampler,
            "grid": list(grid) if grid else None,
            "ema_decay": ema_decay,
            "ema_start": ema_start if ema_decay is not None else None,
            "seconds": round(res.seconds_total, 1),
            "seconds_per_step": round(res.seconds_per_step, 5),
            "wall_seconds_including_eval": round(time.perf_counter() - start, 1),
            "history": res.history,
            "errors_after_each_stage": per_stage,
            "torch": str(torch.__version__),
            "command": f"provex train lpn-laplace --loss {loss} --seed {seed}",
        },
    )
    if out is not None:
        save_weights(lpn, card, out)
    return lpn, card


def evaluate(model: nn.Module, root: str | Path | None = None, device: str | torch.device = "cpu") -> dict[str, float]:
    """Errors against soft-thresholding and |x| on [-3, 3] (``provex models eval lpn-laplace``)."""
    return laplace_errors(model.to(device))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="provex train lpn-laplace", description=__doc__)
    p.add_argument("--loss", choices=["prox", "l2"], default="prox", help="proximal matching schedule, or plain l2")
    p.add_argument("--hidden", type=int, default=50)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--beta", type=float, default=20.0)
    p.add_argument("--alpha", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=BATCH, help="batch for stages that set none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--report-stages", action="store_true", help="measure and print the errors after every stage")
    p.add_argument(
        "--ema-decay",
        type=float,
        default=None,
        help=f"EMA decay of the weights over the last stage (default {EMA_DECAY} for prox, none for l2)",
    )
    p.add_argument("--sampler", choices=["qmc", "iid"], default="qmc", help="quasi-random or i.i.d. (x, noise) pairs")
    p.add_argument(
        "--grid-points", type=int, default=GRID[2], help="interpolate f from this many inputs in [-16, 16] (0: off)"
    )
    p.add_argument("--checkpoint", default=None, help="resumable checkpoint file")
    p.add_argument("--out", default="provex-out/lpn-laplace.pt", help=f"weights file (shipped: {WEIGHTS_DIR})")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    _, card = train_laplace_lpn(
        a.loss,
        None,
        a.hidden,
        a.layers,
        a.beta,
        a.alpha,
        a.batch_size,
        a.seed,
        a.checkpoint,
        a.out,
        report_stages=a.report_stages,
        ema_decay="default" if a.ema_decay is None else (a.ema_decay or None),
        sampler=a.sampler,
        grid_points=a.grid_points,
    )
    m = card.metrics
    print(
        f"{card.name}: max |f - soft| {m['prox_max_error']:.3f} (mean {m['prox_mean_error']:.3f}), "
        f"max |R - |x| - c| {m['prior_max_error']:.3f}; {card.training['seconds']} s -> {a.out}"
    )
    return 0
