"""Input checks shared by every method: clear ``ValueError``s that name the argument."""

from __future__ import annotations

import torch

__all__ = ["check_finite", "check_images", "check_relevance", "resolve_target"]


def check_images(x: object, name: str = "x") -> torch.Tensor:
    """``x`` must be a floating (N, C, H, W) tensor with N >= 1 and only finite values."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype (e.g. torch.float32), got {x.dtype}")
    if x.ndim != 4:
        hint = " (add a batch dimension with x.unsqueeze(0))" if x.ndim == 3 else ""
        raise ValueError(f"{name} must have shape (N, C, H, W), got {tuple(x.shape)}{hint}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (N = 0)")
    check_finite(x, name)
    return x


def check_finite(t: torch.Tensor, name: str) -> None:
    """Raise if ``t`` holds NaN or infinity."""
    if not bool(torch.isfinite(t).all()):
        bad = "NaN" if bool(torch.isnan(t).any()) else "inf"
        raise ValueError(f"{name} contains {bad} values")


def check_relevance(relevance: object, x: torch.Tensor, name: str = "relevance") -> torch.Tensor:
    """A relevance map must be a finite tensor of exactly ``x``'s shape."""
    if not isinstance(relevance, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(relevance).__name__}")
    if relevance.shape != x.shape:
        raise ValueError(f"{name} has shape {tuple(relevance.shape)} but x has shape {tuple(x.shape)}")
    check_finite(relevance, name)
    return relevance


def resolve_target(
    target: int | torch.Tensor | None,
    logits: torch.Tensor,
    name: str = "target",
) -> torch.Tensor:
    """Per-image target classes (N,) on ``logits``' device; ``None`` means the predicted class."""
    n, num_classes = logits.shape[0], logits.shape[1]
    if target is None:
        return logits.argmax(1)
    t = torch.as_tensor(target)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer class index or an integer tensor, got dtype {t.dtype}")
    t = t.to(device=logits.device, dtype=torch.long)
    if t.ndim == 0:
        t = t.expand(n).clone()
    if t.shape != (n,):
        raise ValueError(f"{name} must be an int or have shape ({n},), got {tuple(t.shape)}")
    if bool(((t < 0) | (t >= num_classes)).any()):
        raise ValueError(f"{name} out of range: classes are 0..{num_classes - 1}, got {t.tolist()}")
    return t
