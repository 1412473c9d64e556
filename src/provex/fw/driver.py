"""One iteration loop for every batched solver in provex.

Frank-Wolfe (:func:`provex.fw.frank_wolfe`), the projected gradient of L-RDE
(:func:`provex.fw.projected_gradient`) and the plug-and-play reconstructions
(:mod:`provex.inverse.pnp`) solve P independent problems at once. What they share lives here,
written once: the active set (problems that have stopped are no longer evaluated), the
per-iteration history of the objective and of the stationarity measure, wall-clock times,
the callback, the finiteness check, the progress bar and the :class:`SolverResult`.

A solver supplies ``step(t, idx) -> Step``: advance the problems ``idx`` (positions in the
batch) by one iteration, in place in its own state, and report their stationarity measure
(the FW dual gap, the relative change of a fixed-point iteration), their objective at the new
iterate (if the solver has one), which of them moved and which are finished.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

__all__ = ["SolverResult", "Step", "check_finite", "iterate"]

UNTIL = ("each", "all")


@dataclass
class SolverResult:
    """Solution and diagnostics of a batched solver run (one row / column per problem).

    ``objective`` (T+1, P): the objective at every iterate as the solver saw it (noisy for a
    stochastic objective; (0, P) for solvers without one). ``gap`` (T, P): the stationarity
    measure at each iteration (FW dual gap; relative change for fixed-point iterations; for
    stopped problems the last value is repeated). ``iterations`` (P,): steps each problem
    took. ``converged`` (P,): the problem stopped on its tolerance. ``evaluations``: calls
    of the objective (or of the iteration map). ``times`` (T+1,): wall-clock seconds at which
    each iterate was reached. ``info``: solver-specific diagnostics.
    """

    x: torch.Tensor
    objective: torch.Tensor
    gap: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    evaluations: int
    seconds: float
    times: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def residuals(self) -> torch.Tensor:
        """Deprecated name (PnP; kept for one release): the per-iteration relative change, now ``gap``."""
        warnings.warn("SolverResult.residuals is deprecated; use .gap", DeprecationWarning, stacklevel=2)
        return self.gap


@dataclass
class Step:
    """What one iteration reports for the problems it advanced (all tensors (|idx|,)).

    ``moved``: took a step (default: all); ``done``: reached its tolerance (stops it, counts
    as converged; default: none); ``stuck``: cannot make progress and stops without counting
    as converged (default: none); ``evaluations``: objective calls this iteration made.
    """

    gap: torch.Tensor
    objective: torch.Tensor | None = None
    moved: torch.Tensor | None = None
    done: torch.Tensor | None = None
    stuck: torch.Tensor | None = None
    evaluations: int = 1


def check_finite(values: torch.Tensor, index: torch.Tensor, t: int, what: str = "objective") -> None:
    """A one-line ``ValueError`` naming the iteration and the problems where ``values`` is NaN/inf."""
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        where = index[bad.to(index.device)].tolist()[:10]
        raise ValueError(f"{what} is not finite (NaN/inf) at iteration {t} for problem(s) {where}")


def iterate(
    step: Callable[[int, torch.Tensor], Step],
    x: torch.Tensor,
    objective0: torch.Tensor | None = None,
    *,
    max_iter: int,
    evaluations: int = 0,
    until: str = "each",
    progress: bool = False,
    desc: str = "solver",
    callback: Callable[[int, torch.Tensor], None] | None = None,
    gap_name: str = "stationarity measure",
    info: dict[str, Any] | None = None,
    start: float | None = None,
) -> SolverResult:
    """Run ``step`` for at most ``max_iter`` iterations over the P problems of ``x`` (P, ...).

    ``x`` is the solver's variable, updated in place by ``step`` (the callback sees it).
    ``objective0`` (P,): the objective at the start (None: the solver has none).
    ``until="each"``: a problem stops as soon as it is done or stuck; ``"all"``: every
    problem keeps iterating until all are done at the same iteration (the classic stopping
    of fixed-point solvers; ``converged`` is then the last iteration's verdict).
    ``evaluations``: objective calls already made (the start). ``start``: the solver's
    ``time.perf_counter()`` at its start (default: now).
    """
    if until not in UNTIL:
        raise ValueError(f"until must be one of {UNTIL}, got {until!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"max_iter must be a non-negative integer, got {max_iter!r}")
    start = time.perf_counter() if start is None else start
    p, dev = x.shape[0], x.device
    everyone = torch.arange(p, device=dev)
    active = torch.ones(p, dtype=torch.bool, device=dev)
    converged = torch.zeros(p, dtype=torch.bool, device=dev)
    iterations = torch.zeros(p, dtype=torch.long, device=dev)
    real = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    gap = torch.full((p,), math.inf, dtype=real, device=dev)
    f = None if objective0 is None else objective0.detach().clone()
    if f is not None:
        check_finite(f, everyone, 0)
    hist_f = [] if f is None else [f.clone()]
    hist_gap: list[torch.Tensor] = []
    times = [time.perf_counter() - start]
    bar = tqdm(range(max_iter), desc=desc, disable=not progress, leave=False)
    for t in bar:
        idx = everyone if bool(active.all()) else active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        s = step(t, idx)
        evaluations += s.evaluations
        check_finite(s.gap, idx, t, gap_name)
        gap[idx] = s.gap.to(gap.dtype)
        if s.objective is not None:
            if f is None:
                raise ValueError("step reported an objective but the solver started without one")
            check_finite(s.objective, idx, t + 1)
            f[idx] = s.objective.detach()
        moved = torch.ones(idx.numel(), dtype=torch.bool, device=dev) if s.moved is None else s.moved
        iterations[idx[moved]] += 1
        done = torch.zeros_like(moved) if s.done is None else s.done
        converged[idx] = done
        stop = done if s.stuck is None else done | s.stuck
        if until == "each":
            active[idx[stop]] = False
        elif bool(converged.all()):
            active[:] = False
        if f is not None:
            hist_f.append(f.clone())
        hist_gap.append(gap.clone())
        times.append(time.perf_counter() - start)
        if callback is not None and bool(moved.any()):
            callback(t, x)
        if progress and t % 10 == 0:
            shown = f"{float(f.mean()):.4g}" if f is not None else f"{float(gap.mean()):.3g}"
            bar.set_postfix(value=shown, active=int(idx.numel()))
    bar.close()
    return SolverResult(
        x=x,
        objective=torch.stack(hist_f) if hist_f else torch.empty(0, p, dtype=real, device=dev),
        gap=torch.stack(hist_gap) if hist_gap else torch.empty(0, p, dtype=real, device=dev),
        iterations=iterations,
        converged=converged,
        evaluations=evaluations,
        seconds=time.perf_counter() - start,
        times=torch.tensor(times, dtype=torch.float64),
        info=dict(info or {}),
    )
