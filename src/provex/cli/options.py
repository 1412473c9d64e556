"""Helpers shared by sub-commands: ``-O key=value`` method options and image inputs."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["load_input", "parse_options"]


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["rate=100", "distortion=adf"]`` -> ``{"rate": 100, "distortion": "adf"}``."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--option must look like key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        try:
            out[key.strip().replace("-", "_")] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key.strip().replace("-", "_")] = raw
    return out


def load_input(path: str | Path) -> torch.Tensor:
    """Read images (N, C, H, W) or (C, H, W) from a ``.pt`` tensor or a ``.npy`` array."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--input: no such file {path}")
    if path.suffix == ".npy":
        t = torch.from_numpy(np.load(path, allow_pickle=False))
    elif path.suffix in (".pt", ".pth"):
        t = torch.load(path, map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"--input must be a .pt or .npy file, got {path.suffix!r}")
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"--input: {path} does not hold a tensor")
    t = t.float()
    return t.unsqueeze(0) if t.ndim == 3 else t
