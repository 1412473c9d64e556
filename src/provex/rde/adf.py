"""Convert a plain PyTorch network into a ``torch-adf`` network that propagates (mean, var).

Assumed density filtering (ADF) pushes a Gaussian with diagonal covariance through the
network layer by layer (moment matching after each ReLU). ``to_adf(model)`` walks an
``nn.Sequential`` (nested ones too), maps every layer to its ``torchadf.nn`` twin and *shares*
the parameters, so the ADF network follows the model's device and dtype. Layers without an
ADF twin are all collected and reported in one ``ValueError``.

ReLU layers become :class:`FusedReLU`, a ``torchadf.nn.ReLU`` whose moment matching and its
analytic derivatives run as one autograd function: the same formulas as torch-adf (equal to
~1e-15 in the forward pass, tested), about 3x faster on CPU because it avoids
``torch.distributions``' argument validation and the many temporaries of the generic graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torchadf.nn as adf
from torch import nn

__all__ = ["SUPPORTED_LAYERS", "FusedReLU", "to_adf"]

_EPS = 1e-7  # torch-adf's variance floor inside the square root
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class _ReLUMoments(torch.autograd.Function):
    """Mean and variance of relu(X), X ~ N(mu, var), with hand-written derivatives.

    m = mu Phi(z) + sd phi(z),  E[relu(X)^2] = mu m + var Phi(z),  z = mu / sd;
    dm/dmu = Phi, dm/dvar = phi / (2 sd), dE2/dmu = 2 m, dE2/dvar = Phi.
    """

    @staticmethod
    def forward(ctx, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        sd = (var + _EPS).sqrt()
        z = mean / sd
        cdf = torch.special.ndtr(z)
        pdf = torch.exp(-0.5 * z * z) * _INV_SQRT_2PI
        m = mean * cdf + sd * pdf
        v = mean * m + var * cdf - m * m
        pos = v > 0
        v = torch.where(pos, v, 0.0)
        m = m.clamp_min(0.0)
        ctx.save_for_backward(cdf, pdf / sd, m, pos)
        return m, v

    @staticmethod
    def backward(ctx, grad_m: torch.Tensor, grad_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        cdf, pdf_sd, m, pos = ctx.saved_tensors
        grad_v = torch.where(pos, grad_v, 0.0)
        grad_mean = grad_m * cdf + grad_v * 2.0 * m * (1.0 - cdf)
        grad_var = grad_m * 0.5 * pdf_sd + grad_v * (cdf - m * pdf_sd)
        return grad_mean, grad_var


class FusedReLU(adf.ReLU):
    """torch-adf's diagonal ADF ReLU computed by one fused autograd function."""

    def forward(self, in_mean: torch.Tensor, in_var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _ReLUMoments.apply(in_mean, in_var)


def _conv(cls: type) -> Callable[[nn.Module], nn.Module]:
    def make(m: nn.Module) -> nn.Module:
        out = cls(
            m.in_channels,
            m.out_channels,
            m.kernel_size,
            stride=m.stride,
            padding=m.padding,
            dilation=m.dilation,
            groups=m.groups,
            bias=m.bias is not None,
            device="meta",
        )
        out.weight, out.bias = m.weight, m.bias
        return out

    return make


def _linear(m: nn.Linear) -> nn.Module:
    out = adf.Linear(m.in_features, m.out_features, bias=m.bias is not None, device="meta")
    out.weight, out.bias = m.weight, m.bias
    return out


def _avgpool(cls: type) -> Callable[[nn.Module], nn.Module]:
    def make(m: nn.Module) -> nn.Module:
        kw = {"divisor_override": m.divisor_override} if hasattr(m, "divisor_override") else {}
        return cls(m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, **kw)

    return make


SUPPORTED_LAYERS: dict[type, Callable[[nn.Module], nn.Module]] = {
    nn.Conv1d: _conv(adf.Conv1d),
    nn.Conv2d: _conv(adf.Conv2d),
    nn.Conv3d: _conv(adf.Conv3d),
    nn.Linear: _linear,
    nn.ReLU: lambda m: FusedReLU(),
    nn.AvgPool1d: _avgpool(adf.AvgPool1d),
    nn.AvgPool2d: _avgpool(adf.AvgPool2d),
    nn.AvgPool3d: _avgpool(adf.AvgPool3d),
    nn.Flatten: lambda m: adf.Flatten(m.start_dim, m.end_dim),
    nn.Unflatten: lambda m: adf.Unflatten(m.dim, m.unflattened_size),
    nn.Identity: lambda m: adf.Identity(),
    nn.Dropout: lambda m: adf.Identity(),  # identity in eval mode
}


def _problem(module: nn.Module) -> str | None:
    """Why ``module`` (of a supported type) cannot be converted exactly, if it cannot."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and module.padding_mode != "zeros":
        return f"padding_mode={module.padding_mode!r}"
    if isinstance(module, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        if getattr(module, "divisor_override", None) is not None:
            return "divisor_override"
        pad = module.padding if isinstance(module.padding, tuple) else (module.padding,)
        if any(pad) and not module.count_include_pad:
            return "padding with count_include_pad=False"
    return None


def _walk(module: nn.Module, prefix: str, out: list[nn.Module], bad: list[str]) -> None:
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            _walk(child, f"{prefix}.{name}" if prefix else name, out, bad)
        return
    where = prefix or "model"
    make = SUPPORTED_LAYERS.get(type(module))
    if make is None:
        kind = "a custom module (only nn.Sequential containers can be walked)" if list(module.children()) else ""
        bad.append(f"{where}: {type(module).__name__}{' ' + kind if kind else ''}")
        return
    problem = _problem(module)
    if problem:
        bad.append(f"{where}: {type(module).__name__} with {problem}")
        return
    out.append(make(module))


def to_adf(model: nn.Module, name: str = "model") -> adf.Sequential:
    """The ADF twin of ``model`` (parameters shared); ``ValueError`` lists unsupported layers."""
    layers: list[nn.Module] = []
    bad: list[str] = []
    _walk(model, "", layers, bad)
    if bad:
        supported = ", ".join(sorted(t.__name__ for t in SUPPORTED_LAYERS)) + ", Sequential"
        raise ValueError(
            f"{name} cannot be converted for distortion='adf': unsupported layer(s) {bad}. "
            f"torch-adf supports {supported}. Use distortion='mc' (Monte Carlo) instead."
        )
    return adf.Sequential(*layers).eval()
