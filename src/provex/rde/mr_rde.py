"""MR-RDE (multi-rate RDE, Macdonald et al. 2022): the unweighted mean of RC-RDE masks over several rates.

All rates of all images are solved together as one Frank-Wolfe run (:func:`provex.rde.rc_rde.solve_rates`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from provex.explanation import Explanation
from provex.rde.options import DistortionOptions, SolverOptions
from provex.rde.problem import setup
from provex.rde.rc_rde import FAMILY, scaled_rate, solve_rates
from provex.registry import register_method

__all__ = ["DEFAULT_MNIST_RATES", "default_rates", "mr_rde"]

DEFAULT_MNIST_RATES = (50, 100, 150, 200, 250, 300, 350, 400)  # of 784 MNIST pixels (the papers)


def default_rates(n: int) -> list[int]:
    """The papers' MNIST rates 50..400 (of 784), scaled to ``n`` components."""
    return sorted({scaled_rate(r, n) for r in DEFAULT_MNIST_RATES})


@register_method(
    "mr-rde",
    family=FAMILY,
    description="multi-rate RDE: mean of RC-RDE masks over several rates (Macdonald et al. 2022)",
)
def mr_rde(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    rates: Sequence[int | float] | None = None,
    distortion: str = "auto",
    n_samples: int | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    step: str | None = None,
    seed: int | Sequence[int] | None = 0,
    batch_size: int | None = None,
    progress: bool = True,
    reference: Any = None,
    noise: str = "per-pixel",
    grid: int | str | None = "auto",
    fixed_noise: bool | None = None,
    init: str | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> Explanation:
    """Unweighted mean of the RC-RDE masks at ``rates`` (all rates x images solved together).

    ``rates``: numbers of components or fractions in (0, 1); default the papers' MNIST rates
    50, 100, ..., 400 (of 784), scaled to the number of components. Options as for RC-RDE;
    ``max_iter`` defaults to 200 with ADF (one problem per rate: every image was within 1% of
    its 2000-iteration objective by then in the convergence benchmark) and to 30 with Monte
    Carlo (16 fixed draws per image and rate). ``info["maps"]`` (R, N, C, H, W) keeps every
    per-rate mask and ``Explanation.maps`` names them ``k=<rate>`` for plotting.
    """
    if rates is not None:
        if isinstance(rates, (int, float)):
            rates = [rates]
        if not isinstance(rates, (list, tuple)) or len(rates) == 0:
            raise ValueError(f"rates must be a non-empty list of rates, got {rates!r}")
        if len(set(rates)) != len(rates):
            raise ValueError(f"rates must be distinct, got {list(rates)}")
    options = DistortionOptions.create(
        noise=noise,
        reference=reference,
        distortion=distortion,
        n_samples=n_samples,
        fixed_noise=fixed_noise,
        grid=grid,
        batch_size=batch_size,
        seed=seed,
    )
    solver = SolverOptions(max_iter=max_iter, tol=tol, step=step, init=init, progress=progress, callback=callback)
    problem = setup("mr-rde", model, x, target, options, solver, by_image=True)
    wanted = default_rates(problem.comps.n) if rates is None else list(rates)
    masks, out, counts = solve_rates(problem, target, wanted, "rates", "MR-RDE")
    r, num, n = masks.shape
    maps = problem.comps.expand(masks.reshape(r * num, n)).view(r, num, *x.shape[1:]).detach()
    out["maps"] = maps.cpu()
    named = {f"k={k}": maps[i] for i, k in enumerate(counts)}
    return Explanation(maps.mean(0), "mr-rde", target.detach().clone(), out, maps=named)
