"""The relevance ordering test ("pixel flipping with noise") of the RDE and FW-RDE papers.

Components are sorted by relevance, least relevant first (ties broken at random with the
seed). At step t the ``t * step`` least relevant components are replaced by noise (uniform in
``[x.min(), x.max()]`` of each image by default, the papers' choice; ``noise="reference"``
draws from the reference distribution N(mean, diag(var)) instead: ``reference=`` given >
model card > each image's own per-channel statistics) and ``n_samples`` noisy copies go
through the model. Per step we record the distortion, the mean squared difference of the target's softmax
probability to its value on the clean image, and the accuracy, the fraction of copies still
classified as the target. A good relevance map keeps the distortion low while few components
are kept, so a smaller area under the distortion curve (against the fraction of components
kept) means a better map.

Cost: ``ceil(n / step) * n_samples`` forward passes per image (about 80,000 for MNIST at the
papers' protocol, step 5 and 512 draws). The work is streamed through the model in full
batches of ``batch_size`` rows that mix images, steps and draws, under ``torch.inference_mode``;
``compile=True`` runs those batches through ``torch.compile`` (one static shape; the last
batch is padded), which pays off from a few images on. Step 0 (nothing replaced) is exact and
costs one pass per image.

Randomness: each image gets its own generator, seeded from its own seed (``seed``: an int
gives every image that seed, a sequence of N ints gives image ``i`` ``seed[i]``; see
:mod:`provex.seeding`; the ordering test uses a sub-stream of it, so it never reuses the
draws a stochastic method made with the same seed). It draws the tie-break first and then the
noise of steps 1, 2, ... in order, fresh noise per step. So an image's curve is the same alone
and in any batch, it does not depend on ``batch_size`` or ``compile``, and two relevance maps
of the same image are evaluated on the same noise (common random numbers: method differences
are not blurred by noise differences).
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from provex.checks import check_bool, check_images, check_int, check_logits, check_relevance, resolve_target
from provex.explanation import Explanation
from provex.reference import Reference, resolve_reference
from provex.seeding import derive, generator, image_seeds

__all__ = ["NoiseFn", "OrderingCurve", "component_ranks", "gaussian_noise", "relevance_ordering"]

NoiseFn = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]
"""``noise(image (C, H, W), n_draws, generator) -> (n_draws, C, H, W)`` replacement values."""


@dataclass
class OrderingCurve:
    """Result of :func:`relevance_ordering`: mean curves over images, their errors and areas.

    Curves are indexed by step ``t = 0 .. T`` (``T = ceil(n / step)``), so ``fraction_kept``
    decreases from 1 (nothing replaced) to 0 (everything replaced). Standard errors are over
    images (over noise draws when there is one image). Areas are trapezoidal integrals over
    the fraction kept, in [0, 1] units, so the distortion area is the curve's mean height.
    """

    fraction_kept: torch.Tensor
    distortion: torch.Tensor
    distortion_se: torch.Tensor
    accuracy: torch.Tensor
    accuracy_se: torch.Tensor
    per_image_distortion: torch.Tensor
    per_image_accuracy: torch.Tensor
    auc_distortion: float
    auc_distortion_se: float
    auc_accuracy: float
    auc_accuracy_se: float
    settings: dict[str, Any] = field(default_factory=dict)
    forward_passes: int = 0
    seconds: float = 0.0

    @property
    def per_image_auc_distortion(self) -> torch.Tensor:
        """(N,) area under each image's distortion curve."""
        return _area(self.per_image_distortion, self.fraction_kept)

    @property
    def per_image_auc_accuracy(self) -> torch.Tensor:
        """(N,) area under each image's accuracy curve."""
        return _area(self.per_image_accuracy, self.fraction_kept)

    @property
    def passes_per_second(self) -> float:
        """Forward passes (images through the model) per second of wall time."""
        return self.forward_passes / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self, per_image: bool = True) -> dict[str, Any]:
        """Plain lists and numbers, for JSON; ``per_image=False`` leaves out the (N, T+1) curves."""
        out: dict[str, Any] = {}
        for name, value in self.__dict__.items():
            if not per_image and name.startswith("per_image"):
                continue
            out[name] = value.tolist() if isinstance(value, torch.Tensor) else value
        out["per_image_auc_distortion"] = self.per_image_auc_distortion.tolist()
        out["per_image_auc_accuracy"] = self.per_image_auc_accuracy.tolist()
        return out


def _area(values: torch.Tensor, fraction_kept: torch.Tensor) -> torch.Tensor:
    """Trapezoidal area under ``values`` (..., T+1) over the decreasing ``fraction_kept``."""
    widths = fraction_kept[:-1] - fraction_kept[1:]
    return ((values[..., :-1] + values[..., 1:]) * 0.5 * widths).sum(-1)


ORDERING_STREAM = 0x0D0E
"""Sub-stream key of the ordering test: image i draws from ``derive(seed_i, ORDERING_STREAM)``."""


def component_ranks(relevance: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rank of each entry of a flat relevance vector, 0 = least relevant, ties in random order."""
    n = relevance.numel()
    perm = torch.randperm(n, generator=generator, device=relevance.device)
    order = perm[torch.sort(relevance[perm], stable=True).indices]
    ranks = torch.empty(n, dtype=torch.long, device=relevance.device)
    ranks[order] = torch.arange(n, device=relevance.device)
    return ranks


def _uniform_noise(image: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    lo, hi = image.min(), image.max()
    u = torch.rand((n, *image.shape), generator=generator, device=image.device, dtype=image.dtype)
    return lo + (hi - lo) * u


def gaussian_noise(mean: torch.Tensor | float, var: torch.Tensor | float) -> NoiseFn:
    """Noise N(mean, diag(var)) per component (e.g. the training statistics RDE optimises with).

    ``mean`` and ``var`` are floats or tensors broadcastable to one image (C, H, W). Use it as
    ``relevance_ordering(..., noise=gaussian_noise(card.data_mean, card.data_var))`` to
    evaluate maps under the noise model of the rate-distortion methods instead of the papers'
    uniform noise.
    """
    m = torch.as_tensor(mean, dtype=torch.float64)
    v = torch.as_tensor(var, dtype=torch.float64)
    if not bool(torch.isfinite(m).all()) or not bool(torch.isfinite(v).all()) or bool((v < 0).any()):
        raise ValueError("gaussian_noise needs finite mean and finite, non-negative var")
    std = v.sqrt()

    def draw(image: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn((n, *image.shape), generator=generator, device=image.device, dtype=image.dtype)
        return m.to(image) + std.to(image) * z

    draw.__name__ = "gaussian"
    return draw


_COMPILED: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def _compiled(model: nn.Module) -> nn.Module:
    """``torch.compile(model)``, cached per model so repeated evaluations compile once."""
    if model not in _COMPILED:
        # inductor logs a harmless CUDA_HOME notice on CPU-only machines
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        _COMPILED[model] = torch.compile(model, dynamic=False)
    return _COMPILED[model]


def _reference_noise(ref: Reference) -> Callable[[int], NoiseFn]:
    """Per-image noise functions drawing N(mean, diag(var)) of the (possibly per-image) reference."""

    def for_image(i: int) -> NoiseFn:
        def draw(image: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
            return ref.sample(n, gen, image=i if ref.per_image else None).to(image.dtype)

        return draw

    return for_image


def _noise_per_image(
    noise: str | NoiseFn, reference: Reference | str | os.PathLike | None, model: nn.Module, x: torch.Tensor
) -> tuple[Callable[[int], NoiseFn], dict[str, Any] | None]:
    """Image index -> its noise function, and the reference's description (``noise="reference"``)."""
    if noise == "reference":
        ref = resolve_reference(reference, model, x)
        return _reference_noise(ref), ref.describe()
    fixed: NoiseFn = _uniform_noise if noise == "uniform" else noise  # type: ignore[assignment]
    return (lambda _i: fixed), None


def relevance_ordering(
    model: nn.Module,
    x: torch.Tensor,
    relevance: torch.Tensor | Explanation,
    target: int | torch.Tensor | None = None,
    step: int = 5,
    n_samples: int = 512,
    noise: str | NoiseFn = "uniform",
    seed: int | Sequence[int] | None = 0,
    batch_size: int = 512,
    tie_channels: bool = False,
    compile: bool = False,
    progress: bool = True,
    reference: Reference | str | os.PathLike | None = None,
    n_noise: int | None = None,
) -> OrderingCurve:
    """Relevance ordering test of ``relevance`` (N, C, H, W) for ``model`` on images ``x``.

    Args:
        model: classifier mapping (N, C, H, W) to (N, classes) logits (softmax is applied here).
        x: images; relevance: a map of ``x``'s shape (or an :class:`Explanation`, whose target
            is used when ``target`` is None). Larger means more relevant.
        target: class per image (int or (N,) tensor); None: the predicted class.
        step: components replaced per step (the papers: 5 for MNIST); 1 <= step < n.
        n_samples: noise draws per step and image (the papers: 512 for MNIST; ``n_noise`` is
            its deprecated name).
        noise: "uniform" (in [x.min(), x.max()] of each image), "reference" (Gaussian draws
            from ``reference``) or a callable ``noise(image, n_draws, generator) -> (n_draws, C, H, W)``.
        seed: seeds the tie-break and the noise per image (see the module docstring).
        batch_size: rows per model call. tie_channels: rank pixels by the channel sum of the
            relevance and replace all channels of a pixel together (n = H * W).
        compile: run the noisy batches through ``torch.compile`` (falls back to eager with a
            warning where compilation fails). progress: show a tqdm bar.
        reference: the distribution of ``noise="reference"`` (a :class:`provex.Reference` or a
            path to a saved one; None: the model card, else each image's own statistics).
    """
    start = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x = check_images(x)
    if isinstance(relevance, Explanation):
        if target is None:
            target = relevance.target
        relevance = relevance.relevance
    relevance = check_relevance(relevance, x)
    if n_noise is not None:
        warnings.warn(
            "n_noise is deprecated and will be removed in the next release; use n_samples", FutureWarning, stacklevel=2
        )
        n_samples = n_noise
    step = check_int(step, "step")
    n_samples = check_int(n_samples, "n_samples")
    batch_size = check_int(batch_size, "batch_size")
    check_bool(tie_channels, "tie_channels")
    seeds = image_seeds(seed, x.shape[0])
    choices = "'uniform', 'reference' or a callable (image, n_draws, generator)"
    if not (callable(noise) or noise in ("uniform", "reference")):
        raise ValueError(f"noise must be {choices}, got {noise!r}")
    if reference is not None and noise != "reference":
        raise ValueError(f"reference is used by noise='reference' only; got noise={noise!r}")

    param = next(model.parameters(), None)
    device = param.device if param is not None else x.device
    x = x.to(device)
    per_image_noise, ref_desc = _noise_per_image(noise, reference, model, x)
    rel = relevance.detach().to(device=device, dtype=torch.float64)
    num, channels = x.shape[0], x.shape[1]
    if tie_channels:
        rel = rel.sum(1, keepdim=True)
    n = rel[0].numel()
    if step >= n:
        raise ValueError(
            f"step={step} leaves no intermediate point of the curve: it must be smaller than the number "
            f"of components ({n})"
        )
    n_steps = math.ceil(n / step)
    thresholds = torch.clamp(torch.arange(n_steps + 1, device=device) * step, max=n)
    fraction_kept = (n - thresholds).double().cpu() / n

    with torch.inference_mode():
        logits0 = check_logits(model(x), num)
    tgt = resolve_target(target, logits0)
    p0 = torch.softmax(logits0.double(), 1).gather(1, tgt[:, None])[:, 0]
    correct0 = (logits0.argmax(1) == tgt).double()

    batches = _NoisyBatches(model, _compiled(model) if compile else model, batch_size, tgt, p0, n_steps)
    n_pairs = num * n_steps
    bar = tqdm(total=n_pairs, desc="relevance ordering", unit="step", disable=not progress, leave=False)
    with torch.inference_mode():
        for i in range(num):
            gen = generator(derive(seeds[i], ORDERING_STREAM), device)
            noise_fn = per_image_noise(i)
            ranks = component_ranks(rel[i].flatten(), gen).view(rel[i].shape)
            image = x[i]
            for t in range(1, n_steps + 1):
                pair = i * n_steps + (t - 1)
                draws = noise_fn(image, n_samples, gen)
                if draws.shape != (n_samples, *image.shape):
                    raise ValueError(f"noise returned shape {tuple(draws.shape)}, expected {(n_samples, *image.shape)}")
                keep = (ranks >= thresholds[t]).expand(channels, *rel.shape[2:])
                batches.add(
                    torch.where(keep, image, draws.to(image.dtype)),
                    torch.full((n_samples,), pair, dtype=torch.long, device=device),
                )
                bar.update(1)
        batches.flush()
    bar.close()

    curves = _curves(batches, num, n_steps, n_samples, correct0, fraction_kept)
    return OrderingCurve(
        fraction_kept=fraction_kept,
        distortion=curves["per_d"].mean(0),
        distortion_se=curves["d_se"],
        accuracy=curves["per_a"].mean(0),
        accuracy_se=curves["a_se"],
        per_image_distortion=curves["per_d"],
        per_image_accuracy=curves["per_a"],
        auc_distortion=float(curves["auc_d"].mean()),
        auc_distortion_se=curves["auc_d_se"],
        auc_accuracy=float(curves["auc_a"].mean()),
        auc_accuracy_se=curves["auc_a_se"],
        settings={
            "step": step,
            "n_samples": n_samples,
            "n_noise": n_samples,  # deprecated key, kept for one release
            "noise": noise if isinstance(noise, str) else getattr(noise, "__name__", "callable"),
            "reference": ref_desc,
            "seed": seed if seed is None or isinstance(seed, int) else list(seeds),
            "n_components": n,
            "n_images": num,
            "tie_channels": tie_channels,
            "batch_size": batch_size,
            "compiled": batches.fast is not model,
            "padded_rows": batches.padded_rows,
            "target": tgt.tolist(),
        },
        forward_passes=num + n_pairs * n_samples,
        seconds=time.perf_counter() - start,
    )


class _NoisyBatches:
    """Streams noisy rows through the model in full batches of ``batch_size`` and sums, per
    (image, step) pair, the squared change of the target's probability, its square and the
    hits of the target class. Rows of several images, steps and draws share a batch."""

    def __init__(
        self,
        model: nn.Module,
        fast: nn.Module,
        batch_size: int,
        target: torch.Tensor,
        p0: torch.Tensor,
        n_steps: int,
    ) -> None:
        self.model, self.fast, self.batch_size = model, fast, batch_size
        self.target, self.p0, self.n_steps = target, p0, n_steps
        n_pairs = target.shape[0] * n_steps
        self.sum_d = torch.zeros(n_pairs, dtype=torch.float64, device=p0.device)
        self.sum_d2 = torch.zeros_like(self.sum_d)
        self.sum_ok = torch.zeros_like(self.sum_d)
        self.pending: deque[torch.Tensor] = deque()
        self.pending_ids: deque[torch.Tensor] = deque()
        self.pending_rows = 0
        self.padded_rows = 0

    def add(self, rows: torch.Tensor, ids: torch.Tensor) -> None:
        """Queue ``rows`` (their pair ``ids``); run every full batch."""
        self.pending.append(rows)
        self.pending_ids.append(ids)
        self.pending_rows += rows.shape[0]
        while self.pending_rows >= self.batch_size:
            self._run(*self._take(self.batch_size))

    def flush(self) -> None:
        """Run the last, partial batch."""
        if self.pending_rows:
            self._run(*self._take(self.pending_rows))

    def _run(self, batch: torch.Tensor, ids: torch.Tensor) -> None:
        rows = batch.shape[0]
        if self.fast is not self.model and rows < self.batch_size:  # one static shape for the compiled model
            batch = torch.cat([batch, batch[:1].expand(self.batch_size - rows, *batch.shape[1:])])
            self.padded_rows += self.batch_size - rows
        try:
            logits = self.fast(batch)
        except Exception as err:  # compilation problems surface at the first call
            if self.fast is self.model:
                raise
            warnings.warn(f"torch.compile failed ({type(err).__name__}: {err}); evaluating eagerly", stacklevel=4)
            self.fast = self.model
            logits = self.model(batch)
        logits = logits[:rows]
        image = torch.div(ids, self.n_steps, rounding_mode="floor")
        t_img = self.target[image]
        p = torch.softmax(logits.double(), 1).gather(1, t_img[:, None])[:, 0]
        d = (p - self.p0[image]) ** 2
        self.sum_d.index_add_(0, ids, d)
        self.sum_d2.index_add_(0, ids, d * d)
        self.sum_ok.index_add_(0, ids, (logits.argmax(1) == t_img).double())

    def _take(self, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``rows`` pending rows (views of the queued pieces, one concatenation)."""
        parts, part_ids, need = [], [], rows
        while need:
            head, head_ids = self.pending[0], self.pending_ids[0]
            if head.shape[0] <= need:
                parts.append(head)
                part_ids.append(head_ids)
                self.pending.popleft()
                self.pending_ids.popleft()
                need -= head.shape[0]
            else:
                parts.append(head[:need])
                part_ids.append(head_ids[:need])
                self.pending[0], self.pending_ids[0] = head[need:], head_ids[need:]
                need = 0
        self.pending_rows -= rows
        return torch.cat(parts), torch.cat(part_ids)


def _curves(
    batches: _NoisyBatches,
    num: int,
    n_steps: int,
    n_samples: int,
    correct0: torch.Tensor,
    fraction_kept: torch.Tensor,
) -> dict[str, Any]:
    """Per-image curves (step 0 first), their areas and standard errors: over the images, or
    for one image the Monte Carlo error over the draws (steps use independent noise)."""
    shape = (num, n_steps)
    mean_d = (batches.sum_d / n_samples).view(shape).cpu()
    var_d = (batches.sum_d2 / n_samples).view(shape).cpu() - mean_d**2
    acc = (batches.sum_ok / n_samples).view(shape).cpu()
    per_d = torch.cat([torch.zeros(num, 1, dtype=torch.float64), mean_d], 1)
    per_a = torch.cat([correct0.cpu()[:, None], acc], 1)
    draw_var_d = torch.cat([torch.zeros(num, 1, dtype=torch.float64), var_d.clamp(min=0)], 1)
    draw_var_a = per_a * (1 - per_a)
    auc_d, auc_a = _area(per_d, fraction_kept), _area(per_a, fraction_kept)
    if num > 1:
        d_se, a_se = per_d.std(0) / math.sqrt(num), per_a.std(0) / math.sqrt(num)
        auc_d_se, auc_a_se = float(auc_d.std() / math.sqrt(num)), float(auc_a.std() / math.sqrt(num))
    else:
        scale = 1.0 / max(n_samples - 1, 1)
        d_se, a_se = (draw_var_d[0] * scale).sqrt(), (draw_var_a[0] * scale).sqrt()
        w = torch.zeros_like(fraction_kept)
        widths = (fraction_kept[:-1] - fraction_kept[1:]) * 0.5
        w[:-1] += widths
        w[1:] += widths
        auc_d_se = float(((w**2) * d_se**2).sum().sqrt())
        auc_a_se = float(((w**2) * a_se**2).sum().sqrt())
    return {
        "per_d": per_d,
        "per_a": per_a,
        "d_se": d_se,
        "a_se": a_se,
        "auc_d": auc_d,
        "auc_a": auc_a,
        "auc_d_se": auc_d_se,
        "auc_a_se": auc_a_se,
    }
