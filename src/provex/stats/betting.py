"""Testing by betting: the wealth process, the online-Newton-step bettor and tanh bets.

A sequential test plays a game against the null hypothesis. At step t it computes a payoff
``g_t`` that, under H0, is symmetric around zero given the past; it turns the payoff into a
bounded bet ``kappa_t = tanh(g_t / s_t)`` (``s_t`` = q90 - q10 of the past payoffs, a
predictable scale) and stakes a fraction ``v_t`` of its wealth:

    K_0 = 1,    K_t = K_{t-1} (1 + v_t kappa_t),    v_t in [0, 1/2].

Under H0 the wealth is a nonnegative martingale, so by Ville's inequality
``P(sup_t K_t >= 1/alpha) <= alpha``: rejecting when the wealth first reaches 1/alpha controls
the type I error at any stopping time. The fraction ``v_t`` comes from online Newton steps
(Cutkosky & Orabona; as in Shaer et al. 2023 and Teneggi & Sulam 2024):

    z = kappa / (1 + v kappa),  a <- a + z^2,  v <- clip(v + 2 / (2 - ln 3) * z / a, 0, 1/2),

starting from v = 0, a = 1. Every class here is vectorised over a batch of independent tests.
"""

from __future__ import annotations

import math

import torch

__all__ = ["ONS_COEF", "OnlineNewtonBettor", "RunningQuantiles", "TanhBet", "wealth_process"]

ONS_COEF = 2.0 / (2.0 - math.log(3.0))
"""Step-size constant of the online Newton step for betting fractions in [0, 1/2]."""


class OnlineNewtonBettor:
    """Betting fractions ``v_t`` by online Newton steps, one per test in a batch."""

    def __init__(
        self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64, v_max: float = 0.5
    ) -> None:
        self.v = torch.zeros(batch, device=device, dtype=dtype)
        self.a = torch.ones(batch, device=device, dtype=dtype)
        self.v_max = v_max

    def update(self, kappa: torch.Tensor) -> None:
        """Observe this step's bet outcome ``kappa`` (in [-1, 1]) and move ``v`` for the next step."""
        z = kappa / (1.0 + self.v * kappa)
        self.a = self.a + z * z
        self.v = (self.v + ONS_COEF * z / self.a).clamp(0.0, self.v_max)

    def keep(self, idx: torch.Tensor) -> None:
        """Drop the tests not in ``idx`` (batch compaction once tests stop)."""
        self.v, self.a = self.v[idx], self.a[idx]


class RunningQuantiles:
    """Exact running quantiles of a growing sequence per batch row (sorted insertion buffer).

    ``quantile(q)`` uses linear interpolation between order statistics, as ``numpy.quantile``.
    Insertion costs O(t) per step, vectorised over the batch.
    """

    def __init__(
        self, batch: int, capacity: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64
    ) -> None:
        self.buf = torch.full((batch, max(capacity, 1)), math.inf, device=device, dtype=dtype)
        self.n = 0

    def insert(self, value: torch.Tensor) -> None:
        """Add one value per row (all rows grow together)."""
        n = self.n
        if n >= self.buf.shape[1]:
            raise RuntimeError("RunningQuantiles capacity exceeded")
        head = self.buf[:, : n + 1]
        pos = (
            torch.searchsorted(head[:, :n].contiguous(), value[:, None].contiguous())
            if n
            else torch.zeros_like(value, dtype=torch.long)[:, None]
        )
        ar = torch.arange(n + 1, device=value.device)[None, :]
        shifted = torch.cat([head[:, :1], head[:, :n]], dim=1)
        new = torch.where(ar < pos, head, torch.where(ar == pos, value[:, None], shifted))
        self.buf[:, : n + 1] = new
        self.n = n + 1

    def quantile(self, q: float) -> torch.Tensor:
        """The ``q``-quantile of the values inserted so far (NaN if none)."""
        n = self.n
        if n == 0:
            return torch.full(self.buf.shape[:1], math.nan, device=self.buf.device, dtype=self.buf.dtype)
        h = (n - 1) * q
        lo = math.floor(h)
        hi = min(lo + 1, n - 1)
        frac = h - lo
        return self.buf[:, lo] + frac * (self.buf[:, hi] - self.buf[:, lo])

    def keep(self, idx: torch.Tensor) -> None:
        self.buf = self.buf[idx]


class TanhBet:
    """Bets ``kappa_t = tanh(g_t / s_t)`` with ``s_t`` = q_hi - q_lo of the payoffs before step t.

    The scale is 1 until two payoffs have been seen and is floored at ``min_scale`` (the
    reference implementation's choices). It depends on past payoffs only, so the bet is
    predictable and the wealth stays a martingale under H0.
    """

    def __init__(
        self,
        batch: int,
        capacity: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
        q_lo: float = 0.1,
        q_hi: float = 0.9,
        min_scale: float = 1e-4,
    ) -> None:
        self.past = RunningQuantiles(batch, capacity, device, dtype)
        self.q_lo, self.q_hi, self.min_scale = q_lo, q_hi, min_scale

    def scale(self) -> torch.Tensor:
        if self.past.n < 2:
            return torch.ones(self.past.buf.shape[0], device=self.past.buf.device, dtype=self.past.buf.dtype)
        return (self.past.quantile(self.q_hi) - self.past.quantile(self.q_lo)).clamp_min(self.min_scale)

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        """The bet for payoff ``g`` (then ``g`` joins the past payoffs)."""
        kappa = torch.tanh(g / self.scale())
        self.past.insert(g)
        return kappa

    def keep(self, idx: torch.Tensor) -> None:
        self.past.keep(idx)


def wealth_process(payoffs: torch.Tensor) -> torch.Tensor:
    """Wealth paths ``(..., T + 1)`` (starting at 1) for raw payoffs ``(..., T)``.

    Applies the tanh bet and the online-Newton-step bettor to a precomputed payoff sequence;
    useful for payoffs you compute yourself. The sequential tests in :mod:`provex.stats` run the
    same recursion step by step so they can stop early.
    """
    if payoffs.ndim == 0:
        raise ValueError("payoffs must have a time axis (..., T)")
    if not bool(torch.isfinite(payoffs).all()):
        raise ValueError("payoffs contains NaN or inf values")
    shape = payoffs.shape
    g = payoffs.reshape(-1, shape[-1]).to(torch.float64)
    b, t_max = g.shape
    bet = TanhBet(b, t_max, g.device)
    ons = OnlineNewtonBettor(b, g.device)
    wealth = torch.ones(b, t_max + 1, dtype=torch.float64, device=g.device)
    for t in range(t_max):
        kappa = bet(g[:, t])
        wealth[:, t + 1] = wealth[:, t] * (1.0 + ons.v * kappa)
        ons.update(kappa)
    return wealth.reshape(*shape[:-1], t_max + 1)
