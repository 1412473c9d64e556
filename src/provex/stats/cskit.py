"""cSKIT: global-conditional importance, H0: Y independent of Z_j given Z_-j, by betting.

Each step takes one observation (y, z_j, z_-j) and draws ``z~_j`` from P(Z_j | z_-j) with a
conditional sampler. Under H0, (y, z_j, z_-j) and (y, z~_j, z_-j) have the same distribution.
The witness compares the two through product kernels fitted on the past:

    w(y, a, c) = mean_i k(y, y_i) m(c, c_i) [l(a, z_j,i) - l(a, z~_j,i)],

and the payoff is ``g = w(y, z_j, z_-j) - w(y, z~_j, z_-j)``, antisymmetric in the swap
z_j <-> z~_j. With linear kernels ``g = y (z_j - z~_j) <z_-j, S>`` with
``S = mean_i y_i (z_j,i - z~_j,i) z_-j,i``, from running sums.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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

__all__ = ["cskit", "resolve_concepts"]

Sampler = Callable[[torch.Tensor, Sequence[int], "torch.Generator | None"], torch.Tensor]


class _ConditionalSource:
    """One observation per step; payoff from the conditional product-kernel witness."""

    def __init__(self, y: torch.Tensor, zj: torch.Tensor, zn: torch.Tensor, zc: torch.Tensor, kernel: Kernel) -> None:
        self.y, self.zj, self.zn = y.unsqueeze(-1), zj.unsqueeze(-1), zn.unsqueeze(-1)  # (B, T, 1)
        self.zc = zc  # (B, T, dc)
        self.batch = y.shape[0]
        self.kernel = kernel
        self.linear = isinstance(kernel, LinearKernel)
        self.n = 0
        self.bw = {k: BandwidthTracker(kernel) for k in ("y", "zj", "zc")}
        dc = max(zc.shape[-1], 1)
        self.s = torch.zeros(self.batch, dc, dtype=y.dtype, device=y.device)

    def _absorb(self) -> None:
        if self.linear:
            i = self.n
            diff = (self.zj[:, i] - self.zn[:, i]) * self.y[:, i]  # (B, 1)
            zc = self.zc[:, i] if self.zc.shape[-1] else torch.ones_like(diff)
            self.s += diff * zc
        self.n += 1

    def warm(self) -> None:
        self._absorb()

    def step(self) -> torch.Tensor:
        n = self.n
        y, zj, zn, zc = self.y[:, n], self.zj[:, n], self.zn[:, n], self.zc[:, n]  # (B, 1) / (B, dc)
        if self.linear:
            c = (zc * self.s).sum(-1) if zc.shape[-1] else self.s[:, 0]
            g = y[:, 0] * (zj[:, 0] - zn[:, 0]) * c / n
        else:
            k = self.kernel
            y_p, zj_p, zn_p = self.y[:, :n], self.zj[:, :n], self.zn[:, :n]
            ky = k.rows(y[:, None], y_p, self.bw["y"].update(y_p))[:, 0]  # (B, n)
            bw_j = self.bw["zj"].update(zj_p)
            new = torch.stack([zj, zn], dim=1)  # (B, 2, 1)
            kr = k.rows(new, zj_p, bw_j)  # (B, 2, n): l(zj, zj_i), l(zn, zj_i)
            kn = k.rows(new, zn_p, bw_j)  # l(zj, zn_i), l(zn, zn_i)
            a = kr[:, 0] - kn[:, 0] - kr[:, 1] + kn[:, 1]
            prod = ky * a
            if self.zc.shape[-1]:
                zc_p = self.zc[:, :n]
                prod = prod * k.rows(zc[:, None], zc_p, self.bw["zc"].update(zc_p))[:, 0]
            g = prod.mean(-1)
        self._absorb()
        return g

    def keep(self, idx: torch.Tensor) -> None:
        self.y, self.zj, self.zn, self.zc, self.s = self.y[idx], self.zj[idx], self.zn[idx], self.zc[idx], self.s[idx]
        for t in self.bw.values():
            t.keep(idx)


def resolve_concepts(j: int | Sequence[int], d: int, name: str = "j") -> tuple[list[int], bool]:
    """Concept indices and whether a list was given (adds a batch axis)."""
    many = not isinstance(j, (int,)) or isinstance(j, bool)
    if isinstance(j, bool):
        raise ValueError(f"{name} must be a concept index or a sequence of them, got {j!r}")
    js = list(j) if many else [j]  # type: ignore[arg-type]
    if not js:
        raise ValueError(f"{name} is empty")
    for v in js:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < d:
            raise ValueError(f"{name} must hold concept indices in 0..{d - 1}, got {v!r}")
    return js, many


def _call_sampler(sampler: Sampler, z: torch.Tensor, keep: list[int], gen: torch.Generator | None) -> torch.Tensor:
    fn = sampler.sample if hasattr(sampler, "sample") else sampler
    out = fn(z, keep, gen)
    if not isinstance(out, torch.Tensor) or out.shape != z.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"sampler must return a tensor of shape {tuple(z.shape)}, got {got}")
    if not bool(torch.isfinite(out).all()):
        raise ValueError("sampler returned NaN or inf values")
    return out.to(torch.float64)


def cskit(
    y: torch.Tensor,
    z: torch.Tensor,
    j: int | Sequence[int],
    sampler: Sampler,
    kernel: str | Kernel = "rbf",
    alpha: float = 0.05,
    tau_max: int = 1000,
    seed: int | None = 0,
    *,
    warmup: int = 1,
    stop_at: float | None = None,
    progress: bool = False,
) -> BettingResult | BatchBettingResult:
    """Test H0: Y independent of Z_j given the other concepts (cSKIT, Teneggi & Sulam 2024).

    Args:
        y: predictions (..., N); z: concept scores (..., N, d); leading axes broadcast.
        j: the concept to test, or a sequence of them (adds a trailing batch axis).
        sampler: ``sampler(z (n, d), keep, generator) -> (n, d)`` redrawing the concepts not in
            ``keep`` from their conditional (e.g. :class:`GaussianSampler`, :class:`KDESampler`).
        kernel, alpha, tau_max, seed, warmup, stop_at, progress: as in :func:`skit`; each step
            consumes one observation (N >= tau_max) and the sampler is called only for the
            first tau_max observations (after shuffling).

    Returns:
        :class:`BettingResult` for y (N,), z (N, d) and an int ``j``; else a batch result.
    """
    alpha = check_alpha(alpha)
    tau_max, warmup = check_budget(tau_max, warmup)
    stop = check_stop(stop_at, alpha)
    k = get_kernel(kernel)
    y = as_series(y, "y")
    z = as_series(z, "z", min_dim=2)
    if y.device != z.device:
        raise ValueError(f"y and z must be on the same device, got {y.device} and {z.device}")
    if y.shape[-1] != z.shape[-2]:
        raise ValueError(f"y and z must have the same length, got {y.shape[-1]} and {z.shape[-2]} (z is (..., N, d))")
    n, d = z.shape[-2], z.shape[-1]
    js, many = resolve_concepts(j, d)
    if n < tau_max:
        raise ValueError(f"cskit uses 1 observation per step: tau_max={tau_max} needs N >= {tau_max}, got N={n}")
    try:
        base = torch.broadcast_shapes(y.shape[:-1], z.shape[:-2])
    except RuntimeError:
        raise ValueError(f"y and z batch shapes do not broadcast: {tuple(y.shape)} and {tuple(z.shape)}") from None
    yb = y.expand(*base, n).reshape(-1, n)
    zb = z.expand(*base, n, d).reshape(-1, n, d)
    gen = make_generator(seed, y.device)
    perm = shuffle_rows(gen, n, yb.shape[0], y.device)
    if perm is not None:
        yb = yb.gather(1, perm)
        zb = zb.gather(1, perm[..., None].expand(-1, -1, d))
    yb, zb = yb[:, :tau_max], zb[:, :tau_max]
    b0 = yb.shape[0]
    ys, zjs, zns, zcs = [], [], [], []
    for jj in js:
        others = [i for i in range(d) if i != jj]
        null = _call_sampler(sampler, zb.reshape(-1, d), others, gen).reshape(b0, tau_max, d)
        ys.append(yb)
        zjs.append(zb[..., jj])
        zns.append(null[..., jj])
        zcs.append(zb[..., others])
    # batch layout (*base, len(js)): stack concepts last
    stack = lambda ts: torch.stack(ts, dim=1).reshape(b0 * len(js), *ts[0].shape[1:])  # noqa: E731
    source = _ConditionalSource(stack(ys), stack(zjs), stack(zns), stack(zcs).contiguous(), k)
    shape = (*base, len(js)) if many else tuple(base)
    res = run_sequential_test(
        source,
        tau_max=tau_max,
        warmup=warmup,
        alpha=alpha,
        stop_at=stop,
        batch_shape=shape,
        test="cskit",
        kernel=k.name,
        device=y.device,
        progress=progress,
    )
    return res.single() if len(shape) == 0 else res
