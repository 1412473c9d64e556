"""Small helpers shared by the captum and zennit adapters: option checks and seeded RNG scopes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["check_positive_float", "check_positive_int", "seeded"]


def check_positive_int(value: object, name: str) -> int:
    """``value`` must be an integer >= 1 (bools rejected); the error names ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_positive_float(value: object, name: str, allow_zero: bool = False) -> float:
    """``value`` must be a finite real number > 0 (>= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not (v >= 0 if allow_zero else v > 0) or v != v or v == float("inf"):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value!r}")
    return v


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with the global torch RNG seeded, restoring the caller's RNG state afterwards.

    captum draws its noise and coalitions from the global generator; this makes those draws
    reproducible without disturbing the user's random stream.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
