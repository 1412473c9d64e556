"""Frank-Wolfe (conditional gradient) solvers for many independent problems at once.

Frank-Wolfe minimises a smooth ``f`` over a compact convex set ``C`` using only a *linear
minimisation oracle* (LMO) ``v = argmin_{v in C} <grad f(x), v>`` and convex combinations
``x <- x + gamma (v - x)``, so iterates stay feasible without projections and are sparse
combinations of vertices. provex uses it for rate-distortion explanations (:mod:`provex.rde`),
but nothing here knows about models: an objective is any callable
``f(x, index, need_grad) -> (values, grads)`` over a batch of P problems.

Pieces:

- :mod:`provex.fw.lmo`: oracles for the non-negative k-sparse polytope
  ``{s in [0,1]^n : sum(s) <= k}`` (top-k of the negative gradient, one ``k`` per problem
  allowed), the Birkhoff polytope of doubly stochastic matrices (linear assignment with
  :func:`scipy.optimize.linear_sum_assignment`), the simplex and the box.
- :mod:`provex.fw.steps`: step rules ``2/(t+2)``, ``1/sqrt(t+1)`` and the monotone non-convex
  rule ``2^-N / sqrt(t+1)``.
- :mod:`provex.fw.solver`: :func:`frank_wolfe`, deterministic or stochastic (gradients
  averaged with momentum), the FW dual gap as stopping criterion, per-problem stopping.
- :mod:`provex.fw.projected`: :func:`projected_gradient` over the box (momentum, backtracking
  line search; L-RDE's solver).
- :mod:`provex.fw.driver`: the one iteration loop all of them (and the plug-and-play solvers of
  :mod:`provex.inverse`) run on: active set, history, timing, callback, finiteness check,
  and the one result type :class:`SolverResult`.

Example (three problems, each a quadratic over the 2-sparse polytope)::

    import torch
    from provex.fw import KSparseNonNegative, frank_wolfe

    c = torch.rand(3, 10)
    f = lambda x, idx, need_grad=True: (((x - c[idx]) ** 2).sum(1), 2 * (x - c[idx]))
    res = frank_wolfe(f, KSparseNonNegative(2), torch.zeros(3, 10), max_iter=500)
    res.x, res.objective[-1], res.gap[-1]
"""

import warnings
from typing import Any

from provex.fw.driver import SolverResult, Step, check_finite, iterate
from provex.fw.lmo import LMO, Birkhoff, Box, KSparseNonNegative, Simplex
from provex.fw.projected import projected_gradient
from provex.fw.solver import Objective, dual_gap, frank_wolfe, momentum_weight
from provex.fw.steps import STEP_RULES, resolve_step, step_size

__all__ = [
    "LMO",
    "STEP_RULES",
    "Birkhoff",
    "Box",
    "KSparseNonNegative",
    "Objective",
    "Simplex",
    "SolverResult",
    "Step",
    "check_finite",
    "dual_gap",
    "frank_wolfe",
    "iterate",
    "momentum_weight",
    "projected_gradient",
    "resolve_step",
    "step_size",
]


def __getattr__(name: str) -> Any:
    if name == "FWResult":  # renamed (one result type for every solver); kept for one release
        warnings.warn("provex.fw.FWResult is deprecated; use provex.fw.SolverResult", DeprecationWarning, stacklevel=2)
        return SolverResult
    raise AttributeError(f"module 'provex.fw' has no attribute {name!r}")
