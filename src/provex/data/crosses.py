"""Synthetic "crosses" images with known ground truth, as in the h-Shap paper's first experiment.

An image is a white ``height x width`` RGB canvas divided into a lattice of ``cell x cell``
pixel slots (10 x 12 slots of 10 px for the default 100 x 120 image). Shapes are drawn in
randomly chosen slots, each in one of ten colours: filled circles, filled squares, filled
triangles (the distractors) and crosses, an "X" of two one-pixel diagonals 9 px wide. The
label is 1 when the image contains at least one cross, and the ground-truth mask marks the
crosses' pixels, so an explanation can be scored against it (f1 of the thresholded map).

The generator follows the facts of the paper's data (100 x 120 images, 9 px crosses on a 10 px
lattice, distractor shapes of random colours, the number of shapes exponential with mean 10,
negatives contain no cross); the drawing code is our own and fully vectorised, so thousands of
images take well under a second and any set can be regenerated exactly from its seed.

Example: ``d = provex.data.crosses(8, seed=0)`` gives ``d.images`` (8, 3, 100, 120) in [0, 1],
``d.labels``, ``d.masks`` (8, 1, 100, 120) and ``d.counts``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["COLORS", "SHAPES", "Crosses", "crosses"]

SHAPES = ("empty", "cross", "circle", "square", "triangle")
"""Slot contents; index 1 is the cross (the class the model detects)."""

COLORS = np.array(
    [
        (0, 0, 200),  # blue
        (0, 200, 0),  # green
        (200, 0, 0),  # red
        (100, 0, 100),  # purple
        (250, 250, 0),  # yellow
        (250, 0, 125),  # pink
        (0, 0, 0),  # black
        (250, 125, 0),  # orange
        (125, 50, 50),  # brown
        (125, 125, 125),  # gray
    ],
    dtype=np.float32,
)
"""The ten RGB colours (0-255) shapes are drawn in."""


class Crosses(NamedTuple):
    """A batch of synthetic images with their labels and ground truth.

    Attributes:
        images: float32 (n, 3, H, W) in [0, 1] (white background).
        labels: int64 (n,), 1 if the image contains at least one cross.
        masks: bool (n, 1, H, W), True on the pixels of the crosses.
        counts: int64 (n,), number of crosses in each image.
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    counts: torch.Tensor


def _stamps(cell: int) -> np.ndarray:
    """Binary (5, cell, cell) drawings of each slot content, 9 px wide for cell = 10."""
    lo, hi = 1, cell - 1  # inclusive pixel range of a shape inside its slot
    r, c = np.mgrid[0:cell, 0:cell]
    inside = (r >= lo) & (r <= hi) & (c >= lo) & (c <= hi)
    centre = (lo + hi) / 2
    half = (hi - lo) / 2
    cross = inside & ((r - lo == c - lo) | (r - lo == hi - c))
    circle = (r - centre) ** 2 + (c - centre) ** 2 <= half**2
    square = inside
    # Triangle with its base on the bottom row of the shape and its apex at the top centre.
    triangle = inside & (np.abs(c - centre) <= (r - lo) / 2 + 0.5)
    empty = np.zeros_like(inside)
    return np.stack([empty, cross, circle, square, triangle]).astype(np.float32)


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def crosses(
    n: int,
    seed: int = 0,
    *,
    positive_fraction: float = 0.5,
    n_crosses: int | Sequence[int] = (1, 2, 3, 4, 5, 6, 7, 8, 9),
    mean_shapes: float = 10.0,
    noise_std: float = 0.0,
    height: int = 100,
    width: int = 120,
    cell: int = 10,
) -> Crosses:
    """Generate ``n`` crosses images deterministically from ``seed``.

    Args:
        n: number of images.
        seed: seed of the NumPy generator; the same arguments always give the same images.
        positive_fraction: fraction of images (rounded) that contain crosses; the positives
            come first in a random order of the batch.
        n_crosses: the number of crosses of a positive image, or the counts to draw it from
            uniformly (the paper reports images with 1 and with 6 crosses).
        mean_shapes: mean of the exponential law of the number of distractor shapes
            (rounded up, at most the number of free slots).
        noise_std: standard deviation of Gaussian noise added to the [0, 1] image (clipped).
        height, width: image size in pixels; multiples of ``cell``.
        cell: slot size in pixels; shapes are ``cell - 1`` pixels wide.
    """
    n = _check_int(n, "n", 1)
    cell = _check_int(cell, "cell", 4)
    height = _check_int(height, "height", cell)
    width = _check_int(width, "width", cell)
    if height % cell or width % cell:
        raise ValueError(f"height and width must be multiples of cell={cell}, got {height} x {width}")
    if not 0.0 <= float(positive_fraction) <= 1.0:
        raise ValueError(f"positive_fraction must lie in [0, 1], got {positive_fraction}")
    counts_allowed = np.atleast_1d(np.asarray(n_crosses))
    rows, cols = height // cell, width // cell
    slots = rows * cols
    if counts_allowed.size == 0 or counts_allowed.dtype.kind not in "iu" or counts_allowed.min() < 1:
        raise ValueError(f"n_crosses must be positive integers, got {n_crosses!r}")
    if counts_allowed.max() > slots:
        raise ValueError(f"n_crosses must be at most the {slots} slots of the image, got {n_crosses!r}")
    if mean_shapes < 0 or noise_std < 0:
        raise ValueError("mean_shapes and noise_std must be non-negative")

    rng = np.random.default_rng(seed)
    n_pos = round(n * float(positive_fraction))
    counts = np.zeros(n, dtype=np.int64)
    counts[:n_pos] = rng.choice(counts_allowed, size=n_pos)
    counts = counts[rng.permutation(n)]
    n_shapes = np.minimum(np.ceil(rng.exponential(mean_shapes, size=n)).astype(np.int64), slots - counts)

    # Slot contents: a random order of the slots; the first `counts` get crosses, the next
    # `n_shapes` get distractors, the rest stay empty.
    order = np.argsort(rng.random((n, slots)), axis=1)
    rank = np.argsort(order, axis=1)  # position of each slot in the random order
    kind = np.zeros((n, slots), dtype=np.int64)
    distractor = rng.integers(2, len(SHAPES), size=(n, slots))
    is_cross = rank < counts[:, None]
    is_shape = (rank >= counts[:, None]) & (rank < (counts + n_shapes)[:, None])
    kind[is_cross] = 1
    kind[is_shape] = distractor[is_shape]
    colour = rng.integers(0, len(COLORS), size=(n, slots))

    stamps = _stamps(cell)  # (5, cell, cell)
    # Each slot's drawing in colour (channels first): the image is white where nothing is drawn.
    ink = stamps[kind][:, :, None] * (1.0 - COLORS[colour] / 255.0)[:, :, :, None, None]  # (n, slots, 3, c, c)
    ink = ink.reshape(n, rows, cols, 3, cell, cell).transpose(0, 3, 1, 4, 2, 5)
    images = 1.0 - ink.reshape(n, 3, height, width)
    if noise_std > 0:
        images = np.clip(images + rng.normal(0.0, noise_std, size=images.shape), 0.0, 1.0)
    mask = (stamps[kind] * (kind == 1)[:, :, None, None]).reshape(n, rows, cols, cell, cell)
    mask = mask.transpose(0, 1, 3, 2, 4).reshape(n, height, width)

    return Crosses(
        images=torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)),
        labels=torch.from_numpy((counts > 0).astype(np.int64)),
        masks=torch.from_numpy(mask[:, None] > 0),
        counts=torch.from_numpy(counts),
    )
