"""Per-image random streams: an image's explanation never depends on its batch-mates.

Every stochastic method takes ``seed``: an ``int`` (every image draws from its own
generator seeded with that number, so an image gets the same draws alone and in any batch,
at any position), a sequence of ``N`` ints (image ``i`` uses ``seed[i]``; the dataset
engine passes ``run seed + dataset index`` so different images get different draws and a
shard's result does not depend on the shard size), or ``None`` (fresh entropy: not
reproducible). Methods ask for :func:`image_seeds` once and build one generator per image
with :func:`generator`; they never draw from the global RNG.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["check_seed", "derive", "generator", "image_seeds"]

SeedLike = int | Sequence[int] | torch.Tensor | None


def check_seed(seed: object, n: int | None = None, name: str = "seed") -> None:
    """``seed`` must be None, a non-negative int, or ``n`` non-negative ints."""
    if seed is None:
        return
    if isinstance(seed, bool):
        raise ValueError(f"{name} must be an int, a sequence of ints or None, got {seed!r}")
    if isinstance(seed, (int, np.integer)):
        if seed < 0:
            raise ValueError(f"{name} must be non-negative, got {seed}")
        return
    if isinstance(seed, torch.Tensor):
        if seed.is_floating_point() or seed.ndim != 1:
            raise ValueError(
                f"{name} as a tensor must be 1-D with integer entries, got {seed.dtype} {tuple(seed.shape)}"
            )
        seed = seed.tolist()
    if isinstance(seed, (list, tuple)):
        if n is not None and len(seed) != n:
            raise ValueError(f"{name} has {len(seed)} entries for {n} images")
        for s in seed:
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
                raise ValueError(f"{name} entries must be non-negative ints, got {s!r}")
        return
    raise ValueError(f"{name} must be an int, a sequence of ints or None, got {type(seed).__name__}")


def image_seeds(seed: SeedLike, n: int, name: str = "seed") -> list[int]:
    """One seed per image (``None`` draws fresh ones from the operating system)."""
    check_seed(seed, n, name)
    if seed is None:
        return [int(s) for s in np.random.SeedSequence().generate_state(n, np.uint32)]
    if isinstance(seed, (int, np.integer)):
        return [int(seed)] * n
    return [int(s) for s in (seed.tolist() if isinstance(seed, torch.Tensor) else seed)]


def derive(seed: int, *keys: int) -> int:
    """A well-mixed 63-bit seed for the sub-stream ``keys`` of ``seed`` (e.g. a repeat index)."""
    state = np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(2, np.uint64)
    return int(state[0] >> np.uint64(1))


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g
