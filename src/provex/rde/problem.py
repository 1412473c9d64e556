"""What the four methods share before and after their solver: the problem and its ``info``.

:func:`setup` turns a method's options into a :class:`Problem`: the components (blocks sized
by the image by default), the noise (from ``reference=`` via
:func:`provex.reference.resolve_reference`), the resolved estimator (``distortion="auto"``:
ADF where the model converts, else Monte Carlo) and the options with the method's defaults
for that estimator filled in. :func:`info` builds the diagnostics every method returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from provex.fw import SolverResult
from provex.rde.components import AUTO_COMPONENTS, Components, auto_grid
from provex.rde.distortion import Distortion, Meter, build, choose
from provex.rde.noise import GaussianNoise
from provex.rde.options import DistortionOptions, SolverOptions, defaults, fill
from provex.seeding import check_seed

__all__ = ["Problem", "batch_size", "final_distortion", "info", "setup", "start_scores"]


@dataclass
class Problem:
    """A method's estimator, components and options (defaults filled), and the reference it used."""

    dist: Distortion
    comps: Components
    options: DistortionOptions
    solver: SolverOptions
    reference: dict[str, Any]
    extra: Meter  # model work outside the solver (start scores, final distortion)


def batch_size(value: int | None, device: torch.device) -> int:
    """Model inputs per pass: the given value, else 64 on CPU (cache-friendly chunks) and 1024 on GPUs."""
    if value is None:
        return 64 if device.type == "cpu" else 1024
    return value


def _noise(options: DistortionOptions, model: nn.Module, x: torch.Tensor) -> tuple[GaussianNoise, dict[str, Any]]:
    """The Gaussian noise of ``reference=`` (resolved) used per pixel or as one scalar pair."""
    if isinstance(options.reference, GaussianNoise):  # the deprecated noise=GaussianNoise(...) spelling
        noise = options.reference
        stats = {"source": "GaussianNoise (deprecated noise= option)", "per_image": noise.per_image}
        return noise, stats
    from provex.reference import resolve_reference

    ref = resolve_reference(options.reference, model, x)
    return GaussianNoise.from_reference(ref, options.noise == "per-pixel"), ref.describe()


def setup(
    method: str,
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    options: DistortionOptions,
    solver: SolverOptions,
    max_components: int = AUTO_COMPONENTS,
    by_image: bool = False,
) -> Problem:
    """Components, noise, estimator and filled-in options of ``method`` for the images ``x``.

    ``grid="auto"`` picks blocks with at most ``max_components`` components. ``by_image``: every
    model pass (the reference logits included) holds one image's rows only, so the result is
    bit-for-bit the same alone and in any batch (for methods that amplify float rounding).
    """
    check_seed(options.seed, x.shape[0])
    grid = auto_grid(tuple(x.shape[1:]), max_components) if options.grid == "auto" else options.grid
    comps = Components(tuple(x.shape[1:]), grid)
    noise, stats = _noise(options, model, x)
    with torch.no_grad():
        start = time.perf_counter()
        rows = x.detach().split(1) if by_image else (x.detach(),)
        logits = torch.cat([model(r) for r in rows])
        seconds = time.perf_counter() - start
    choice = choose(options.distortion, model, x, logits)
    options, solver = fill(options, solver, defaults(method, choice.kind))
    dist = build(
        choice,
        model,
        x,
        target,
        noise,
        comps,
        logits,
        n_samples=options.n_samples,
        batch_size=batch_size(options.batch_size, x.device),
        seed=options.seed,
        fixed_noise=options.fixed_noise,
        by_image=by_image,
    )
    dist.meter.add(x.shape[0], False, seconds)
    return Problem(dist, comps, options, solver, stats, Meter())


def start_scores(problem: Problem) -> torch.Tensor:
    """(N, n) linearised importance of each component (:meth:`Distortion.linear_scores`), charged outside the solver."""
    return problem.dist.linear_scores(problem.extra)


def final_distortion(problem: Problem, s: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Distortion of the final masks (charged outside the solver's counts)."""
    with torch.no_grad():
        values, _ = problem.dist(s, image, need_grad=False, meter=problem.extra)
    return values


def info(problem: Problem, res: SolverResult, shape: tuple[int, ...], **extra: Any) -> dict[str, Any]:
    """Diagnostics common to the four methods; ``shape`` reshapes per-problem vectors."""
    dist, options, solver = problem.dist, problem.options, problem.solver
    t = res.objective.shape[0]
    meter, outside = dist.meter, problem.extra
    adf = dist.kind != "mc"
    out = {
        "objective": res.objective.reshape(t, *shape).cpu(),
        "gap": res.gap.reshape(res.gap.shape[0], *shape).cpu(),
        "iterations": res.iterations.reshape(shape).cpu(),
        "time": res.times,
        "model_passes": res.evaluations,
        "model_inputs": meter.inputs,
        "model_calls": meter.inputs + outside.inputs,
        "model_calls_backward": meter.backward + outside.backward,
        "model_calls_adf": meter.adf + outside.adf,
        "model_seconds": meter.seconds,
        "solver_seconds": res.seconds,
        "overhead_fraction": max(0.0, 1.0 - meter.seconds / max(res.seconds, 1e-12)),
        "distortion_kind": dist.kind,
        "distortion_reason": dist.reason,
        "stochastic": dist.stochastic,
        "components": dist.components.n,
        "grid": dist.components.grid,
        "noise": options.noise,
        "reference": problem.reference,
        "max_iter": solver.max_iter,
        "tol": solver.tol,
        "init": solver.init,
    }
    if not adf:
        out.update(n_samples=options.n_samples, fixed_noise=options.fixed_noise)
    out.update(extra)
    return out
