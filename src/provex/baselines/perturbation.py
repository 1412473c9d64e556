"""Perturbation baselines on captum: ``"kernel-shap"`` (Lundberg and Lee 2017) and ``"lime"``.

Both switch groups of pixels ("features") on and off, replacing the "off" ones by a baseline
value (0.0 by default: MNIST's black background), run the model on the perturbed images and
fit a weighted linear model of the target logit on the on/off pattern. Each pixel gets its
feature's coefficient. Features:

* ``features="grid"`` (default): ``grid`` x ``grid`` pixel squares, channels tied (``grid`` is
  the component side in pixels, as in every provex method; ``block`` is its deprecated name).
  The default ``grid="auto"`` picks the smallest side >= 2 with at most 196 blocks: 2 x 2 on
  MNIST (196 features, fine enough for the pixel-level ordering test), 16 x 16 at 224 x 224
  (where 2 x 2 would be 12,544 features: KernelSHAP's regression alone would take hours);
  ``info["grid"]`` records the side used.
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

Images are explained one at a time (a separate regression per image, with a tqdm bar unless
``progress=False``); each draws from the global RNG inside a forked scope seeded with its own
seed (``seed``: an int gives every image that seed, a sequence gives image ``i`` ``seed[i]``),
so an image's map is the same alone and in any batch, and the caller's RNG is untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from provex.baselines._common import seeded
from provex.cells import auto_side
from provex.checks import check_choice, check_float, check_int, check_optional
from provex.explanation import Explanation
from provex.registry import register_method
from provex.seeding import image_seeds

__all__ = ["feature_masks", "kernel_shap", "lime", "lime_kernel"]

FEATURES = ("grid", "superpixels")


AUTO_FEATURES = 196  # grid="auto": at most this many blocks (2 x 2 on 28 x 28, 16 x 16 at 224 x 224)


def block_side(shape: tuple[int, ...], grid: int | str) -> int:
    """The block side of ``grid`` (``"auto"``: the smallest side >= 2 with at most 196 blocks)."""
    h, w = int(shape[-2]), int(shape[-1])
    if grid == "auto":
        return auto_side(h, w, AUTO_FEATURES, at_least=2)
    return check_int(grid, "grid")


def feature_masks(
    x: torch.Tensor, features: str = "grid", grid: int | str = "auto", n_segments: int = 50
) -> torch.Tensor:
    """(N, C, H, W) integer feature ids 0..M-1 per image (channels tied).

    ``grid``: ``grid`` x ``grid`` pixel squares (the last row/column may be narrower when
    ``grid`` does not divide the image); ``"auto"`` sizes them by the image (at most 196
    blocks: 2 x 2 pixels on 28 x 28, 16 x 16 at 224 x 224), so the cost of KernelSHAP and
    LIME does not grow with the resolution. ``superpixels``: SLIC segments of each image.
    """
    n, c, h, w = x.shape
    check_choice(features, "features", FEATURES)
    if features == "grid":
        grid = block_side(x.shape, grid)
        if grid > min(h, w):
            raise ValueError(f"grid={grid} is larger than the image ({h} x {w})")
        cols = math.ceil(w / grid)
        ids = (torch.arange(h)[:, None] // grid) * cols + torch.arange(w)[None, :] // grid
        return ids.to(x.device).expand(n, c, h, w).clone()
    if features == "superpixels":
        check_int(n_segments, "n_segments")
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
    raise AssertionError(features)  # unreachable: check_choice above


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
    seed: int | Sequence[int] | None,
    progress: bool,
    desc: str,
) -> tuple[torch.Tensor, list[int], list[int]]:
    """Each image on its own, with its own seed: (relevance, budgets, seeds)."""
    rel = torch.empty_like(x)
    sizes = []
    seeds = image_seeds(seed, x.shape[0])
    for i in tqdm(range(x.shape[0]), desc=desc, disable=not progress, leave=False):
        m = int(masks[i].max()) + 1
        budget = n_samples if n_samples is not None else 2 * m + 2048
        sizes.append(budget)
        with seeded(seeds[i], x.device):
            rel[i] = explainer.attribute(
                x[i : i + 1],
                baselines=baseline,
                target=target[i : i + 1],
                feature_mask=masks[i : i + 1],
                n_samples=budget,
                perturbations_per_eval=min(batch_size, budget),
            )[0].detach()
    return rel, sizes, seeds


def _common_checks(n_samples: int | None, batch_size: int, baseline: float) -> None:
    check_optional(check_int, n_samples, "n_samples")
    check_int(batch_size, "batch_size")
    check_float(baseline, "baseline")


def _info(budgets: list[int], masks: torch.Tensor, seeds: list[int], grid: int | None) -> dict[str, Any]:
    return {
        "grid": grid,
        "per_image": {
            "n_samples": torch.tensor(budgets),
            "n_features": torch.tensor([int(m.max()) + 1 for m in masks]),
        },
        "seeds": seeds,
    }


@register_method(
    "kernel-shap",
    family="classic attribution",
    description="KernelSHAP Shapley values of pixel blocks or superpixels (Lundberg and Lee 2017; captum)",
    cheap_options={"n_samples": 16},
    deprecated={"block": "grid"},
)
def kernel_shap(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    features: str = "grid",
    grid: int | str = "auto",
    n_segments: int = 50,
    n_samples: int | None = None,
    baseline: float = 0.0,
    batch_size: int = 512,
    seed: int | Sequence[int] | None = 0,
    progress: bool = True,
) -> Explanation:
    """KernelSHAP map; ``n_samples=None`` uses the shap package's 2 M + 2048 budget."""
    _common_checks(n_samples, batch_size, baseline)
    side = block_side(x.shape, grid) if features == "grid" else None
    masks = feature_masks(x, features, side or grid, n_segments)  # side: None for superpixels
    from captum.attr import KernelShap  # imported on use: keeps `import provex` light

    with torch.no_grad():
        rel, budgets, seeds = _explain_each(
            KernelShap(model), x, target, masks, float(baseline), n_samples, batch_size, seed, progress, "kernel-shap"
        )
    return Explanation(
        relevance=rel, method="kernel-shap", target=target.detach().clone(), info=_info(budgets, masks, seeds, side)
    )


@register_method(
    "lime",
    family="classic attribution",
    description="LIME: weighted ridge fit on pixel blocks or superpixels switched off (Ribeiro et al. 2016; captum)",
    cheap_options={"n_samples": 16},
    deprecated={"block": "grid"},
)
def lime(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    features: str = "grid",
    grid: int | str = "auto",
    n_segments: int = 50,
    n_samples: int = 1000,
    kernel_width: float = 0.25,
    ridge: float = 1.0,
    baseline: float = 0.0,
    batch_size: int = 512,
    seed: int | Sequence[int] | None = 0,
    progress: bool = True,
) -> Explanation:
    """LIME map with the lime package's image settings (see the module docstring)."""
    _common_checks(n_samples, batch_size, baseline)
    check_float(kernel_width, "kernel_width", low=0, low_open=True)
    check_float(ridge, "ridge", low=0)
    side = block_side(x.shape, grid) if features == "grid" else None
    masks = feature_masks(x, features, side or grid, n_segments)  # side: None for superpixels
    from captum._utils.models.linear_model import SkLearnLinearRegression, SkLearnRidge
    from captum.attr import Lime

    surrogate = SkLearnRidge(alpha=float(ridge)) if ridge > 0 else SkLearnLinearRegression()
    explainer = Lime(model, interpretable_model=surrogate, similarity_func=lime_kernel(kernel_width))
    with torch.no_grad():
        rel, budgets, seeds = _explain_each(
            explainer, x, target, masks, float(baseline), n_samples, batch_size, seed, progress, "lime"
        )
    return Explanation(
        relevance=rel, method="lime", target=target.detach().clone(), info=_info(budgets, masks, seeds, side)
    )
