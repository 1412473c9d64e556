"""Guided Backprop (Springenberg et al. 2015): backpropagate only positive gradients through ReLUs.

At every ReLU the backward pass keeps the usual gate (input > 0) and additionally zeroes the
negative incoming gradients. Implemented with a forward hook on each activation module that
routes the module's output through an identity whose backward clamps the gradient at zero;
the module's own backward then applies its gate. This is what captum's ``GuidedBackprop``
computes, in one forward+backward pass whose forward also gives the prediction (captum needs
the target before its forward pass, which would cost a second pass when the target is the
predicted class), and it works with in-place ReLUs.

The paper defines the rule for ReLU networks. Models with other activation modules (GELU,
SiLU, Hardswish, ... : any of zennit's activation types) get the same treatment: negative
gradients are stopped at every activation, and the activation's own derivative applies;
``info["activations"]`` counts the hooked modules by type. The hooks can only reach
activation *modules*, so a model without any (for example one that calls ``torch.relu`` in
``forward``) is refused instead of silently returning the plain gradient.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import nn

from provex.baselines.gradient import logit_gradient
from provex.explanation import Explanation
from provex.registry import register_method

__all__ = ["activation_modules", "guided_backprop"]


class _PositiveGradient(torch.autograd.Function):
    """Identity forward; backward keeps only the positive part of the incoming gradient."""

    @staticmethod
    def forward(ctx: Any, out: torch.Tensor) -> torch.Tensor:
        return out.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0)


def activation_modules(model: nn.Module) -> list[nn.Module]:
    """The model's activation modules (zennit's ``Activation`` types, attention excluded)."""
    from zennit.types import Activation

    return [m for m in model.modules() if isinstance(m, Activation) and not isinstance(m, nn.MultiheadAttention)]


def _guide(_module: nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor:
    return _PositiveGradient.apply(out) if isinstance(out, torch.Tensor) and out.requires_grad else out


@register_method(
    "guided-backprop",
    family="classic attribution",
    description="gradient with negative signals stopped at every ReLU (activation) (Springenberg et al. 2015)",
    resolves_target=True,
)
def guided_backprop(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None) -> Explanation:
    """Guided-backprop map of the target logit, one batched forward+backward pass."""
    acts = activation_modules(model)
    if not acts:
        raise ValueError(
            "guided-backprop needs the model's activations as modules (nn.ReLU, nn.GELU, ...; found none); "
            "functional calls such as torch.relu cannot be hooked"
        )
    handles = [m.register_forward_hook(_guide) for m in acts]
    try:
        rel, tgt, logits = logit_gradient(model, x, target)
    finally:
        for h in handles:
            h.remove()
    kinds = Counter(type(m).__name__ for m in acts)
    return Explanation(
        relevance=rel,
        method="guided-backprop",
        target=tgt.clone(),
        prediction=logits.argmax(1),
        info={"activations": dict(kinds)},
    )
