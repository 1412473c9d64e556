"""SKIT: global semantic importance, H0: Y independent of Z_j, by betting on an HSIC witness.

Each step takes two fresh pairs (y1, z1), (y2, z2); the null pairs swap z between them,
(y1, z2), (y2, z1), which under H0 have the same distribution as the observed ones. The
witness is the kernel mean embedding of the joint minus the product of the marginals, fitted
on all past pairs:

    w(y, z) = mean_i k(y, y_i) l(z, z_i) - mean_i k(y, y_i) * mean_i l(z, z_i),

and the payoff is ``g = w(y1, z1) + w(y2, z2) - w(y1, z2) - w(y2, z1)``. ``g`` changes sign
under the swap, so its bet has mean zero under H0 and the wealth is a martingale. With the
linear kernel the witness collapses to ``g = cov_past(y, z) (y1 - y2)(z1 - z2)``, computed from
running sums.
"""

from __future__ import annotations

import torch

from provex.stats._engine import (
    BandwidthTracker,
    BatchBettingResult,
    BettingResult,
    as_series,
    check_alpha,
    check_budget,
    check_stop,
    make_generator,
    run_sequential_test,
    shuffle_rows,
)
from provex.stats.kernels import Kernel, LinearKernel, get_kernel

__all__ = ["skit"]


class _HSICSource:
    """Pairs of observations; payoff from the HSIC witness on all past pairs."""

    def __init__(self, y: torch.Tensor, z: torch.Tensor, kernel: Kernel) -> None:
        self.y, self.z = y.unsqueeze(-1), z.unsqueeze(-1)  # (B, 2T, 1)
        self.batch = y.shape[0]
        self.kernel = kernel
        self.linear = isinstance(kernel, LinearKernel)
        self.n = 0  # observations consumed
        self.bw_y, self.bw_z = BandwidthTracker(kernel), BandwidthTracker(kernel)
        zeros = torch.zeros(self.batch, dtype=y.dtype, device=y.device)
        self.sy, self.sz, self.syz = zeros.clone(), zeros.clone(), zeros.clone()

    def _absorb(self) -> None:
        if self.linear:
            y, z = self.y[:, self.n : self.n + 2, 0], self.z[:, self.n : self.n + 2, 0]
            self.sy += y.sum(1)
            self.sz += z.sum(1)
            self.syz += (y * z).sum(1)
        self.n += 2

    def warm(self) -> None:
        self._absorb()

    def step(self) -> torch.Tensor:
        n = self.n
        y_new, z_new = self.y[:, n : n + 2], self.z[:, n : n + 2]
        if self.linear:
            c = self.syz / n - (self.sy / n) * (self.sz / n)
            g = c * (y_new[:, 0, 0] - y_new[:, 1, 0]) * (z_new[:, 0, 0] - z_new[:, 1, 0])
        else:
            y_past, z_past = self.y[:, :n], self.z[:, :n]
            ky = self.kernel.rows(y_new, y_past, self.bw_y.update(y_past))  # (B, 2, n)
            kz = self.kernel.rows(z_new, z_past, self.bw_z.update(z_past))
            joint = torch.einsum("bai,bci->bac", ky, kz) / n
            w = joint - ky.mean(-1)[:, :, None] * kz.mean(-1)[:, None, :]
            g = w[:, 0, 0] + w[:, 1, 1] - w[:, 0, 1] - w[:, 1, 0]
        self._absorb()
        return g

    def keep(self, idx: torch.Tensor) -> None:
        self.y, self.z = self.y[idx], self.z[idx]
        self.sy, self.sz, self.syz = self.sy[idx], self.sz[idx], self.syz[idx]
        self.bw_y.keep(idx)
        self.bw_z.keep(idx)


def skit(
    y: torch.Tensor,
    z: torch.Tensor,
    kernel: str | Kernel = "rbf",
    alpha: float = 0.05,
    tau_max: int = 1000,
    seed: int | None = 0,
    *,
    warmup: int = 1,
    stop_at: float | None = None,
    progress: bool = False,
) -> BettingResult | BatchBettingResult:
    """Test H0: Y independent of Z_j by betting (SKIT, Teneggi & Sulam 2024).

    Args:
        y: predictions (..., N); z: concept scores (..., N). The last axis is the sample
            axis; leading axes broadcast and are independent tests (e.g. z of shape
            (concepts, N) with y of shape (N,), or (repeats, concepts, N)).
        kernel: ``"rbf"`` (median-heuristic bandwidth), ``"linear"`` or a Kernel.
        alpha: significance level; reject when the wealth reaches 1/alpha.
        tau_max: most steps; each step consumes 2 observations, so N >= 2 * tau_max.
            Only the first 2 * tau_max observations (after shuffling) are ever read.
        seed: each row is processed in a random order drawn from this seed (None: as given).
        warmup: steps whose pairs only seed the witness (no bet).
        stop_at: wealth at which a test stops (default 1/alpha; ``float("inf")`` runs to
            tau_max; use K/alpha for e-BH over K concepts).
        progress: show a tqdm progress bar over steps.

    Returns:
        A :class:`BettingResult` (``rejected``, ``tau`` or None, ``wealth``) for 1-D inputs,
        else a :class:`BatchBettingResult` of the broadcast batch shape.
    """
    alpha = check_alpha(alpha)
    tau_max, warmup = check_budget(tau_max, warmup)
    stop = check_stop(stop_at, alpha)
    k = get_kernel(kernel)
    y = as_series(y, "y")
    z = as_series(z, "z")
    if y.device != z.device:
        raise ValueError(f"y and z must be on the same device, got {y.device} and {z.device}")
    if y.shape[-1] != z.shape[-1]:
        raise ValueError(f"y and z must have the same length, got {y.shape[-1]} and {z.shape[-1]}")
    n = y.shape[-1]
    if n < 2 * tau_max:
        raise ValueError(
            f"skit uses 2 observations per step: tau_max={tau_max} needs N >= {2 * tau_max}, got N={n}; lower tau_max"
        )
    try:
        batch_shape = torch.broadcast_shapes(y.shape[:-1], z.shape[:-1])
    except RuntimeError:
        raise ValueError(f"y and z batch shapes do not broadcast: {tuple(y.shape)} and {tuple(z.shape)}") from None
    yb = y.expand(*batch_shape, n).reshape(-1, n)
    zb = z.expand(*batch_shape, n).reshape(-1, n)
    perm = shuffle_rows(make_generator(seed, y.device), n, yb.shape[0], y.device)
    if perm is not None:
        yb, zb = yb.gather(1, perm), zb.gather(1, perm)
    yb, zb = yb[:, : 2 * tau_max].contiguous(), zb[:, : 2 * tau_max].contiguous()
    res = run_sequential_test(
        _HSICSource(yb, zb, k),
        tau_max=tau_max,
        warmup=warmup,
        alpha=alpha,
        stop_at=stop,
        batch_shape=batch_shape,
        test="skit",
        kernel=k.name,
        device=y.device,
        progress=progress,
    )
    return res.single() if len(batch_shape) == 0 else res
