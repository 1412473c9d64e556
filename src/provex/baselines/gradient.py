"""Sensitivity (Simonyan et al. 2013): the gradient of the target logit w.r.t. the input.

Computed with one batched autograd pass for all N images (the logits of different images
do not interact, so the gradient of their sum gives each image's own gradient). The same
forward pass gives the prediction (and the target when none is given), so a call costs one
forward+backward pass per image, as a direct autograd or captum ``Saliency`` call does.
"""

from __future__ import annotations

import torch
from torch import nn

from provex.checks import check_bool, check_logits, resolve_target
from provex.explanation import Explanation
from provex.registry import register_method

__all__ = ["logit_gradient", "sensitivity", "target_logit_gradient"]


def logit_gradient(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(d logit_target / dx, target, logits) from one forward+backward pass.

    ``target`` None means the predicted class. Parameters' ``.grad`` are left untouched.
    """
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        logits = check_logits(model(xg), x.shape[0])
        tgt = resolve_target(target, logits)
        selected = logits.gather(1, tgt.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(selected, xg)
    return grad.detach(), tgt, logits.detach()


def target_logit_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """d logit_target(x) / dx for each image, shape of ``x``; parameters' grads untouched."""
    return logit_gradient(model, x, target)[0]


@register_method(
    "sensitivity",
    family="classic attribution",
    description="gradient of the target logit w.r.t. the input (Simonyan et al. 2013)",
    resolves_target=True,
)
def sensitivity(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None, absolute: bool = False) -> Explanation:
    """Gradient map; ``absolute=True`` returns its magnitude (the usual 'saliency' display)."""
    check_bool(absolute, "absolute")
    grad, tgt, logits = logit_gradient(model, x, target)
    rel = grad.abs() if absolute else grad
    return Explanation(relevance=rel, method="sensitivity", target=tgt.clone(), prediction=logits.argmax(1))
