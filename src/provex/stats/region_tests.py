"""Is this highlighted region really important? Error-controlled tests of the regions of any map.

For an image x, its target class c and a region R (a set of pixels, all channels), the null
hypothesis is "the model's output does not depend on R given the context C":

    H0:  f(x~_{C+R})  has the law of  f(x~_C),

where ``x~_S`` keeps the pixels of S and redraws every other pixel from the reference
distribution (or a conditional sampler), and ``f`` is the target class's score (SHAP-XRT's
local null, DESIGN.md sections 4 and 8). The context says what R is tested against:

- ``"rest"`` (default): C = every pixel outside R. Then ``x~_{C+R} = x``: the statistic is
  the model's score on the image itself and the null draws refill R only ("does removing R
  change the output?"). A model blind to R gives exactly the same output for every draw;
  ties count against rejection, so its p-value is 1 and its wealth stays 1.
- ``"empty"``: C = {}: R alone against nothing ("does R alone carry the prediction?").
- ``"others"``: C = the other tested regions of the image; pixels outside every tested
  region are redrawn on both sides ("does R add to the rest of the map?").

The score ``f`` (``score=``): ``"log-probability"`` (default), the log-softmax of the target
class computed in float64 from the model's outputs, which does not saturate for confident
predictions and for two classes is a monotone function of the logit margin; ``"probability"``
(the softmax probability: the same ranks, so the same XRT p-values at M = 1) or ``"logit"``.
Draws whose outputs equal the image's own outputs up to float rounding (every output within
64 float ulps of the largest) get exactly the image's score: float noise from batch
composition never counts as evidence.

Tests (``test=``):

- ``"xrt"``: SHAP-XRT's randomisation test. T = f(x) (context "rest") or the mean of M
  draws of ``f(x~_{C+R})``; K null statistics, each the mean of M draws of ``f(x~_C)``;
  ``p = (1 + #{k : T - T~_k <= 0}) / (K + 1)`` (``alternative="greater"``: removing R lowers
  the score) or, two-sided, ``p = (1 + #{k : |T~_k - m| >= |T - m|}) / (K + 1)`` with m the
  mean of all K + 1 statistics. Cost per region: K * M null draws (+ M with a random
  statistic). ``K=None`` picks ``max(99, ceil(m * c / alpha) - 1)`` for an image with m tested
  regions (c = 1, or the harmonic number H_m for BY), so a region can be rejected on its own
  under the multiplicity control.
- ``"betting"``: a sequential test by betting on pairs ``(y_t, y~_t)``, one draw of each side
  per step, with the project's wealth process (tanh bets, online Newton step fractions,
  :mod:`provex.stats.betting`). Payoff ``y_t - y~_t`` (``"greater"``) or xSKIT's MMD witness
  (``"two-sided"``, ``kernel=``). Draws are made ``chunk`` steps at a time for the tests
  still running; a test stops as soon as its wealth reaches its stopping level (1/alpha, or
  m/alpha under e-BH over m regions) or after ``tau_max`` steps, so clear regions cost few
  model calls. The e-value is the wealth where the test stopped.

Multiplicity (``fdr=``): ``True`` / ``"image"``: over the regions of each image; ``"dataset"``:
over every region of every image passed; ``False``: none (each region at alpha). p-values use
Benjamini-Hochberg (``fdr_method="bh"``; valid here because each region has its own independent
draws given the image) or Benjamini-Yekutieli (``"by"``, any dependence); e-values use e-BH.

Randomness: the draws of region r of image i come from their own streams, seeded
``derive(seed_i, r, 0)`` (null side) and ``derive(seed_i, r, 1)`` (the statistic's side) with
``seed_i`` from :func:`provex.seeding.image_seeds`; with the marginal reference each call
draws ``fill = mean + sqrt(var) * randn((n, C, H, W))`` (n = K * M for XRT, ``chunk`` per
betting step block) and the kept pixels are copied from x. An image's result is the same
alone and in any batch (except under dataset-level control, which pools the batch by design).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from provex.checks import check_images, resolve_target
from provex.explanation_data import ExplanationData
from provex.reference import Reference, resolve_reference
from provex.seeding import derive, generator, image_seeds
from provex.stats._engine import check_alpha, run_sequential_test
from provex.stats.fdr import ebh
from provex.stats.kernels import Kernel, get_kernel
from provex.stats.region_result import RegionTestResult
from provex.stats.regions import REGION_KINDS, as_region_masks, map_regions
from provex.stats.xskit import _TwoSampleSource

__all__ = ["CONTEXTS", "SCORES", "TESTS", "MaskSampler", "test_regions"]

TESTS = ("xrt", "betting")
CONTEXTS = ("rest", "empty", "others")
SCORES = ("log-probability", "probability", "logit")
ALTERNATIVES = ("greater", "two-sided")
FDR_METHODS = ("bh", "by")
TIE_ULPS = 64
"""Outputs within this many float ulps (of the largest output) of the image's own count as equal."""

MaskSampler = Callable[[torch.Tensor, torch.Tensor, "torch.Generator | None"], torch.Tensor]
"""``sampler(x (n, C, H, W), keep (n, H, W) bool, generator) -> (n, C, H, W)``: redraws the
pixels outside ``keep`` from P(X_rest | X_keep = x_keep) (a conditional fill)."""

RDE_METHODS = ("rc-rde", "mr-rde", "l-rde")


# ----- options -----


def _choice(value: object, allowed: Sequence[str], name: str) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return str(value)


def _positive(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _fdr_scope(fdr: object) -> str:
    if fdr is True or fdr == "image":
        return "image"
    if fdr is False or fdr is None or fdr == "none":
        return "none"
    if fdr == "dataset":
        return "dataset"
    raise ValueError(f"fdr must be True / 'image', 'dataset' or False / 'none', got {fdr!r}")


def _auto_regions(explanation: ExplanationData | torch.Tensor | None) -> tuple[str, dict[str, Any]]:
    """The region kind that suits a map: components of RDE masks, h-Shap's cells, else top-k blocks."""
    if not isinstance(explanation, ExplanationData):
        return "top-k", {}
    method = explanation.method.split("+")[0]
    if method in RDE_METHODS:
        return "components", {}
    if method == "h-shap":
        size = explanation.info.get("min_size")
        return "cells", ({"grid": int(size)} if isinstance(size, int) else {})
    return "top-k", {}


# ----- the draws: fills, model passes, scores -----


class _Evaluator:
    """Fills regions, runs the model in full batches and turns outputs into target scores."""

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        target: torch.Tensor | None,
        score: str,
        reference: Reference | None,
        sampler: MaskSampler | None,
        batch_size: int,
    ) -> None:
        self.model, self.x, self.score_kind, self.batch_size = model, x, score, batch_size
        self.sampler = sampler
        if reference is not None:
            self.mean = reference.mean
            self.std = reference.var.clamp_min(0).sqrt()
            self.per_image = reference.per_image
        self.calls = 0
        logits = torch.cat([self._forward(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
        if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(f"model must map (N, C, H, W) to (N, classes) logits, got output {tuple(logits.shape)}")
        self.target = resolve_target(target, logits)
        self.base_logits = logits
        self.base_score = self.scores(logits, torch.arange(x.shape[0], device=x.device), snap=False)
        eps = torch.finfo(logits.dtype).eps if logits.is_floating_point() else 0.0
        self.tol = TIE_ULPS * eps * (1.0 + logits.abs().amax(1).double())

    def _forward(self, xb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = self.model(xb)
        self.calls += xb.shape[0]
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"model must return a tensor of logits, got {type(out).__name__}")
        if not bool(torch.isfinite(out).all()):
            raise ValueError("model returned NaN or inf outputs")
        return out

    def scores(self, logits: torch.Tensor, images: torch.Tensor, snap: bool = True) -> torch.Tensor:
        """Target scores (float64) of ``logits`` of draws of ``images``; equal outputs snap to the image's."""
        z = logits.double()
        tgt = self.target[images][:, None]
        if self.score_kind == "logit":
            s = z.gather(1, tgt)[:, 0]
        elif self.score_kind == "probability":
            s = torch.softmax(z, 1).gather(1, tgt)[:, 0]
        else:
            s = torch.log_softmax(z, 1).gather(1, tgt)[:, 0]
        if snap:
            same = (logits - self.base_logits[images]).abs().amax(1).double() <= self.tol[images]
            s = torch.where(same, self.base_score[images], s)
        return s

    def fill(self, image: int, keep: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` draws of image ``image`` with the pixels outside ``keep`` (H, W) redrawn."""
        xi = self.x[image]
        if self.sampler is None:
            mean = self.mean[image] if self.per_image else self.mean
            std = self.std[image] if self.per_image else self.std
            eps = torch.randn((n, *xi.shape), generator=gen, device=xi.device, dtype=xi.dtype)
            out = mean + std * eps
        else:
            out = self.sampler(xi.expand(n, *xi.shape).clone(), keep.expand(n, *keep.shape).clone(), gen)
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != (n, *xi.shape):
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(f"sampler must return ({n}, {', '.join(map(str, xi.shape))}) draws, got {got}")
            if not bool(torch.isfinite(out).all()):
                raise ValueError("sampler returned NaN or inf values")
            out = out.to(device=xi.device, dtype=xi.dtype)
        return torch.where(keep, xi, out)

    def run(
        self,
        requests: Sequence[tuple[int, torch.Tensor, int, torch.Generator]],
        progress: tqdm | None = None,
    ) -> list[torch.Tensor]:
        """Scores of ``n`` draws for each request ``(image, keep, n, generator)``, batched across requests."""
        out = [torch.empty(n, dtype=torch.float64, device=self.x.device) for _, _, n, _ in requests]
        pending: list[torch.Tensor] = []
        where: list[tuple[int, int, int, int]] = []  # (request, start, count, image)
        size = 0

        def flush() -> None:
            nonlocal size
            if not pending:
                return
            xb = torch.cat(pending)
            images = torch.cat([torch.full((c,), im, dtype=torch.long) for _, _, c, im in where]).to(xb.device)
            s = self.scores(self._forward(xb), images)
            pos = 0
            for q, start, c, _ in where:
                out[q][start : start + c] = s[pos : pos + c]
                pos += c
            if progress is not None:
                progress.update(xb.shape[0])
            pending.clear()
            where.clear()
            size = 0

        for q, (image, keep, n, gen) in enumerate(requests):
            if n == 0:
                continue
            draws = self.fill(image, keep, n, gen)
            start = 0
            while start < n:
                take = min(n - start, self.batch_size - size)
                pending.append(draws[start : start + take])
                where.append((q, start, take, image))
                size += take
                start += take
                if size >= self.batch_size:
                    flush()
        flush()
        return out


@dataclass
class _Rows:
    """The tested (image, region) pairs, flattened, with their keep masks and random streams."""

    image: list[int]
    region: list[int]
    keep_null: list[torch.Tensor]
    keep_alt: list[torch.Tensor]
    gen_null: list[torch.Generator]
    gen_alt: list[torch.Generator]

    def __len__(self) -> int:
        return len(self.image)


def _rows(masks: torch.Tensor, valid: torch.Tensor, context: str, seeds: list[int], device: torch.device) -> _Rows:
    rows = _Rows([], [], [], [], [], [])
    for i in range(masks.shape[0]):
        union = masks[i][valid[i]].any(0)
        for r in range(masks.shape[1]):
            if not bool(valid[i, r]):
                continue
            m = masks[i, r]
            if context == "rest":
                keep_null, keep_alt = ~m, torch.ones_like(m)
            elif context == "empty":
                keep_null, keep_alt = torch.zeros_like(m), m
            else:
                keep_null, keep_alt = union & ~m, union
            rows.image.append(i)
            rows.region.append(r)
            rows.keep_null.append(keep_null.to(device))
            rows.keep_alt.append(keep_alt.to(device))
            rows.gen_null.append(generator(derive(seeds[i], r, 0), device))
            rows.gen_alt.append(generator(derive(seeds[i], r, 1), device))
    return rows


# ----- XRT -----


def _xrt(
    ev: _Evaluator,
    rows: _Rows,
    ks: list[int],
    m_draws: int,
    alt_random: bool,
    alternative: str,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """p-values, statistics and model calls per row."""
    requests: list[tuple[int, torch.Tensor, int, torch.Generator]] = []
    for b in range(len(rows)):
        i = rows.image[b]
        requests.append((i, rows.keep_null[b], ks[b] * m_draws, rows.gen_null[b]))
        if alt_random:
            requests.append((i, rows.keep_alt[b], m_draws, rows.gen_alt[b]))
    total = sum(n for _, _, n, _ in requests)
    bar = tqdm(total=total, desc="region XRT", unit="draw", disable=not progress, leave=False)
    try:
        outs = ev.run(requests, bar)
    finally:
        bar.close()
    per = 2 if alt_random else 1
    p = torch.empty(len(rows), dtype=torch.float64)
    stat = torch.empty(len(rows), dtype=torch.float64)
    calls = torch.empty(len(rows), dtype=torch.long)
    for b in range(len(rows)):
        k = ks[b]
        null = outs[per * b].view(k, m_draws).mean(1)
        t = outs[per * b + 1].mean() if alt_random else ev.base_score[rows.image[b]]
        if alternative == "greater":
            count = int((t - null <= 0).sum())
        else:
            centre = (null.sum() + t) / (k + 1)
            count = int(((null - centre).abs() >= (t - centre).abs()).sum())
        p[b] = (1 + count) / (k + 1)
        stat[b] = float(t)
        calls[b] = k * m_draws + (m_draws if alt_random else 0)
    return p, stat, calls


# ----- betting -----


class _DifferencePayoff:
    """Payoff ``y_t - y~_t`` on (B, T, 1) buffers: a one-sided bet that removing R lowers the score."""

    def __init__(self, y: torch.Tensor, yn: torch.Tensor) -> None:
        self.y, self.yn = y.unsqueeze(-1), yn.unsqueeze(-1)
        self.batch = y.shape[0]
        self.n = 0

    def warm(self) -> None:
        self.n += 1

    def step(self) -> torch.Tensor:
        g = self.y[:, self.n, 0] - self.yn[:, self.n, 0]
        self.n += 1
        return g

    def keep(self, idx: torch.Tensor) -> None:
        self.y, self.yn = self.y[idx], self.yn[idx]


class _DrawOnDemand:
    """A payoff source whose pairs are drawn ``chunk`` steps at a time for the rows still running."""

    def __init__(
        self,
        ev: _Evaluator,
        rows: _Rows,
        members: list[int],
        tau_max: int,
        chunk: int,
        alt_random: bool,
        alternative: str,
        kernel: Kernel,
        bar: tqdm | None,
    ) -> None:
        self.ev, self.rows, self.chunk, self.tau_max = ev, rows, chunk, tau_max
        self.alt_random, self.bar = alt_random, bar
        self.members = torch.tensor(members, dtype=torch.long)
        b = len(members)
        dev = ev.x.device
        y = torch.full((b, tau_max), math.nan, dtype=torch.float64, device=dev)
        yn = torch.full_like(y, math.nan)
        self.inner: Any = _DifferencePayoff(y, yn) if alternative == "greater" else _TwoSampleSource(y, yn, kernel)
        self.batch = b
        self.filled = 0

    def _ensure(self) -> None:
        if self.inner.n < self.filled:
            return
        c = min(self.chunk, self.tau_max - self.filled)
        requests = []
        for g in self.members.tolist():
            i = self.rows.image[g]
            requests.append((i, self.rows.keep_null[g], c, self.rows.gen_null[g]))
            if self.alt_random:
                requests.append((i, self.rows.keep_alt[g], c, self.rows.gen_alt[g]))
        outs = self.ev.run(requests, self.bar)
        per = 2 if self.alt_random else 1
        f0, f1 = self.filled, self.filled + c
        for a, g in enumerate(self.members.tolist()):
            self.inner.yn[a, f0:f1, 0] = outs[per * a]
            self.inner.y[a, f0:f1, 0] = outs[per * a + 1] if self.alt_random else self.ev.base_score[self.rows.image[g]]
        self.filled = f1

    def warm(self) -> None:
        self._ensure()
        self.inner.warm()

    def step(self) -> torch.Tensor:
        self._ensure()
        return self.inner.step()

    def keep(self, idx: torch.Tensor) -> None:
        self.inner.keep(idx)
        self.members = self.members[idx.cpu()]
        self.batch = int(self.members.numel())


def _betting(
    ev: _Evaluator,
    rows: _Rows,
    stops: list[float],
    alpha: float,
    tau_max: int,
    chunk: int,
    alt_random: bool,
    alternative: str,
    kernel: Kernel,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """e-values, stopping times, first-crossing of 1/alpha, statistics and calls per row."""
    n = len(rows)
    e = torch.empty(n, dtype=torch.float64)
    stopping = torch.empty(n, dtype=torch.long)
    crossed = torch.zeros(n, dtype=torch.bool)
    groups: dict[float, list[int]] = {}
    for b, s in enumerate(stops):
        groups.setdefault(s, []).append(b)
    bar = tqdm(desc="region betting", unit="draw", disable=not progress, leave=False)
    try:
        for stop, members in sorted(groups.items()):
            source = _DrawOnDemand(ev, rows, members, tau_max, chunk, alt_random, alternative, kernel, bar)
            res = run_sequential_test(
                source,
                tau_max=tau_max,
                warmup=1,
                alpha=alpha,
                stop_at=stop,
                batch_shape=(len(members),),
                test="region-betting",
                kernel=kernel.name if alternative == "two-sided" else "difference",
                device=ev.x.device,
            )
            idx = torch.tensor(members, dtype=torch.long)
            e[idx] = res.final_wealth().cpu()
            stopping[idx] = (torch.isfinite(res.wealth).sum(-1) - 1).cpu()
            crossed[idx] = res.rejected.cpu()
    finally:
        bar.close()
    # calls a region needs on its own: its draws up to the chunk holding its stopping step
    drawn = torch.clamp((stopping + chunk - 1) // chunk * chunk, max=tau_max)
    calls = drawn * (2 if alt_random else 1)
    stat = torch.tensor([float(ev.base_score[i]) for i in rows.image], dtype=torch.float64)
    if alt_random:
        stat.fill_(math.nan)
    return e, stopping, crossed, stat, calls


# ----- multiplicity -----


def _bh(p: torch.Tensor, method: str) -> torch.Tensor:
    """Benjamini-Hochberg / -Yekutieli adjusted p-values (scipy)."""
    from scipy.stats import false_discovery_control

    adj = false_discovery_control(p.numpy(), method=method)
    return torch.as_tensor(adj, dtype=torch.float64).reshape(p.shape)


def _control(
    values: torch.Tensor, valid: torch.Tensor, kind: str, alpha: float, scope: str, fdr_method: str
) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """Decisions (N, R), adjusted p-values (p only) and a sentence saying what was applied."""
    rejected = torch.zeros_like(valid)
    adjusted = torch.full(values.shape, math.nan, dtype=torch.float64) if kind == "p" else None
    name = {"bh": "Benjamini-Hochberg", "by": "Benjamini-Yekutieli"}[fdr_method] if kind == "p" else "e-BH"
    if scope == "none":
        rejected = valid & ((values <= alpha) if kind == "p" else (values >= 1.0 / alpha))
        stat = "p <= alpha" if kind == "p" else "e >= 1/alpha"
        return (
            rejected,
            adjusted,
            f"none: each region tested alone at alpha = {alpha:g} ({stat}; no multiplicity control)",
        )
    families = [valid[i].nonzero().squeeze(1) for i in range(valid.shape[0])] if scope == "image" else None
    if families is None:
        idx = valid.nonzero()
        v = values[idx[:, 0], idx[:, 1]]
        dec = _bh(v, fdr_method) if kind == "p" else None
        if kind == "p":
            adjusted[idx[:, 0], idx[:, 1]] = dec
            rejected[idx[:, 0], idx[:, 1]] = dec <= alpha
        else:
            rejected[idx[:, 0], idx[:, 1]] = ebh(v, alpha)
        where = "all regions of all images passed together"
    else:
        for i, fam in enumerate(families):
            if fam.numel() == 0:
                continue
            v = values[i, fam]
            if kind == "p":
                adj = _bh(v, fdr_method)
                adjusted[i, fam] = adj
                rejected[i, fam] = adj <= alpha
            else:
                rejected[i, fam] = ebh(v, alpha)
        where = "the regions of each image"
    return rejected, adjusted, f"{name} over {where}, FDR level alpha = {alpha:g}"


def _regions_of(
    explanation: ExplanationData | torch.Tensor | None,
    regions: str | torch.Tensor,
    x: torch.Tensor,
    *,
    k: int,
    grid: int | None,
    threshold: float,
    min_size: int,
    max_regions: int,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The region masks (N, R, H, W), which are real (N, R), and how they were made: given
    masks, or ``map_regions`` of the explanation's relevance (``"auto"``: by its method)."""
    n, _, height, width = x.shape
    relevance = explanation.relevance if isinstance(explanation, ExplanationData) else explanation
    how: dict[str, Any]
    if isinstance(regions, torch.Tensor):
        masks, valid = as_region_masks(regions, n, height, width)
        how = {"kind": "masks"}
    else:
        if regions != "auto" and regions not in REGION_KINDS:
            raise ValueError(
                f"regions must be 'auto', {', '.join(map(repr, REGION_KINDS))} or a bool tensor of masks, "
                f"got {regions!r}"
            )
        if relevance is None:
            raise ValueError(f"explanation: regions={regions!r} needs a relevance map; pass masks as regions=")
        if not isinstance(relevance, torch.Tensor) or tuple(relevance.shape[0:1]) + tuple(relevance.shape[-2:]) != (
            n,
            height,
            width,
        ):
            shape = tuple(relevance.shape) if isinstance(relevance, torch.Tensor) else type(relevance).__name__
            raise ValueError(f"explanation has shape {shape}; x has shape {tuple(x.shape)}")
        kind, auto_opts = _auto_regions(explanation) if regions == "auto" else (regions, {})
        if grid is None:
            grid = auto_opts.get("grid")
        masks, valid = map_regions(
            relevance, kind, k=k, grid=grid, threshold=threshold, min_size=min_size, max_regions=max_regions
        )
        how = {
            "kind": kind,
            "k": k,
            "grid": grid,
            "threshold": threshold,
            "min_size": min_size,
            "max_regions": max_regions,
        }
    return masks, valid, how


def _fill(
    sampler: MaskSampler | None, reference: Reference | str | os.PathLike | None, model: nn.Module, x: torch.Tensor
) -> tuple[Reference | None, str]:
    """The reference (None with a ``sampler``) and the sentence saying how removed regions are refilled."""
    if sampler is None:
        ref = resolve_reference(reference, model, x)
        return (
            ref,
            f"marginal: each redrawn pixel ~ N(mean, var) of the reference ({ref.source}), independent of the rest",
        )
    return None, f"conditional: {getattr(sampler, '__name__', type(sampler).__name__)}(x, keep, generator)"


def _xrt_null_sizes(K: int | None, counts: torch.Tensor, scope: str, fdr_method: str, alpha: float) -> list[int]:
    """Null statistics per image: ``K``, or enough for the smallest attainable p-value
    1/(K+1) to pass BH (BY: times the harmonic number) over the image's family, at least 99."""
    n = counts.shape[0]
    if K is not None:
        return [K] * n
    per_image = [int(counts[i]) if scope != "none" else 1 for i in range(n)]
    harmonic = [sum(1.0 / j for j in range(1, m + 1)) if fdr_method == "by" else 1.0 for m in per_image]
    return [max(99, math.ceil(m * h / alpha) - 1) for m, h in zip(per_image, harmonic)]


# ----- the entry point -----


def test_regions(
    model: nn.Module,
    x: torch.Tensor,
    explanation: ExplanationData | torch.Tensor | None = None,
    *,
    reference: Reference | str | os.PathLike | None = None,
    regions: str | torch.Tensor = "auto",
    test: str = "xrt",
    alpha: float = 0.05,
    fdr: bool | str = True,
    fdr_method: str = "bh",
    target: int | torch.Tensor | None = None,
    context: str = "rest",
    score: str = "log-probability",
    alternative: str = "greater",
    sampler: MaskSampler | None = None,
    K: int | None = None,
    M: int = 1,
    tau_max: int = 200,
    chunk: int = 16,
    kernel: str | Kernel = "rbf",
    k: int = 4,
    grid: int | None = None,
    threshold: float = 0.5,
    min_size: int = 4,
    max_regions: int = 8,
    batch_size: int = 256,
    seed: int | Sequence[int] | None = 0,
    keep_images: bool = True,
    progress: bool = False,
) -> RegionTestResult:
    """Test, for each region of each image, whether the model's output depends on it.

    Args:
        model: classifier mapping (N, C, H, W) to (N, classes) logits.
        x: the images (N, C, H, W).
        explanation: the map whose regions are tested (an :class:`~provex.Explanation` or an
            (N, C, H, W) tensor); may be None when ``regions`` is a tensor of masks.
        reference: what a removed region is refilled from (:func:`provex.reference.resolve_reference`:
            given, else the model card, else each image's own statistics with a warning).
        regions: ``"components"``, ``"top-k"``, ``"cells"`` (see :func:`provex.stats.map_regions`),
            ``"auto"`` (components for RDE maps, h-Shap's cells for h-Shap, top-k otherwise) or a
            bool tensor of masks, (R, H, W) for every image or (N, R, H, W); empty masks are padding.
        test: ``"xrt"`` (p-values) or ``"betting"`` (e-values, early stopping).
        alpha: level of each test and of the FDR control.
        fdr: ``True``/``"image"`` (per image), ``"dataset"`` (all regions passed) or ``False``.
        fdr_method: ``"bh"`` or ``"by"`` for p-values (betting always uses e-BH).
        target: class per image; default the explanation's target, else the predicted class.
        context: ``"rest"``, ``"empty"`` or ``"others"`` (module docstring).
        score: ``"log-probability"``, ``"probability"`` or ``"logit"`` of the target class.
        alternative: ``"greater"`` (removing R lowers the score) or ``"two-sided"``.
        sampler: a conditional fill ``sampler(x, keep, generator)``; default: the reference's
            independent Gaussian pixels N(mean, var) (a marginal fill, stated in the result).
        K, M: XRT null statistics and draws per statistic (K=None: see the module docstring).
        tau_max, chunk, kernel: betting budget (pairs), draws per batch of steps, and the
            two-sided witness kernel (``"rbf"`` or ``"linear"``).
        k, grid, threshold, min_size, max_regions: region construction (``map_regions``).
        batch_size: model inputs per forward pass. seed: ``int``, one int per image, or None.
        keep_images: store ``x`` in the result (for ``plot`` and ``save``).
        progress: show progress bars.
    """
    start = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x = check_images(x)
    test = _choice(test, TESTS, "test")
    alpha = check_alpha(alpha)
    scope = _fdr_scope(fdr)
    fdr_method = _choice(fdr_method, FDR_METHODS, "fdr_method")
    context = _choice(context, CONTEXTS, "context")
    score = _choice(score, SCORES, "score")
    alternative = _choice(alternative, ALTERNATIVES, "alternative")
    m_draws = _positive(M, "M")
    if K is not None:
        _positive(K, "K")
    tau_max = _positive(tau_max, "tau_max")
    if tau_max < 2:
        raise ValueError(f"tau_max must be at least 2 (one warm-up pair, then bets), got {tau_max}")
    chunk = _positive(chunk, "chunk")
    batch_size = _positive(batch_size, "batch_size")
    kern = get_kernel(kernel)
    if sampler is not None and not callable(sampler):
        raise ValueError(f"sampler must be a callable sampler(x, keep, generator), got {type(sampler).__name__}")
    param = next(model.parameters(), None)
    if param is not None and param.device != x.device:
        x = x.to(param.device)
    if model.training:
        warnings.warn("model is in training mode; call model.eval() for reproducible tests", stacklevel=2)
    n = x.shape[0]
    seeds = image_seeds(seed, n)

    masks, valid, how = _regions_of(
        explanation, regions, x, k=k, grid=grid, threshold=threshold, min_size=min_size, max_regions=max_regions
    )
    if target is None and isinstance(explanation, ExplanationData):
        target = explanation.target

    ref, fill = _fill(sampler, reference, model, x)
    ev = _Evaluator(model, x, target, score, ref, sampler, batch_size)
    rows = _rows(masks, valid, context, seeds, x.device)
    alt_random = context != "rest"
    counts = valid.sum(1)
    total_regions = int(counts.sum())
    if scope == "image":
        fam = [int(counts[i]) for i in rows.image]
    elif scope == "dataset":
        fam = [total_regions] * len(rows)
    else:
        fam = [1] * len(rows)

    r = masks.shape[1]
    nan = torch.full((n, r), math.nan, dtype=torch.float64)
    calls = torch.zeros(n, r, dtype=torch.long)
    stat = nan.clone()
    img = torch.tensor(rows.image, dtype=torch.long)
    reg = torch.tensor(rows.region, dtype=torch.long)
    p_values = e_values = stopping = None
    k_used: torch.Tensor | None = None
    if test == "xrt":
        k_img = _xrt_null_sizes(K, counts, scope, fdr_method, alpha)
        ks = [k_img[i] for i in rows.image]
        p, s, c = _xrt(ev, rows, ks, m_draws, alt_random, alternative, progress)
        p_values = nan.clone()
        p_values[img, reg] = p
        stat[img, reg], calls[img, reg] = s, c
        k_used = torch.tensor(k_img, dtype=torch.long)
        rejected, adjusted, control = _control(p_values, valid, "p", alpha, scope, fdr_method)
    else:
        stops = [max(1.0, float(m)) / alpha for m in fam]
        e, tau, _crossed, s, c = _betting(
            ev, rows, stops, alpha, tau_max, chunk, alt_random, alternative, kern, progress
        )
        e_values = nan.clone()
        e_values[img, reg] = e
        stopping = torch.full((n, r), -1, dtype=torch.long)
        stopping[img, reg] = tau
        stat[img, reg], calls[img, reg] = s, c
        rejected, adjusted, control = _control(e_values, valid, "e", alpha, scope, fdr_method)
        level = "m/alpha (m = regions in its family)" if scope != "none" else "1/alpha"
        control += f"; each test stopped when its wealth reached {level} or at tau_max = {tau_max}"
    settings = {
        "context": context,
        "score": score,
        "alternative": alternative,
        "fill": fill,
        "reference": ref.describe() if ref is not None else None,
        "fdr": scope,
        "fdr_method": fdr_method if test == "xrt" else "e-bh",
        "K": None if k_used is None else k_used.tolist(),
        "M": m_draws,
        "tau_max": tau_max if test == "betting" else None,
        "chunk": chunk if test == "betting" else None,
        "kernel": kern.name if (test == "betting" and alternative == "two-sided") else None,
        "regions": how,
        "seed": seeds,
        "explanation": explanation.method if isinstance(explanation, ExplanationData) else None,
    }
    return RegionTestResult(
        masks=masks.cpu(),
        valid=valid.cpu(),
        rejected=rejected.cpu(),
        target=ev.target.cpu(),
        test=test,
        alpha=alpha,
        control=control,
        p_values=p_values,
        adjusted_p_values=adjusted if test == "xrt" else None,
        e_values=e_values,
        stopping_time=stopping,
        statistic=stat,
        model_calls=calls,
        total_model_calls=ev.calls,
        settings=settings,
        images=x.detach().cpu().float() if keep_images else None,
        seconds=time.perf_counter() - start,
    )


test_regions.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name
