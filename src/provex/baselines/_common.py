"""The seeded RNG scope shared by the captum adapters (option checks live in :mod:`provex.checks`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from provex.checks import check_int

__all__ = ["seeded"]


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with the global torch RNG seeded, restoring the caller's RNG state afterwards.

    captum draws its noise and coalitions from the global generator; this makes those draws
    reproducible without disturbing the user's random stream.
    """
    check_int(seed, "seed", low=0)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
