"""Perturbation baselines on captum: ``"kernel-shap"`` (Lundberg and Lee 2017) and ``"lime"``.

Both switch groups of pixels ("features") on and off, replacing the "off" ones by a baseline
value (0.0 by default: MNIST's black background), run the model on the perturbed images and
fit a weighted linear model of the target logit on the on/off pattern. Each pixel gets its
feature's coefficient. Features:

* ``features="grid"`` (default): ``block`` x ``block`` squares, channels tied. 2 x 2 on MNIST
  gives 196 features, fine enough for the pixel-level ordering test.
* ``features="superpixels"``: SLIC segments of each image (``n_segments``; needs
  scikit-image). LIME's own image default (quickshift with kernel 4, max_dist 200) yields only
  one or two segments on 28 x 28 MNIST digits, which is why we do not use it.

Budgets (forward passes per image, batched ``batch_size`` at a time):

* KernelSHAP: captum's ``KernelShap`` (coalition sizes drawn from the Shapley kernel, linear
  regression with the empty and full coalitions weighted 1e6, so the values add up to
  f(x) - f(baseline)). ``n_samples=None`` means the shap package's "auto" budget 2 M + 2048
  for M features (2440 on the 2 x 2 MNIST grid). With enough samples the result converges to
  the exact Shapley values of the game v(S) = f(x on S, baseline elsewhere).
* LIME: captum's ``Lime`` with the lime package's image settings: features on with
  probability 1/2, 1000 samples, weights exp(-d^2 / (2 w^2)) on the cosine distance d between
  the on/off vector and all-on (kernel width w = 0.25), and a ridge regression (alpha = 1,
  ``ridge=0`` gives ordinary least squares).

Both draw from the global RNG inside a forked scope seeded with ``seed``; images are
explained one at a time (a separate regression per image) with a tqdm bar.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from provex.baselines._common import check_positive_float, check_positive_int, seeded
from provex.explanation import Explanation
from provex.registry import register_method

__all__ = ["feature_masks", "kernel_shap", "lime", "lime_kernel"]

FEATURES = ("grid", "superpixels")


def feature_masks(x: torch.Tensor, features: str = "grid", block: int = 2, n_segments: int = 50) -> torch.Tensor:
    """(N, C, H, W) integer feature ids 0..M-1 per image (channels tied).

    ``grid``: ``block`` x ``block`` squares (the last row/column may be narrower when ``block``
    does not divide the image). ``superpixels``: SLIC segments of each image.
    """
    n, c, h, w = x.shape
    if features == "grid":
        check_positive_int(block, "block")
        if block > min(h, w):
            raise ValueError(f"block={block} is larger than the image ({h} x {w})")
        cols = math.ceil(w / block)
        ids = (torch.arange(h)[:, None] // block) * cols + torch.arange(w)[None, :] // block
        return ids.to(x.device).expand(n, c, h, w).clone()
    if features == "superpixels":
        check_positive_int(n_segments, "n_segments")
        try:
            from skimage.segmentation import slic
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ValueError("features='superpixels' needs scikit-image (pip install scikit-image)") from err
        out = torch.empty(n, c, h, w, dtype=torch.long)
        for i in range(n):
            img = x[i].detach().cpu().double().permute(1, 2, 0).numpy()
            lo, hi = img.min(), img.max()
            img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
            seg = slic(img, n_segments=n_segments, compactness=0.1, channel_axis=-1, start_label=0)
            _, seg = np.unique(seg, return_inverse=True)  # contiguous ids 0..M-1
            out[i] = torch.from_numpy(seg.reshape(h, w)).expand(c, h, w)
        return out.to(x.device)
    raise ValueError(f"features must be one of {FEATURES}, got {features!r}")


def lime_kernel(width: float) -> Any:
    """LIME's similarity: exp(-d^2 / (2 w^2)), d = cosine distance of the on/off vector to all-on."""

    def similarity(_original: Any, _perturbed: Any, interpretable: torch.Tensor, **_: Any) -> float:
        on = float(interpretable.sum())
        total = interpretable.numel()
        d = 1.0 - math.sqrt(on / total) if on > 0 else 1.0
        return math.exp(-(d * d) / (2.0 * width * width))

    return similarity


def _explain_each(
    explainer: Any,
    x: torch.Tensor,
    target: torch.Tensor,
    masks: torch.Tensor,
    baseline: float,
    n_samples: int | None,
    batch_size: int,
    seed: int,
    desc: str,
) -> tuple[torch.Tensor, list[int]]:
    rel = torch.empty_like(x)
    sizes = []
    with seeded(seed, x.device):
        for i in tqdm(range(x.shape[0]), desc=desc, disable=x.shape[0] < 2, leave=False):
            m = int(masks[i].max()) + 1
            budget = n_samples if n_samples is not None else 2 * m + 2048
            sizes.append(budget)
            rel[i] = explainer.attribute(
                x[i : i + 1],
                baselines=baseline,
                target=target[i : i + 1],
                feature_mask=masks[i : i + 1],
                n_samples=budget,
                perturbations_per_eval=min(batch_size, budget),
            )[0].detach()
    return rel, sizes


def _common_checks(n_samples: int | None, batch_size: int, baseline: float) -> None:
    if n_samples is not None:
        check_positive_int(n_samples, "n_samples")
    check_positive_int(batch_size, "batch_size")
    if isinstance(baseline, bool) or not isinstance(baseline, (int, float)) or not math.isfinite(baseline):
        raise ValueError(f"baseline must be a finite number, got {baseline!r}")


@register_method(
    "kernel-shap",
    family="classic attribution",
    description="KernelSHAP Shapley values of pixel blocks or superpixels (Lundberg and Lee 2017; captum)",
)
def kernel_shap(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    features: str = "grid",
    block: int = 2,
    n_segments: int = 50,
    n_samples: int | None = None,
    baseline: float = 0.0,
    batch_size: int = 512,
    seed: int = 0,
) -> Explanation:
    """KernelSHAP map; ``n_samples=None`` uses the shap package's 2 M + 2048 budget."""
    _common_checks(n_samples, batch_size, baseline)
    masks = feature_masks(x, features, block, n_segments)
    from captum.attr import KernelShap  # imported on use: keeps `import provex` light

    with torch.no_grad():
        rel, budgets = _explain_each(
            KernelShap(model), x, target, masks, float(baseline), n_samples, batch_size, seed, "kernel-shap"
        )
    return Explanation(
        relevance=rel,
        method="kernel-shap",
        target=target.detach().clone(),
        info={"model_passes": budgets, "n_features": [int(m.max()) + 1 for m in masks]},
    )


@register_method(
    "lime",
    family="classic attribution",
    description="LIME: weighted ridge fit on pixel blocks or superpixels switched off (Ribeiro et al. 2016; captum)",
)
def lime(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    features: str = "grid",
    block: int = 2,
    n_segments: int = 50,
    n_samples: int = 1000,
    kernel_width: float = 0.25,
    ridge: float = 1.0,
    baseline: float = 0.0,
    batch_size: int = 512,
    seed: int = 0,
) -> Explanation:
    """LIME map with the lime package's image settings (see the module docstring)."""
    _common_checks(n_samples, batch_size, baseline)
    check_positive_float(kernel_width, "kernel_width")
    check_positive_float(ridge, "ridge", allow_zero=True)
    masks = feature_masks(x, features, block, n_segments)
    from captum._utils.models.linear_model import SkLearnLinearRegression, SkLearnRidge
    from captum.attr import Lime

    surrogate = SkLearnRidge(alpha=float(ridge)) if ridge > 0 else SkLearnLinearRegression()
    explainer = Lime(model, interpretable_model=surrogate, similarity_func=lime_kernel(kernel_width))
    with torch.no_grad():
        rel, budgets = _explain_each(explainer, x, target, masks, float(baseline), n_samples, batch_size, seed, "lime")
    return Explanation(
        relevance=rel,
        method="lime",
        target=target.detach().clone(),
        info={"model_passes": budgets, "n_features": [int(m.max()) + 1 for m in masks]},
    )
