"""The options of the four rate-distortion methods, validated once, with their defaults in one place.

:class:`DistortionOptions` says how the distortion is estimated (shared by every method),
:class:`SolverOptions` how the solver runs. Both are frozen: a method builds them from its
keyword arguments and passes them on, instead of threading a dozen keywords through every
helper. Settings left at ``None`` are filled by :func:`defaults` from :data:`DEFAULTS`, which
depend on the method and on the resolved distortion: the deterministic ADF estimator is cheap
per iteration, Monte Carlo pays ``n_samples`` model passes per mask and iteration, so its
defaults are sized to a budget of model passes per image (see ``DEFAULTS``).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from provex.checks import check_choice
from provex.fw.steps import resolve_step
from provex.rde.noise import GaussianNoise
from provex.seeding import check_seed

__all__ = ["DEFAULTS", "DistortionOptions", "MethodDefaults", "SolverOptions", "defaults"]

NOISE_MODES = ("per-pixel", "global")
INITS = ("zeros", "gradient", "identity")


def _positive_int(value: Any, name: str, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class DistortionOptions:
    """How the distortion ``D(s)`` is estimated.

    ``distortion``: ``"auto"`` (ADF where every layer converts exactly, else Monte Carlo),
    ``"adf"``, ``"adf-lowrank"`` or ``"mc"``. ``n_samples``: Monte Carlo draws per image,
    mask and evaluation (None: the method's default). ``fixed_noise``: reuse each image's
    draws at every evaluation (common random numbers; None: the method's default).
    ``reference``: a :class:`provex.Reference` or a path to a saved one (None: the model
    card, else each image's own statistics). ``noise``: use the reference ``"per-pixel"`` or
    as one ``"global"`` scalar mean and variance. ``grid``: ``"auto"`` (blocks sized by the
    image), None (every pixel and channel) or a block side b. ``batch_size``: model inputs
    per pass (None: 64 on CPU, 1024 on GPUs). ``seed``: int, one int per image, or None.
    """

    distortion: str = "auto"
    n_samples: int | None = None
    fixed_noise: bool | None = None
    reference: Any = None
    noise: str = "per-pixel"
    grid: int | str | None = "auto"
    batch_size: int | None = None
    seed: int | Sequence[int] | None = 0

    def __post_init__(self) -> None:
        from provex.rde.distortion import KINDS

        check_choice(self.distortion, "distortion", KINDS)
        _positive_int(self.n_samples, "n_samples")
        _positive_int(self.batch_size, "batch_size")
        if self.fixed_noise is not None and not isinstance(self.fixed_noise, bool):
            raise ValueError(f"fixed_noise must be True, False or None, got {self.fixed_noise!r}")
        grid = self.grid
        if grid != "auto" and grid is not None and (isinstance(grid, bool) or not isinstance(grid, int) or grid < 1):
            raise ValueError(f"grid must be a positive integer block size, 'auto' or None, got {self.grid!r}")
        if not isinstance(self.noise, GaussianNoise) and self.noise not in NOISE_MODES:
            raise ValueError(f"noise must be 'per-pixel' or 'global', got {self.noise!r}")
        if self.reference is not None and not isinstance(self.reference, (str, os.PathLike, GaussianNoise)):
            from provex.reference import Reference

            if not isinstance(self.reference, Reference):
                raise ValueError(
                    f"reference must be a provex.Reference, a path to a saved one, or None; "
                    f"got {type(self.reference).__name__}"
                )
        check_seed(self.seed)

    @classmethod
    def create(cls, noise: Any = "per-pixel", reference: Any = None, **kwargs: Any) -> DistortionOptions:
        """Options from a method's keywords (``noise=GaussianNoise(...)``: the deprecated ``reference=``)."""
        if isinstance(noise, GaussianNoise):
            warnings.warn(
                "noise=GaussianNoise(...) is deprecated (kept for one release); pass "
                "reference=provex.Reference(mean, var) or reference=provex.Reference.fit(train_images)",
                DeprecationWarning,
                stacklevel=4,
            )
            if reference is not None:
                raise ValueError("reference and noise=GaussianNoise(...) both given; pass reference only")
            return cls(noise="per-pixel" if noise.per_pixel else "global", reference=noise, **kwargs)
        return cls(noise=noise, reference=reference, **kwargs)


@dataclass(frozen=True)
class SolverOptions:
    """How the solver runs. ``max_iter``, ``tol`` and ``init`` left at None take the method's defaults.

    ``tol``: Frank-Wolfe stops a problem when its gap is below ``tol`` times its objective at
    the start (L-RDE: when its objective fell by less than ``tol * |f|`` over 10 iterations).
    ``step``: ``"monotone"``, ``"2/(t+2)"`` or ``"1/sqrt(t+1)"`` (None: monotone for a
    deterministic objective, 2/(t+2) for a stochastic one). ``init``: ``"zeros"`` or
    ``"gradient"`` (RC/MR-RDE: start at the top-k vertex of the linearised distortion; one
    extra forward+backward pass per image), ``"identity"`` or ``"gradient"`` (Ord-RDE: start
    at the ordering by that score). ``callback(t, x)`` is called after every iteration.
    """

    max_iter: int | None = None
    tol: float | None = None
    step: str | None = None
    init: str | None = None
    progress: bool = True
    callback: Callable[[int, torch.Tensor], None] | None = None

    def __post_init__(self) -> None:
        if self.max_iter is not None and (
            isinstance(self.max_iter, bool) or not isinstance(self.max_iter, int) or self.max_iter < 0
        ):
            raise ValueError(f"max_iter must be a non-negative integer, got {self.max_iter!r}")
        if self.tol is not None and (
            isinstance(self.tol, bool)
            or not isinstance(self.tol, (int, float))
            or not (self.tol >= 0 and math.isfinite(self.tol))
        ):
            raise ValueError(f"tol must be a non-negative number, got {self.tol!r}")
        if self.step is not None:
            resolve_step(self.step)
        if self.init is not None and self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.callback is not None and not callable(self.callback):
            raise ValueError("callback must be callable as callback(t, x)")


@dataclass(frozen=True)
class MethodDefaults:
    """What a method uses for the settings left at None, for one kind of distortion estimator."""

    max_iter: int
    tol: float
    n_samples: int
    fixed_noise: bool
    init: str
    step: str | None = None


# One table for every default that depends on the method or on the estimator. Monte Carlo
# rows are sized for a budget of about 2,000 forward+backward passes per image (issue 12;
# measured in benchmarks/own_model): a fixed bank of draws (common random numbers) makes
# the objective deterministic, so the monotone step rule and the relative-gap stop apply,
# and the gradient start saves the iterations that walk away from s = 0.
DEFAULTS: dict[tuple[str, str], MethodDefaults] = {
    ("rc-rde", "adf"): MethodDefaults(max_iter=300, tol=0.0, n_samples=64, fixed_noise=False, init="zeros"),
    ("rc-rde", "mc"): MethodDefaults(max_iter=50, tol=1e-3, n_samples=32, fixed_noise=True, init="gradient"),
    ("mr-rde", "adf"): MethodDefaults(max_iter=200, tol=0.0, n_samples=64, fixed_noise=False, init="zeros"),
    ("mr-rde", "mc"): MethodDefaults(max_iter=30, tol=1e-3, n_samples=16, fixed_noise=True, init="gradient"),
    ("ord-rde", "adf"): MethodDefaults(
        max_iter=100, tol=0.0, n_samples=64, fixed_noise=False, init="identity", step="1/sqrt(t+1)"
    ),
    ("ord-rde", "mc"): MethodDefaults(
        max_iter=100, tol=0.0, n_samples=1, fixed_noise=False, init="gradient", step="1/sqrt(t+1)"
    ),
    ("l-rde", "adf"): MethodDefaults(max_iter=500, tol=1e-5, n_samples=64, fixed_noise=True, init="zeros"),
    ("l-rde", "mc"): MethodDefaults(max_iter=50, tol=1e-5, n_samples=16, fixed_noise=True, init="zeros"),
}


def defaults(method: str, kind: str) -> MethodDefaults:
    """The defaults of ``method`` for the resolved estimator ``kind`` (both ADF modes share a row)."""
    return DEFAULTS[(method, "mc" if kind == "mc" else "adf")]


def fill(
    options: DistortionOptions, solver: SolverOptions, d: MethodDefaults
) -> tuple[DistortionOptions, SolverOptions]:
    """The options with every None replaced by the method's default ``d``."""
    options = replace(
        options,
        n_samples=d.n_samples if options.n_samples is None else options.n_samples,
        fixed_noise=d.fixed_noise if options.fixed_noise is None else options.fixed_noise,
    )
    solver = replace(
        solver,
        max_iter=d.max_iter if solver.max_iter is None else solver.max_iter,
        tol=d.tol if solver.tol is None else solver.tol,
        init=d.init if solver.init is None else solver.init,
        step=d.step if solver.step is None else solver.step,
    )
    return options, solver
