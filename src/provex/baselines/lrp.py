"""Layer-wise relevance propagation with zennit: ``"lrp-alpha-beta"`` and ``"deep-taylor"``.

Relevance starts at the target logit and is redistributed layer by layer down to the pixels.
Each map is one modified backward pass (zennit rewrites the gradient of every layer with a
rule); the sum of the input relevance equals the target logit up to what the rules give to
bias terms (see the conservation tests).

Rules (x_j: a layer's input, w_jk: weights, R_k: relevance of output k, (.)^+ / (.)^-:
positive / negative part):

* ``"lrp-alpha-beta"`` (Bach et al. 2015): R_j = sum_k [alpha (x_j w_jk)^+ / (sum_j (x_j w_jk)^+
  + b_k^+) - beta (x_j w_jk)^- / (sum_j (x_j w_jk)^- + b_k^-)] R_k with alpha = 2, beta = 1 on
  every convolution; dense layers use the epsilon rule (``dense="epsilon"``, epsilon 0.2),
  which is iNNvestigate's "sequential preset B" used by the RDE reference code for its
  "LRP-alpha-beta" maps, or the alpha-beta rule as well (``dense="alpha-beta"``).
* ``"deep-taylor"`` (Montavon et al. 2017, "bounded" variant): the z+ rule (alpha = 1, beta = 0,
  bias ignored as in the deep Taylor derivation) on every layer but the first, and the z^B
  rule R_i = sum_j (x_i w_ij - l_i w_ij^+ - h_i w_ij^-) / sum_i (...) R_j on the first, with
  bounds l, h from the data range (each image's min and max unless ``low``/``high`` are given).

Other layers (zennit's defaults): ReLU passes relevance through unchanged, AvgPool2d uses the
LRP-0 rule on its (linear) averaging, Flatten is a reshape, so relevance is conserved across
all three; this is what the shipped ``mnist-cnn`` (a plain ``nn.Sequential``) consists of.

Why zennit and not captum: captum's ``LRP`` has no beta > 0 rule at all, and its
``Alpha1_Beta0_Rule`` only clamps the weights, computing x_j w_jk^+ / sum_j x_j w_jk^+ instead
of (x_j w_jk)^+ / sum_j (x_j w_jk)^+; the two differ as soon as a layer input can be negative
(captum issue #1234, open). zennit splits inputs and weights into their positive and negative
parts and implements the rules as defined.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from provex.baselines._common import check_positive_float
from provex.explanation import Explanation
from provex.registry import register_method

if TYPE_CHECKING:
    from zennit.core import Composite

__all__ = ["deep_taylor", "lrp_alpha_beta", "lrp_relevance"]


def lrp_relevance(model: nn.Module, x: torch.Tensor, target: torch.Tensor, composite: Composite) -> torch.Tensor:
    """Input relevance of the target logit under ``composite``; the model is restored afterwards."""
    from zennit.types import Linear as AnyLinear

    if not any(isinstance(m, AnyLinear) for m in model.modules()):
        raise ValueError("LRP needs at least one nn.Linear or convolution module in the model")
    with torch.enable_grad(), composite.context(model) as modified:
        xg = x.detach().clone().requires_grad_(True)
        out = modified(xg)
        start = torch.zeros_like(out).scatter_(1, target[:, None], out.gather(1, target[:, None]))
        (rel,) = torch.autograd.grad(out, xg, grad_outputs=start.detach())
    return rel.detach()


@register_method(
    "lrp-alpha-beta",
    family="classic attribution",
    description="LRP alpha=2, beta=1 on convolutions, epsilon on dense layers (Bach et al. 2015; zennit)",
)
def lrp_alpha_beta(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 2.0,
    beta: float = 1.0,
    dense: str = "epsilon",
    epsilon: float = 0.2,
) -> Explanation:
    """LRP-alpha-beta map; ``dense`` is "epsilon" (preset B) or "alpha-beta" (every layer)."""
    check_positive_float(alpha, "alpha")
    check_positive_float(beta, "beta", allow_zero=True)
    if abs(alpha - beta - 1.0) > 1e-12:
        raise ValueError(f"alpha - beta must equal 1 (relevance conservation), got alpha={alpha}, beta={beta}")
    check_positive_float(epsilon, "epsilon")
    from zennit.composites import LayerMapComposite, layer_map_base  # imported on use (zennit loads torchvision)
    from zennit.rules import AlphaBeta, Epsilon
    from zennit.types import Convolution

    ab = AlphaBeta(alpha=alpha, beta=beta)
    if dense == "epsilon":
        dense_rule = Epsilon(epsilon=epsilon)
    elif dense == "alpha-beta":
        dense_rule = AlphaBeta(alpha=alpha, beta=beta)
    else:
        raise ValueError(f"dense must be 'epsilon' or 'alpha-beta', got {dense!r}")
    composite = LayerMapComposite(layer_map=[*layer_map_base(), (Convolution, ab), (nn.Linear, dense_rule)])
    rel = lrp_relevance(model, x, target, composite)
    return Explanation(relevance=rel, method="lrp-alpha-beta", target=target.detach().clone(), info={"model_passes": 1})


@register_method(
    "deep-taylor",
    family="classic attribution",
    description="deep Taylor decomposition: z+ rule, z^B rule with data bounds on the first layer (Montavon 2017)",
)
def deep_taylor(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    low: float | None = None,
    high: float | None = None,
) -> Explanation:
    """Bounded deep Taylor map; ``low``/``high`` default to each image's min/max."""
    flat = x.detach().flatten(1)
    data_lo, data_hi = flat.min(1).values, flat.max(1).values
    # (N,) bounds: zennit broadcasts them over the first layer's input, whatever its shape
    lo = data_lo.clone() if low is None else torch.full_like(data_lo, float(low))
    hi = data_hi.clone() if high is None else torch.full_like(data_hi, float(high))
    if bool((lo > data_lo).any()) or bool((hi < data_hi).any()):
        raise ValueError(f"low/high must bound the data: got low={low}, high={high} for x in [{x.min()}, {x.max()}]")
    from zennit.composites import SpecialFirstLayerMapComposite, layer_map_base
    from zennit.rules import ZBox, ZPlus
    from zennit.types import Linear as AnyLinear

    composite = SpecialFirstLayerMapComposite(
        layer_map=[*layer_map_base(), (AnyLinear, ZPlus(zero_params=["bias"]))],
        first_map=[(AnyLinear, ZBox(low=lo, high=hi))],
    )
    rel = lrp_relevance(model, x, target, composite)
    return Explanation(
        relevance=rel,
        method="deep-taylor",
        target=target.detach().clone(),
        info={"model_passes": 1, "low": lo.tolist(), "high": hi.tolist()},
    )
