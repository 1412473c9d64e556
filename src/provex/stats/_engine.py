"""The sequential loop shared by SKIT, cSKIT and xSKIT, their result types and input checks.

A *payoff source* holds the (already ordered) data of a batch of tests and, at each step,
returns the raw witness payoff ``g_t`` computed from the data *before* step t only. The loop
turns payoffs into bets (:class:`~provex.stats.betting.TanhBet`), fractions
(:class:`~provex.stats.betting.OnlineNewtonBettor`) and wealth, records rejection times, and
drops tests from the batch once their wealth reaches ``stop_at``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from provex.stats.betting import OnlineNewtonBettor, TanhBet
from provex.stats.kernels import Kernel, RBFKernel

__all__ = ["BatchBettingResult", "BettingResult", "run_sequential_test"]


@dataclass
class BettingResult:
    """One sequential test.

    Attributes:
        rejected: whether the wealth reached 1/alpha within ``tau_max`` steps.
        tau: the step at which it did (1-based, counting warm-up steps), or None.
        wealth: the wealth path ``K_0 = 1, K_1, ...`` up to the step where the test stopped.
        payoffs: the raw witness payoffs per step (NaN during warm-up).
    """

    rejected: bool
    tau: int | None
    wealth: torch.Tensor
    payoffs: torch.Tensor
    alpha: float
    tau_max: int
    test: str
    kernel: str

    @property
    def normalized_tau(self) -> float:
        """tau / tau_max, with tau_max for a test that did not reject (the paper's convention)."""
        return (self.tau if self.tau is not None else self.tau_max) / self.tau_max


@dataclass
class BatchBettingResult:
    """A batch of sequential tests (any batch shape, e.g. (repeats, concepts)).

    Attributes:
        rejected: bool tensor of the batch shape.
        tau: long tensor of the batch shape: the rejection step, or ``tau_max`` where the test
            did not reject (censored, so ``tau.float().mean() / tau_max`` is the paper's mean
            rejection time). Use ``rejected`` to tell the two apart.
        wealth: (*batch, tau_max + 1) wealth paths, NaN after a test stopped.
        payoffs: (*batch, tau_max) raw payoffs, NaN during warm-up and after stopping.
    """

    rejected: torch.Tensor
    tau: torch.Tensor
    wealth: torch.Tensor
    payoffs: torch.Tensor
    alpha: float
    tau_max: int
    test: str
    kernel: str

    @property
    def batch_shape(self) -> torch.Size:
        return self.rejected.shape

    def rejection_rate(self, dim: int | Sequence[int] | None = None) -> torch.Tensor:
        """Fraction of rejected tests (over all, or over ``dim``)."""
        r = self.rejected.double()
        return r.mean() if dim is None else r.mean(dim)

    def mean_tau(self, dim: int | Sequence[int] | None = None, normalized: bool = True) -> torch.Tensor:
        """Mean rejection time (non-rejections count as tau_max), divided by tau_max by default."""
        t = self.tau.double() / (self.tau_max if normalized else 1)
        return t.mean() if dim is None else t.mean(dim)

    def final_wealth(self) -> torch.Tensor:
        """The wealth where each test stopped (its last finite value): an e-value under H0."""
        w = self.wealth
        finite = torch.isfinite(w)
        last = finite.long().cumsum(-1).argmax(-1, keepdim=True)
        return w.gather(-1, last).squeeze(-1)

    def __getitem__(self, index: Any) -> BettingResult | BatchBettingResult:
        rej = self.rejected[index]
        sub = BatchBettingResult(
            rejected=rej,
            tau=self.tau[index],
            wealth=self.wealth[index],
            payoffs=self.payoffs[index],
            alpha=self.alpha,
            tau_max=self.tau_max,
            test=self.test,
            kernel=self.kernel,
        )
        return sub.single() if rej.ndim == 0 else sub

    def single(self) -> BettingResult:
        """The one test of a batch of shape ()."""
        if self.rejected.ndim != 0:
            raise ValueError(f"single() needs a batch of shape (), got {tuple(self.rejected.shape)}")
        w = self.wealth
        steps = int(torch.isfinite(w).sum()) - 1
        rejected = bool(self.rejected)
        return BettingResult(
            rejected=rejected,
            tau=int(self.tau) if rejected else None,
            wealth=w[: steps + 1].clone(),
            payoffs=self.payoffs[:steps].clone(),
            alpha=self.alpha,
            tau_max=self.tau_max,
            test=self.test,
            kernel=self.kernel,
        )


class PayoffSource(Protocol):
    """Data of a batch of tests, consumed one step at a time (see module docstring)."""

    batch: int

    def warm(self) -> None: ...

    def step(self) -> torch.Tensor: ...

    def keep(self, idx: torch.Tensor) -> None: ...


class BandwidthTracker:
    """Per-row RBF bandwidth refitted on the past points on the kernel's schedule (see kernels)."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.value: torch.Tensor | None = None
        self.n_last: int | None = None

    def update(self, past: torch.Tensor) -> torch.Tensor | None:
        k = self.kernel
        if not isinstance(k, RBFKernel):
            return None
        if self.value is None or k.refit_due(past.shape[1], self.n_last):
            self.value = k.fit(past)
            self.n_last = past.shape[1]
        return self.value

    def keep(self, idx: torch.Tensor) -> None:
        if self.value is not None:
            self.value = self.value[idx]


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float in (0, 1) (the level of a test), else a one-line ``ValueError``."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}") from None
    if not 0.0 < a < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return a


def check_budget(tau_max: int, warmup: int) -> tuple[int, int]:
    """``(tau_max, warmup)`` of a sequential test: integers with ``1 <= warmup < tau_max``."""
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
        raise ValueError(f"warmup must be an integer >= 1, got {warmup!r}")
    if isinstance(tau_max, bool) or not isinstance(tau_max, int):
        raise ValueError(f"tau_max must be an integer, got {tau_max!r}")
    if tau_max <= warmup:
        raise ValueError(f"tau_max ({tau_max}) must be larger than the warm-up (warmup={warmup} steps)")
    return tau_max, warmup


def check_stop(stop_at: float | None, alpha: float) -> float:
    if stop_at is None:
        return 1.0 / alpha
    s = float(stop_at)
    if math.isnan(s) or s < 1.0 / alpha:
        raise ValueError(f"stop_at must be at least 1/alpha = {1.0 / alpha:g} (or inf), got {stop_at}")
    return s


def as_series(t: object, name: str, min_dim: int = 1) -> torch.Tensor:
    """A finite floating tensor with at least ``min_dim`` dimensions (converted to float64)."""
    if not isinstance(t, torch.Tensor):
        try:
            t = torch.as_tensor(t)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name} must be a tensor, got {type(t).__name__}") from None
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must be real-valued, got dtype {t.dtype}")
    if t.ndim < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s), got shape {tuple(t.shape)}")
    t = t.to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        bad = "NaN" if bool(torch.isnan(t).any()) else "inf"
        raise ValueError(f"{name} contains {bad} values")
    return t


def make_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int or None, got {seed!r}")
    return torch.Generator(device=device).manual_seed(seed)


def shuffle_rows(gen: torch.Generator | None, n: int, batch: int, device: torch.device) -> torch.Tensor | None:
    """One random permutation of range(n) per batch row (None: keep the given order)."""
    if gen is None:
        return None
    return torch.argsort(torch.rand(batch, n, generator=gen, device=device), dim=1)


def run_sequential_test(
    source: PayoffSource,
    *,
    tau_max: int,
    warmup: int,
    alpha: float,
    stop_at: float,
    batch_shape: Sequence[int],
    test: str,
    kernel: str,
    device: torch.device,
    progress: bool = False,
) -> BatchBettingResult:
    """Run the betting loop over ``source`` (see the module docstring)."""
    b = source.batch
    dt = torch.float64
    wealth = torch.full((b, tau_max + 1), math.nan, dtype=dt, device=device)
    wealth[:, : warmup + 1] = 1.0
    payoffs = torch.full((b, tau_max), math.nan, dtype=dt, device=device)
    tau = torch.full((b,), tau_max, dtype=torch.long, device=device)
    rejected = torch.zeros(b, dtype=torch.bool, device=device)
    for _ in range(warmup):
        source.warm()
    active = torch.arange(b, device=device)
    bet = TanhBet(b, tau_max - warmup, device, dt)
    ons = OnlineNewtonBettor(b, device, dt)
    w = torch.ones(b, dtype=dt, device=device)
    stopped = torch.zeros(b, dtype=torch.bool, device=device)
    threshold = 1.0 / alpha
    steps = range(warmup + 1, tau_max + 1)
    for s in tqdm(steps, desc=f"{test} ({kernel})", disable=not progress, leave=False):
        g = source.step()
        kappa = bet(g)
        w = w * (1.0 + ons.v * kappa)
        ons.update(kappa)
        live = ~stopped
        rows = active[live]
        wealth[rows, s] = w[live]
        payoffs[rows, s - 1] = g[live]
        newly = live & (w >= threshold) & ~rejected[active]
        if bool(newly.any()):
            idx = active[newly]
            rejected[idx] = True
            tau[idx] = s
        stopped = stopped | (live & (w >= stop_at))
        n_stopped = int(stopped.sum())
        if n_stopped == stopped.numel():
            break
        if n_stopped and n_stopped >= max(1, stopped.numel() // 10):
            keep = (~stopped).nonzero().squeeze(1)
            source.keep(keep)
            bet.keep(keep)
            ons.keep(keep)
            w, active = w[keep], active[keep]
            stopped = torch.zeros(keep.numel(), dtype=torch.bool, device=device)
    shape = tuple(batch_shape)
    return BatchBettingResult(
        rejected=rejected.reshape(shape),
        tau=tau.reshape(shape),
        wealth=wealth.reshape(*shape, tau_max + 1),
        payoffs=payoffs.reshape(*shape, tau_max),
        alpha=alpha,
        tau_max=tau_max,
        test=test,
        kernel=kernel,
    )
