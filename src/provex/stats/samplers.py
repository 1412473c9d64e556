"""Conditional samplers: redraw the features outside ``keep`` from P(X_rest | X_keep = x_keep).

Every sampler is called as ``sampler(x, keep, generator)`` with ``x`` of shape (n, ...) (one
row per draw) and returns a tensor of the same shape in which the features listed in
``keep`` are unchanged and the others are a fresh draw. SHAP-XRT, cSKIT and xSKIT only ever
call samplers this way, so any callable with that signature plugs in.

- :class:`GaussianSampler`: exact conditionals of a multivariate Gaussian (Schur complement);
  :func:`provex.stats.synthetic.synthetic_sampler` is the one of the synthetic experiment.
- :class:`KDESampler`: nonparametric conditionals from a table of concept scores: Gaussian
  weights on the distance between ``x_keep`` and each table row's kept features, with the
  weight bandwidth chosen per row so that the effective sample size
  ``(sum w)^2 / sum w^2`` equals ``n_eff``; then a weighted Gaussian KDE (Scott's factor
  ``n_eff^(-1/(d+4))`` on the weighted covariance) over the other features.
  ``sample_embedding`` lifts a concept draw to an embedding by the nearest neighbour in the
  table (the embedding of the table row with the closest concept vector).
- :class:`RegionSampler`: image features are regions (see :mod:`provex.stats.regions`); the
  pixels of regions outside ``keep`` come from a reference distribution (a per-pixel Gaussian,
  e.g. the model card's training mean and variance, or random reference images). This is the
  exact conditional when regions are independent under that distribution, and otherwise the
  usual "interventional" masking of Shapley explanations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["ConditionalSampler", "GaussianSampler", "KDESampler", "RegionSampler", "check_keep"]


def check_keep(keep: Sequence[int], n_features: int, name: str = "keep") -> list[int]:
    """Sorted, unique feature indices within range."""
    try:
        out = sorted({int(k) for k in keep})
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of feature indices, got {keep!r}") from None
    bad = [k for k in out if not 0 <= k < n_features]
    if bad:
        raise ValueError(f"{name} has indices outside 0..{n_features - 1}: {bad}")
    return out


class ConditionalSampler:
    """Base class: ``num_features`` and ``sample(x, keep, generator)`` (also ``__call__``)."""

    num_features: int

    def sample(self, x: torch.Tensor, keep: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, keep: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
        return self.sample(x, keep, generator)


class GaussianSampler(ConditionalSampler):
    """Exact conditionals of N(mean, cov) over d features; x has shape (n, d)."""

    def __init__(self, mean: torch.Tensor | Sequence[float], cov: torch.Tensor | Sequence[Sequence[float]]) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float64)
        self.cov = torch.as_tensor(cov, dtype=torch.float64)
        d = self.mean.numel()
        if self.mean.ndim != 1 or self.cov.shape != (d, d):
            raise ValueError(
                f"mean must be (d,) and cov (d, d), got {tuple(self.mean.shape)} and {tuple(self.cov.shape)}"
            )
        if not torch.allclose(self.cov, self.cov.T):
            raise ValueError("cov must be symmetric")
        if float(torch.linalg.eigvalsh(self.cov).min()) < -1e-10:
            raise ValueError("cov must be positive semi-definite")
        self.num_features = d
        self._cache: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def conditional(self, keep: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(A, b, L)`` with rest | keep ~ N(b + A x_keep, L L^T)."""
        key = tuple(check_keep(keep, self.num_features))
        if key not in self._cache:
            d = self.num_features
            rest = [i for i in range(d) if i not in key]
            mu, s = self.mean, self.cov
            if key:
                s_kk = s[list(key)][:, list(key)]
                s_rk = s[rest][:, list(key)]
                a = torch.linalg.solve(s_kk, s_rk.T).T  # (r, k)
                b = mu[rest] - a @ mu[list(key)]
                c = s[rest][:, rest] - a @ s_rk.T
            else:
                a = torch.zeros(len(rest), 0, dtype=torch.float64)
                b, c = mu[rest], s[rest][:, rest]
            c = (c + c.T) / 2
            jitter = 1e-12 * max(1.0, float(c.diagonal().abs().max())) if len(rest) else 0.0
            chol = torch.linalg.cholesky(c + jitter * torch.eye(len(rest), dtype=torch.float64)) if rest else c
            self._cache[key] = (a, b, chol)
        return self._cache[key]

    def sample(self, x: torch.Tensor, keep: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"x must have shape (n, {self.num_features}), got {tuple(x.shape)}")
        keep = check_keep(keep, self.num_features)
        rest = [i for i in range(self.num_features) if i not in keep]
        out = x.clone()
        if not rest:
            return out
        a, b, chol = (t.to(device=x.device) for t in self.conditional(keep))
        eps = torch.randn(x.shape[0], len(rest), generator=generator, device=x.device, dtype=torch.float64)
        xk = x[:, keep].to(torch.float64)
        draw = b + xk @ a.T + eps @ chol.T
        out[:, rest] = draw.to(out.dtype)
        return out

    def draw(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """``n`` joint draws (n, d)."""
        return self.sample(torch.zeros(n, self.num_features, dtype=torch.float64, device=device), [], generator)


class KDESampler(ConditionalSampler):
    """Kernel-weighted KDE conditionals over a table of concept scores (see module docstring).

    Args:
        concepts: (n, d) table (e.g. concept scores of training images).
        embeddings: optional (n, D) embeddings of the same rows, for :meth:`sample_embedding`.
        n_eff: effective sample size the weight bandwidth is tuned to (default min(2000, n/10)).
        chunk: conditioning rows processed at once (memory: chunk * n floats).
        search_rows: the weight bandwidth is tuned on a fixed random subset of this many table
            rows (with the target n_eff scaled to it), then applied to the whole table.
    """

    def __init__(
        self,
        concepts: torch.Tensor,
        embeddings: torch.Tensor | None = None,
        n_eff: float | None = None,
        chunk: int = 512,
        search_rows: int = 4096,
    ) -> None:
        z = torch.as_tensor(concepts, dtype=torch.float64)
        if z.ndim != 2 or z.shape[0] < 2:
            raise ValueError(f"concepts must be an (n, d) table with n >= 2, got shape {tuple(z.shape)}")
        if not bool(torch.isfinite(z).all()):
            raise ValueError("concepts contains NaN or inf values")
        if embeddings is not None and (embeddings.ndim != 2 or embeddings.shape[0] != z.shape[0]):
            raise ValueError(f"embeddings must be ({z.shape[0]}, D), got {tuple(embeddings.shape)}")
        n = z.shape[0]
        self.n_eff = float(n_eff) if n_eff is not None else float(max(2.0, min(2000.0, n / 10)))
        if not 1.0 < self.n_eff < n:
            raise ValueError(f"n_eff must be in (1, {n}) for a table of {n} rows, got {self.n_eff}")
        self.table = z
        self.embeddings = embeddings
        self.num_features = z.shape[1]
        self.chunk = chunk
        gen = torch.Generator().manual_seed(0)
        self._search_rows = (
            torch.arange(n) if n <= search_rows else torch.randperm(n, generator=gen)[:search_rows].sort().values
        )

    def _weights(self, zk: torch.Tensor, keep: list[int]) -> torch.Tensor:
        """Normalised weights (m, n) over table rows for conditioning values zk (m, k)."""
        table = self.table.to(zk.device)
        n = table.shape[0]
        if not keep:
            return torch.full((zk.shape[0], n), 1.0 / n, dtype=torch.float64, device=zk.device)
        # The bandwidth is found by bisection on log(bandwidth) so that n_eff(weights) = target
        # (n_eff grows with the bandwidth), on a fixed random subset of the table with the
        # target scaled by its size (n_eff is proportional to the number of rows), bracketed
        # around the distance to the n_eff-th nearest row.
        sub = self._search_rows.to(zk.device)
        target = self.n_eff * sub.numel() / n
        d2s = torch.cdist(zk, table[sub][:, keep]).square()
        k = min(sub.numel(), max(1, round(target)))
        guess = d2s.kthvalue(k, dim=1).values.clamp_min(1e-12).sqrt()
        guess = torch.where(guess > 1e-9, guess, d2s.amax(1).clamp_min(1e-12).sqrt())
        lo, hi = torch.log(guess / 8), torch.log(guess * 8)
        for _ in range(6):  # widen the bracket where needed (rare)
            low_bad = self._neff(d2s, lo) > target
            if not bool(low_bad.any()):
                break
            lo = torch.where(low_bad, lo - 3.0, lo)
        for _ in range(6):
            high_bad = self._neff(d2s, hi) < target
            if not bool(high_bad.any()):
                break
            hi = torch.where(high_bad, hi + 3.0, hi)
        for _ in range(14):
            mid = (lo + hi) / 2
            up = self._neff(d2s, mid) < target
            lo = torch.where(up, mid, lo)
            hi = torch.where(up, hi, mid)
        d2 = d2s if sub.numel() == n else torch.cdist(zk, table[:, keep]).square()  # (m, n)
        w = self._gauss(d2, (lo + hi) / 2)
        return w / w.sum(1, keepdim=True)

    @classmethod
    def _neff(cls, d2: torch.Tensor, log_bw: torch.Tensor) -> torch.Tensor:
        w = cls._gauss(d2, log_bw)
        return w.sum(1).square() / w.square().sum(1)

    @staticmethod
    def _gauss(d2: torch.Tensor, log_bw: torch.Tensor) -> torch.Tensor:
        e = -d2 / (2.0 * torch.exp(2.0 * log_bw))[:, None]
        return torch.exp(e - e.amax(1, keepdim=True))

    def _sample_rows(
        self, x: torch.Tensor, keep: list[int], generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Concept draws (m, d) and the table row each draw's KDE component came from."""
        m, d = x.shape
        rest = [i for i in range(d) if i not in keep]
        out = x.to(torch.float64).clone()
        src = torch.zeros(m, dtype=torch.long, device=x.device)
        if not rest:
            return out, src
        table = self.table.to(x.device)
        uniq, inverse = (
            torch.unique(out[:, keep], dim=0, return_inverse=True)
            if keep
            else (out[:1, []], torch.zeros(m, dtype=torch.long, device=x.device))
        )
        order = torch.argsort(inverse, stable=True)
        counts = torch.bincount(inverse, minlength=uniq.shape[0])
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty(m, dtype=torch.long, device=x.device)
        rank[order] = torch.arange(m, device=x.device) - starts[inverse[order]]
        for c0 in range(0, uniq.shape[0], self.chunk):
            c1 = min(c0 + self.chunk, uniq.shape[0])
            w = self._weights(uniq[c0:c1], keep)  # (c, n)
            rows_mask = (inverse >= c0) & (inverse < c1)
            rows = rows_mask.nonzero().squeeze(1)
            kmax = int(counts[c0:c1].max())
            picks = torch.multinomial(w, kmax, replacement=True, generator=generator)  # (c, kmax)
            chosen = picks[inverse[rows] - c0, rank[rows]]
            # weighted covariance of the resampled features and Scott's factor from n_eff
            vals = table[:, rest]  # (n, r)
            mu = w @ vals  # (c, r)
            second = torch.einsum("cn,nr,ns->crs", w, vals, vals)
            cov = second - mu[:, :, None] * mu[:, None, :]
            neff = 1.0 / w.square().sum(1)
            factor = neff.pow(-1.0 / (len(rest) + 4))
            cov = cov * factor.square()[:, None, None]
            jitter = 1e-10 * cov.diagonal(dim1=1, dim2=2).amax(1).clamp_min(1e-12)
            eye = torch.eye(len(rest), dtype=torch.float64, device=x.device)
            chol = torch.linalg.cholesky(cov + jitter[:, None, None] * eye)
            eps = torch.randn(rows.numel(), len(rest), generator=generator, dtype=torch.float64, device=x.device)
            noise = torch.einsum("mrs,ms->mr", chol[inverse[rows] - c0], eps)
            out[rows[:, None], torch.tensor(rest, device=x.device)[None, :]] = vals[chosen] + noise
            src[rows] = chosen
        return out, src

    def sample(self, x: torch.Tensor, keep: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"x must have shape (n, {self.num_features}), got {tuple(x.shape)}")
        out, _ = self._sample_rows(x, check_keep(keep, self.num_features), generator)
        return out.to(x.dtype)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the table row nearest to each concept vector z (m, d)."""
        table = self.table.to(z.device)
        idx = torch.empty(z.shape[0], dtype=torch.long, device=z.device)
        for c0 in range(0, z.shape[0], 4096):
            idx[c0 : c0 + 4096] = torch.cdist(z[c0 : c0 + 4096].to(torch.float64), table).argmin(1)
        return idx

    def sample_embedding(
        self, x: torch.Tensor, keep: Sequence[int], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Concept draws lifted to embeddings (m, D) by the nearest neighbour in the table."""
        if self.embeddings is None:
            raise ValueError("sample_embedding needs the table's embeddings: KDESampler(concepts, embeddings=H)")
        z = self.sample(x, keep, generator)
        return self.embeddings.to(x.device)[self.nearest(z)]


class RegionSampler(ConditionalSampler):
    """Images (n, C, H, W) whose features are regions given as masks (R, H, W).

    ``fill`` is where the pixels of dropped regions come from: a pair ``(mean, var)`` of
    (C, H, W) tensors (independent Gaussian pixels, clamped to ``clamp``), a tensor of
    reference images (m, C, H, W) (a random one per draw), or a callable
    ``fill(n, generator) -> (n, C, H, W)``.
    """

    def __init__(
        self,
        regions: torch.Tensor,
        fill: tuple[torch.Tensor, torch.Tensor] | torch.Tensor | Callable[[int, torch.Generator | None], torch.Tensor],
        clamp: tuple[float, float] | None = (0.0, 1.0),
    ) -> None:
        if regions.ndim != 3 or regions.dtype != torch.bool:
            raise ValueError(f"regions must be a bool tensor (R, H, W), got {regions.dtype} {tuple(regions.shape)}")
        if bool((regions.sum(0) > 1).any()):
            raise ValueError("regions must not overlap")
        self.regions = regions
        self.num_features = regions.shape[0]
        self.fill = fill
        self.clamp = clamp

    def _draw_fill(self, n: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        f = self.fill
        if isinstance(f, tuple):
            mean, var = (t.to(device=like.device, dtype=like.dtype) for t in f)
            eps = torch.randn((n, *like.shape[1:]), generator=generator, device=like.device, dtype=like.dtype)
            out = mean + var.clamp_min(0).sqrt() * eps
            return out.clamp(*self.clamp) if self.clamp is not None else out
        if isinstance(f, torch.Tensor):
            idx = torch.randint(0, f.shape[0], (n,), generator=generator, device=f.device)
            return f[idx].to(device=like.device, dtype=like.dtype)
        out = f(n, generator)
        if out.shape != (n, *like.shape[1:]):
            raise ValueError(f"fill returned shape {tuple(out.shape)}, expected {(n, *like.shape[1:])}")
        return out.to(device=like.device, dtype=like.dtype)

    def sample(self, x: torch.Tensor, keep: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[-2:] != self.regions.shape[-2:]:
            h, w = self.regions.shape[1:]
            raise ValueError(f"x must be (n, C, {h}, {w}), got {tuple(x.shape)}")
        keep = check_keep(keep, self.num_features)
        mask = self.regions[keep].any(0) if keep else torch.zeros(self.regions.shape[1:], dtype=torch.bool)
        mask = mask.to(x.device)
        if bool(mask.all()):
            return x.clone()
        fill = self._draw_fill(x.shape[0], x, generator)
        return torch.where(mask[None, None], x, fill)
