"""xSKIT: local-conditional importance for one input, by betting on an MMD witness.

For one input with concepts z, a concept j and a conditioning set C (j not in C), the null is
H0: g(H~_{C+j}) has the same distribution as g(H~_C), with H~_S ~ P(H | Z_S = z_S): "the
classifier's output does not change if we also fix concept j". Each step draws one sample
from each side, ``y ~ g(H~_{C+j})`` and ``y~ ~ g(H~_C)``; the witness is the difference of
the two streams' kernel mean embeddings fitted on the past,

    w(u) = mean_i k(u, y_i) - mean_i k(u, y~_i),    g_t = w(y_t) - w(y~_t),

antisymmetric in swapping the two draws. With the linear kernel
``g_t = (y_t - y~_t)(mean y_past - mean y~_past)``.
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
)
from provex.stats.cskit import resolve_concepts
from provex.stats.kernels import Kernel, LinearKernel, get_kernel
from provex.stats.samplers import check_keep

__all__ = ["xskit", "xskit_scores"]


class _TwoSampleSource:
    """One pair (y, y~) per step; payoff from the MMD witness on past pairs."""

    def __init__(self, y: torch.Tensor, yn: torch.Tensor, kernel: Kernel) -> None:
        self.y, self.yn = y.unsqueeze(-1), yn.unsqueeze(-1)  # (B, T, 1)
        self.batch = y.shape[0]
        self.kernel = kernel
        self.linear = isinstance(kernel, LinearKernel)
        self.n = 0
        self.bw = BandwidthTracker(kernel)
        self.sy = torch.zeros(self.batch, dtype=y.dtype, device=y.device)
        self.syn = torch.zeros_like(self.sy)

    def _absorb(self) -> None:
        if self.linear:
            self.sy += self.y[:, self.n, 0]
            self.syn += self.yn[:, self.n, 0]
        self.n += 1

    def warm(self) -> None:
        self._absorb()

    def step(self) -> torch.Tensor:
        n = self.n
        y, yn = self.y[:, n, 0], self.yn[:, n, 0]
        if self.linear:
            g = (y - yn) * (self.sy - self.syn) / n
        else:
            y_p, yn_p = self.y[:, :n], self.yn[:, :n]
            bw = self.bw.update(torch.cat([y_p, yn_p], dim=1))
            new = torch.stack([y, yn], dim=1)[..., None]  # (B, 2, 1)
            w = self.kernel.rows(new, y_p, bw).mean(-1) - self.kernel.rows(new, yn_p, bw).mean(-1)  # (B, 2)
            g = w[:, 0] - w[:, 1]
        self._absorb()
        return g

    def keep(self, idx: torch.Tensor) -> None:
        self.y, self.yn, self.sy, self.syn = self.y[idx], self.yn[idx], self.sy[idx], self.syn[idx]
        self.bw.keep(idx)


def xskit_scores(
    y: torch.Tensor,
    y_null: torch.Tensor,
    kernel: str | Kernel = "rbf",
    alpha: float = 0.05,
    tau_max: int = 1000,
    *,
    warmup: int = 1,
    stop_at: float | None = None,
    progress: bool = False,
    test: str = "xskit",
) -> BettingResult | BatchBettingResult:
    """The two-sample betting test behind xSKIT on precomputed score streams (..., N) each.

    ``y`` are classifier scores under the test distribution, ``y_null`` under the null one;
    both must be i.i.d. draws in their given order. N >= tau_max.
    """
    alpha = check_alpha(alpha)
    tau_max, warmup = check_budget(tau_max, warmup)
    stop = check_stop(stop_at, alpha)
    k = get_kernel(kernel)
    y = as_series(y, "y")
    yn = as_series(y_null, "y_null")
    if y.shape[-1] != yn.shape[-1]:
        raise ValueError(f"y and y_null must have the same length, got {y.shape[-1]} and {yn.shape[-1]}")
    if y.device != yn.device:
        raise ValueError(f"y and y_null must be on the same device, got {y.device} and {yn.device}")
    n = y.shape[-1]
    if n < tau_max:
        raise ValueError(f"xskit uses 1 pair per step: tau_max={tau_max} needs N >= {tau_max}, got N={n}")
    try:
        shape = torch.broadcast_shapes(y.shape[:-1], yn.shape[:-1])
    except RuntimeError:
        raise ValueError(f"y and y_null batch shapes do not broadcast: {tuple(y.shape)}, {tuple(yn.shape)}") from None
    yb = y.expand(*shape, n).reshape(-1, n)[:, :tau_max].contiguous()
    ynb = yn.expand(*shape, n).reshape(-1, n)[:, :tau_max].contiguous()
    res = run_sequential_test(
        _TwoSampleSource(yb, ynb, k),
        tau_max=tau_max,
        warmup=warmup,
        alpha=alpha,
        stop_at=stop,
        batch_shape=shape,
        test=test,
        kernel=k.name,
        device=y.device,
        progress=progress,
    )
    return res.single() if len(shape) == 0 else res


def _scores(classifier: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, n: int) -> torch.Tensor:
    with torch.no_grad():
        out = classifier(x)
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"classifier must return a tensor, got {type(out).__name__}")
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.shape != (n,):
        raise ValueError(f"classifier must return one score per sample, shape ({n},), got {tuple(out.shape)}")
    return out.to(torch.float64)


def xskit(
    z: torch.Tensor,
    j: int | Sequence[int],
    C: Sequence[int] | Sequence[Sequence[int]],
    sampler: Callable[[torch.Tensor, Sequence[int], torch.Generator | None], torch.Tensor],
    classifier: Callable[[torch.Tensor], torch.Tensor],
    kernel: str | Kernel = "rbf",
    alpha: float = 0.05,
    tau_max: int = 1000,
    seed: int | None = 0,
    *,
    repeats: int | None = None,
    warmup: int = 1,
    stop_at: float | None = None,
    progress: bool = False,
) -> BettingResult | BatchBettingResult:
    """Test whether concept j matters for one input given the concepts in C (xSKIT).

    Args:
        z: the input's concept vector (d,).
        j: the concept to test, or a sequence (adds a trailing batch axis).
        C: the conditioning set (j not in C), or one set per concept in ``j``.
        sampler: ``sampler(z (n, d), keep, generator)`` returning n draws from
            P(H | Z_keep = z_keep), anything ``classifier`` accepts (e.g. concepts from a
            :class:`GaussianSampler`, or embeddings from ``KDESampler.sample_embedding``).
        classifier: maps a batch of draws to one score each (n,), e.g. a class logit.
        repeats: independent repetitions of the whole test (adds a leading batch axis).
        kernel, alpha, tau_max, seed, warmup, stop_at, progress: as in :func:`skit`; the
            sampler is called for 2 * tau_max draws per test.
    """
    z = as_series(z, "z")
    if z.ndim != 1:
        raise ValueError(f"z must be one input's concept vector (d,), got shape {tuple(z.shape)}")
    d = z.shape[0]
    js, many = resolve_concepts(j, d)
    if len(C) and not isinstance(next(iter(C)), int):
        sets = [check_keep(c, d, "C") for c in C]  # type: ignore[arg-type]
        if len(sets) != len(js):
            raise ValueError(f"C has {len(sets)} conditioning sets for {len(js)} concepts in j")
    else:
        sets = [check_keep(C, d, "C")] * len(js)  # type: ignore[arg-type]
    for jj, cc in zip(js, sets):
        if jj in cc:
            raise ValueError(f"C must not contain the tested concept j={jj}")
    tau_max, _ = check_budget(tau_max, warmup)
    if repeats is not None and (isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1):
        raise ValueError(f"repeats must be a positive integer or None, got {repeats!r}")
    r = repeats or 1
    gen = make_generator(seed, z.device)
    m = r * tau_max
    zrep = z[None].expand(m, d).contiguous()
    ys, yns = [], []
    for jj, cc in zip(js, sets):
        y = _scores(classifier, sampler(zrep, sorted({*cc, jj}), gen), m)
        yn = _scores(classifier, sampler(zrep, cc, gen), m)
        ys.append(y.reshape(r, tau_max))
        yns.append(yn.reshape(r, tau_max))
    y_all, yn_all = torch.stack(ys, 1), torch.stack(yns, 1)  # (r, J, T)
    if not many:
        y_all, yn_all = y_all[:, 0], yn_all[:, 0]
    if repeats is None:
        y_all, yn_all = y_all[0], yn_all[0]
    return xskit_scores(
        y_all, yn_all, kernel, alpha, tau_max, warmup=warmup, stop_at=stop_at, progress=progress, test="xskit"
    )
