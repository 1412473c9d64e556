"""Guided Backprop (Springenberg et al. 2015): backpropagate only positive gradients through ReLUs.

Built on captum's ``GuidedBackprop``: at every ``nn.ReLU`` module the backward pass keeps the
usual ReLU gate (input > 0) and additionally zeroes negative incoming gradients. captum can
only override ReLUs that are ``nn.ReLU`` modules, so a model without any (for example one that
calls ``torch.relu`` in ``forward``) is rejected instead of silently returning the plain
gradient.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from provex.explanation import Explanation
from provex.registry import register_method

__all__ = ["guided_backprop"]


@register_method(
    "guided-backprop",
    family="classic attribution",
    description="gradient with negative signals stopped at every ReLU (Springenberg et al. 2015; captum)",
)
def guided_backprop(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> Explanation:
    """Guided-backprop map of the target logit, one batched backward pass."""
    if not any(isinstance(m, nn.ReLU) for m in model.modules()):
        raise ValueError(
            "guided-backprop needs the model's ReLUs as nn.ReLU modules (found none); "
            "functional relu calls cannot be hooked"
        )
    from captum.attr import GuidedBackprop  # imported on use: keeps `import provex` light

    with torch.enable_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU", category=UserWarning)
        xg = x.detach().clone().requires_grad_(True)
        rel = GuidedBackprop(model).attribute(xg, target=target).detach()
    return Explanation(
        relevance=rel, method="guided-backprop", target=target.detach().clone(), info={"model_passes": 1}
    )
