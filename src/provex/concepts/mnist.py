"""Stroke concepts for MNIST, defined from pixels alone (no model, no digit labels).

Each concept is a visual trait measured on the binarised digit (ink = pixel > 0.35); its
example set is the training images that have the trait, its counterexamples are random
training images that do not. Because the traits are computed from pixels, the concepts are
independent of the model whose use of them we test. Traits:

- ``closed loop``: at least one hole (a background component not touching the border, >= 4 px);
  0, 6, 8, 9 and some 2s.
- ``two loops``: at least two holes; mostly 8s.
- ``top bar``: a horizontal ink run of >= 12 px in the top 10 rows; 7s, 5s, 3s.
- ``vertical stroke``: a vertical ink run of >= 16 px; 1s, 4s, 9s.
- ``narrow``: ink bounding box at most half as wide as tall; mostly 1s.
- ``thick strokes``: mean stroke width (twice the mean distance-to-background over ink) in the
  top 20% of the training set; not specific to any digit (a nuisance concept).
- ``right slant``: shear of the ink's second moments in the top 20%; a nuisance concept.

``provex test-concepts`` adds a control concept: the scores of the first concept shuffled
across images, independent of everything by construction, so its tests are under H0.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

__all__ = ["INK_THRESHOLD", "MNIST_CONCEPTS", "mnist_concept_sets", "stroke_traits"]

INK_THRESHOLD = 0.35
MNIST_CONCEPTS = [
    "closed loop",
    "two loops",
    "top bar",
    "vertical stroke",
    "narrow",
    "thick strokes",
    "right slant",
]


def _holes(ink: np.ndarray) -> int:
    lab, n = ndimage.label(~ink)
    if n == 0:
        return 0
    border = set(np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])).tolist())
    areas = ndimage.sum(np.ones_like(lab), lab, index=np.arange(1, n + 1))
    return sum(1 for i, a in enumerate(areas, start=1) if i not in border and a >= 4)


def _longest_run(b: np.ndarray) -> np.ndarray:
    """Longest run of True along the last axis, per leading index."""
    best = np.zeros(b.shape[:-1], dtype=int)
    cur = np.zeros(b.shape[:-1], dtype=int)
    for k in range(b.shape[-1]):
        cur = np.where(b[..., k], cur + 1, 0)
        best = np.maximum(best, cur)
    return best


def stroke_traits(images: torch.Tensor) -> dict[str, np.ndarray]:
    """Raw trait values per image for images (n, 1, 28, 28) or (n, 28, 28) in [0, 1]."""
    x = images.detach().cpu().float().numpy()
    if x.ndim == 4:
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"images must be (n, 1, H, W) or (n, H, W), got {tuple(images.shape)}")
    ink = x > INK_THRESHOLD
    _, h, w = x.shape
    holes = np.array([_holes(b) for b in ink])
    thick = np.array([2.0 * ndimage.distance_transform_edt(b)[b].mean() if b.any() else 0.0 for b in ink])
    yy, xx = np.mgrid[:h, :w]
    mass = x.sum((1, 2)).clip(1e-6)
    cx = (x * xx).sum((1, 2)) / mass
    cy = (x * yy).sum((1, 2)) / mass
    dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]
    slant = -(x * dx * dy).sum((1, 2)) / (x * dy * dy).sum((1, 2)).clip(1e-6)
    rows_any, cols_any = ink.any(2), ink.any(1)
    height = np.array([np.ptp(np.nonzero(r)[0]) + 1 if r.any() else 1 for r in rows_any])
    width = np.array([np.ptp(np.nonzero(c)[0]) + 1 if c.any() else 1 for c in cols_any])
    top = _longest_run(ink[:, : h * 10 // 28]).max(1)
    vert = _longest_run(ink.transpose(0, 2, 1)).max(1)
    return {
        "holes": holes,
        "thickness": thick,
        "slant": slant,
        "aspect": width / height,
        "top_run": top,
        "vertical_run": vert,
    }


def mnist_concept_sets(
    images: torch.Tensor, n_examples: int = 500, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``name -> (example indices, counterexample indices)`` into ``images`` for MNIST_CONCEPTS."""
    t = stroke_traits(images)
    rng = np.random.default_rng(seed)
    has = {
        "closed loop": t["holes"] >= 1,
        "two loops": t["holes"] >= 2,
        "top bar": t["top_run"] >= 12,
        "vertical stroke": t["vertical_run"] >= 16,
        "narrow": t["aspect"] <= 0.5,
        "thick strokes": t["thickness"] >= np.quantile(t["thickness"], 0.8),
        "right slant": t["slant"] >= np.quantile(t["slant"], 0.8),
    }
    out = {}
    for name in MNIST_CONCEPTS:
        pos = np.nonzero(has[name])[0]
        neg = np.nonzero(~has[name])[0]
        if len(pos) < 10 or len(neg) < 10:
            raise ValueError(f"too few images with/without {name!r} ({len(pos)}/{len(neg)}); pass more images")
        out[name] = (
            rng.choice(pos, min(n_examples, len(pos)), replace=False),
            rng.choice(neg, min(n_examples, len(neg)), replace=False),
        )
    return out
