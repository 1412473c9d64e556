"""Training losses for learned proximal networks, and the staged schedule that uses them.

For a denoiser f trained on pairs (x, y = x + sigma * noise):

* ``l2``: E ||f(y) - x||^2 -> the MMSE denoiser E[x | y] (not the MAP);
* ``l1``: E |f(y) - x| (elementwise) -> a coordinate-wise median, a good warm start;
* ``proximal_matching``: E [1 - exp(-(||f(y) - x||_2 / gamma)^2)]. As gamma -> 0 the loss counts
  only exact hits, so its minimiser tends to the MAP denoiser prox_{-sigma^2 log p}; then the
  recovered R is (up to scaling and an additive constant) the negative log-prior.

Proximal matching is trained with gamma decreased in stages (a large gamma is smooth and easy,
a small one is accurate but needs large batches or small learning rates); see :class:`Stage`
and :func:`proximal_matching_schedule`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from provex.checks import unknown

__all__ = [
    "LOSSES",
    "Stage",
    "l1_loss",
    "l2_loss",
    "lpn_loss",
    "proximal_matching_loss",
    "proximal_matching_schedule",
]

LOSSES = ("l2", "l1", "proximal_matching")


def l2_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the squared Euclidean error per sample."""
    return (out - target).flatten(1).pow(2).sum(1).mean()


def l1_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over all entries."""
    return (out - target).abs().mean()


def proximal_matching_loss(out: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Mean over the batch of ``1 - exp(-(||out_i - target_i||_2 / gamma)^2)``."""
    if not (gamma > 0 and math.isfinite(gamma)):
        raise ValueError(f"gamma must be positive, got {gamma}")
    dist2 = (out - target).flatten(1).pow(2).sum(1)
    return (1.0 - torch.exp(-dist2 / gamma**2)).mean()


def lpn_loss(name: str, out: torch.Tensor, target: torch.Tensor, gamma: float | None = None) -> torch.Tensor:
    """Dispatch on the loss name (one of :data:`LOSSES`)."""
    if out.shape != target.shape:
        raise ValueError(f"out has shape {tuple(out.shape)} but target has shape {tuple(target.shape)}")
    if name == "l2":
        return l2_loss(out, target)
    if name == "l1":
        return l1_loss(out, target)
    if name == "proximal_matching":
        if gamma is None:
            raise ValueError("the proximal_matching loss needs gamma")
        return proximal_matching_loss(out, target, gamma)
    raise unknown("loss", name, LOSSES)


@dataclass(frozen=True)
class Stage:
    """A block of training steps with one loss, one learning rate and (for proximal matching) one gamma.

    ``batch_size`` (optional) overrides the run's batch size for this stage: small gammas need
    larger batches, since only samples with ||f(y) - x|| of order gamma carry gradient.
    """

    steps: int
    loss: str
    lr: float
    gamma: float | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if int(self.steps) != self.steps or self.steps <= 0:
            raise ValueError(f"stage steps must be a positive integer, got {self.steps}")
        if self.loss not in LOSSES:
            raise unknown("loss", self.loss, LOSSES)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"stage lr must be positive, got {self.lr}")
        if self.loss == "proximal_matching" and not (self.gamma is not None and self.gamma > 0):
            raise ValueError(f"a proximal_matching stage needs gamma > 0, got {self.gamma}")
        if self.batch_size is not None and (int(self.batch_size) != self.batch_size or self.batch_size <= 0):
            raise ValueError(f"stage batch_size must be a positive integer, got {self.batch_size}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def proximal_matching_schedule(
    pretrain_steps: int,
    steps: int,
    gamma_start: float,
    gamma_end: float,
    stages: int = 4,
    pretrain_lr: float = 1e-3,
    lr: float = 1e-4,
    final_lr: float | None = None,
    pretrain_loss: str = "l1",
) -> list[Stage]:
    """``pretrain_steps`` of ``pretrain_loss`` then ``steps`` of proximal matching in ``stages`` equal stages.

    gamma falls geometrically from ``gamma_start`` to ``gamma_end`` (the reference halves it, i.e.
    ``gamma_start = 2**(stages-1) * gamma_end``). The learning rate falls geometrically from ``lr``
    to ``final_lr`` (default: ``lr``, constant) over the proximal-matching stages.
    """
    if stages <= 0 or steps < stages:
        raise ValueError(f"need stages >= 1 and steps >= stages, got stages={stages}, steps={steps}")
    if not (0 < gamma_end <= gamma_start):
        raise ValueError(f"need 0 < gamma_end <= gamma_start, got {gamma_end}, {gamma_start}")
    final_lr = lr if final_lr is None else final_lr
    out = [Stage(pretrain_steps, pretrain_loss, pretrain_lr)] if pretrain_steps > 0 else []
    per = [steps // stages + (1 if k < steps % stages else 0) for k in range(stages)]
    for k in range(stages):
        t = k / (stages - 1) if stages > 1 else 1.0
        gamma = gamma_start * (gamma_end / gamma_start) ** t
        stage_lr = lr * (final_lr / lr) ** t
        out.append(Stage(per[k], "proximal_matching", stage_lr, gamma))
    return out
