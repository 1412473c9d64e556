"""Sensitivity (Simonyan et al. 2013): the gradient of the target logit w.r.t. the input.

Computed with one batched autograd pass for all N images (the logits of different images
do not interact, so the gradient of their sum gives each image's own gradient).
"""

from __future__ import annotations

import torch
from torch import nn

from provex.explanation import Explanation
from provex.registry import register_method

__all__ = ["sensitivity", "target_logit_gradient"]


def target_logit_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """d logit_target(x) / dx for each image, shape of ``x``; parameters' grads untouched."""
    xg = x.detach().clone().requires_grad_(True)
    logits = model(xg)
    selected = logits.gather(1, target.view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(selected, xg)
    return grad.detach()


@register_method(
    "sensitivity",
    family="classic attribution",
    description="gradient of the target logit w.r.t. the input (Simonyan et al. 2013)",
)
def sensitivity(model: nn.Module, x: torch.Tensor, target: torch.Tensor, absolute: bool = False) -> Explanation:
    """Gradient map; ``absolute=True`` returns its magnitude (the usual 'saliency' display)."""
    grad = target_logit_gradient(model, x, target)
    rel = grad.abs() if absolute else grad
    return Explanation(relevance=rel, method="sensitivity", target=target.detach().clone(), info={"model_passes": 1})
