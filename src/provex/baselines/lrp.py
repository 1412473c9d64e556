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

Other layers (zennit's defaults): activations pass relevance through unchanged, average
pooling uses the LRP-0 rule on its (linear) averaging, max pooling and reshapes route it by
their gradient, so relevance is conserved across all of them. Real architectures need more:
:mod:`provex.baselines.canonize` reads the model's data flow with ``torch.fx``, merges each
BatchNorm into the layer before it (zennit's ``MergeBatchNorm``), splits residual additions
with zennit's ``Sum`` layer and LRP-0 rule (as zennit's ResNet canonizer does), and refuses
operations through which relevance would not be conserved (attention, products of two
equal-size tensors, ...) with an error naming them. On torchvision's ``resnet18`` the input
relevance of ``deep-taylor`` sums to the target logit (it summed to 256 times the logit
before, one doubling per residual addition); ``info["per_image"]["conservation"]`` holds
sum(relevance) / logit per image.

The map comes from one forward+backward pass, whose forward also gives the prediction.

Why zennit and not captum: captum's ``LRP`` has no beta > 0 rule at all, and its
``Alpha1_Beta0_Rule`` only clamps the weights, computing x_j w_jk^+ / sum_j x_j w_jk^+ instead
of (x_j w_jk)^+ / sum_j (x_j w_jk)^+; the two differ as soon as a layer input can be negative
(captum issue #1234, open). zennit splits inputs and weights into their positive and negative
parts and implements the rules as defined.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from provex.baselines.canonize import NORM_LAYERS, DetachedAttention, LinearFunction, canonized, prepare
from provex.checks import check_choice, check_float, check_logits, check_optional, resolve_target
from provex.explanation import Explanation
from provex.registry import register_method

if TYPE_CHECKING:
    from zennit.core import Composite

__all__ = ["deep_taylor", "lrp_alpha_beta", "lrp_relevance"]


STABILIZER_EPS = 1e-6


def stabilizer(denominator: torch.Tensor) -> torch.Tensor:
    """Scale-free stabilizer of the rules' denominators: ``|d|`` raised to at least ``1e-6`` times the
    root mean square of ``d`` over the image (per image), keeping its sign (``+`` for 0).

    zennit's default adds 1e-6 to every denominator, which swallows all relevance once a layer's
    activations are below ~1e-6 (it happens deep inside randomly initialised MobileNets); this
    one only touches denominators that are tiny relative to their own layer.
    """
    d = denominator
    sign = (d == 0).to(d) + d.sign()
    rms = d.square().flatten(1).mean(1).sqrt().view(-1, *([1] * (d.ndim - 1))) if d.ndim > 1 else d.abs()
    floor = STABILIZER_EPS * rms + torch.finfo(d.dtype).tiny
    return sign * torch.maximum(d.abs(), floor)


def _base_map() -> list[tuple[Any, Any]]:
    """zennit's basic layer map plus the pass rule for layer norms and LRP-0 for linear functions."""
    from zennit.composites import layer_map_base
    from zennit.rules import Norm, Pass

    return [
        *layer_map_base(stabilizer),
        (NORM_LAYERS, Pass()),
        ((LinearFunction, DetachedAttention), Norm(stabilizer=stabilizer)),
    ]


def lrp_relevance(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | None,
    composite: Composite | None = None,
    *,
    make_composite: Any = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """(input relevance, target, logits, info) of the target logit under a zennit composite.

    The model is canonized first (:func:`provex.baselines.canonize.prepare`) and restored
    afterwards. ``make_composite(first_layer_name)`` builds the composite once the first
    layer (by data flow) is known; or pass a ready ``composite``.
    """
    from zennit.types import Linear as AnyLinear

    if not any(isinstance(m, AnyLinear) for m in model.modules()):
        raise ValueError("model: LRP needs at least one nn.Linear or convolution module in the model")
    prepared = prepare(model)
    if composite is None:
        composite = make_composite(prepared.first_layer)
    with canonized(prepared) as module, torch.enable_grad(), composite.context(module) as modified:
        xg = x.detach().clone().requires_grad_(True)
        out = check_logits(modified(xg), x.shape[0])
        tgt = resolve_target(target, out)
        start = torch.zeros_like(out).scatter_(1, tgt[:, None], out.gather(1, tgt[:, None]))
        (rel,) = torch.autograd.grad(out, xg, grad_outputs=start.detach())
    logits = out.detach()
    logit = logits.gather(1, tgt[:, None])[:, 0]
    total = rel.detach().flatten(1).sum(1)
    ratio = torch.where(logit != 0, total / torch.where(logit != 0, logit, 1.0), torch.nan)
    info: dict[str, Any] = {"canonization": prepared.summary, "per_image": {"conservation": ratio.cpu()}}
    if prepared.converted:
        info["model_calls_converted"] = x.shape[0]
    return rel.detach(), tgt, logits, info


@register_method(
    "lrp-alpha-beta",
    family="classic attribution",
    description="LRP alpha=2, beta=1 on convolutions, epsilon on dense layers (Bach et al. 2015; zennit)",
    resolves_target=True,
)
def lrp_alpha_beta(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | None,
    alpha: float = 2.0,
    beta: float = 1.0,
    dense: str = "epsilon",
    epsilon: float = 0.2,
) -> Explanation:
    """LRP-alpha-beta map; ``dense`` is "epsilon" (preset B) or "alpha-beta" (every layer)."""
    alpha = check_float(alpha, "alpha", low=0, low_open=True)
    beta = check_float(beta, "beta", low=0)
    if abs(alpha - beta - 1.0) > 1e-12:
        raise ValueError(f"alpha - beta must equal 1 (relevance conservation), got alpha={alpha}, beta={beta}")
    epsilon = check_float(epsilon, "epsilon", low=0, low_open=True)
    check_choice(dense, "dense", ("epsilon", "alpha-beta"))
    from zennit.composites import LayerMapComposite  # imported on use (zennit loads torchvision)
    from zennit.rules import AlphaBeta, Epsilon
    from zennit.types import Convolution

    def make(_first: str | None) -> Composite:
        ab = AlphaBeta(alpha=alpha, beta=beta, stabilizer=stabilizer)
        dense_rule = Epsilon(epsilon=epsilon) if dense == "epsilon" else ab
        return LayerMapComposite(layer_map=[*_base_map(), (Convolution, ab), (nn.Linear, dense_rule)])

    rel, tgt, logits, info = lrp_relevance(model, x, target, make_composite=make)
    return Explanation(
        relevance=rel, method="lrp-alpha-beta", target=tgt.clone(), info=info, prediction=logits.argmax(1)
    )


@register_method(
    "deep-taylor",
    family="classic attribution",
    description="deep Taylor decomposition: z+ rule, z^B rule with data bounds on the first layer (Montavon 2017)",
    resolves_target=True,
)
def deep_taylor(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | None,
    low: float | None = None,
    high: float | None = None,
) -> Explanation:
    """Bounded deep Taylor map; ``low``/``high`` default to each image's min/max."""
    low = check_optional(check_float, low, "low")
    high = check_optional(check_float, high, "high")
    flat = x.detach().flatten(1)
    data_lo, data_hi = flat.min(1).values, flat.max(1).values
    # (N,) bounds: zennit broadcasts them over the first layer's input, whatever its shape
    lo = data_lo.clone() if low is None else torch.full_like(data_lo, low)
    hi = data_hi.clone() if high is None else torch.full_like(data_hi, high)
    if bool((lo > data_lo).any()) or bool((hi < data_hi).any()):
        raise ValueError(
            f"low/high must bound the data: got low={low}, high={high} for x in [{float(x.min())}, {float(x.max())}]"
        )
    from zennit.composites import LayerMapComposite, MixedComposite, NameMapComposite
    from zennit.rules import ZBox, ZPlus
    from zennit.types import Linear as AnyLinear

    def make(first: str | None) -> Composite:
        rest = LayerMapComposite(
            layer_map=[*_base_map(), (AnyLinear, ZPlus(stabilizer=stabilizer, zero_params=["bias"]))]
        )
        if first is None:
            return rest
        return MixedComposite([NameMapComposite([((first,), ZBox(low=lo, high=hi, stabilizer=stabilizer))]), rest])

    rel, tgt, logits, info = lrp_relevance(model, x, target, make_composite=make)
    info.update({"low": lo.tolist(), "high": hi.tolist()})
    return Explanation(relevance=rel, method="deep-taylor", target=tgt.clone(), info=info, prediction=logits.argmax(1))
