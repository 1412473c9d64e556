"""Convert a plain PyTorch network into a ``torch-adf`` network that propagates (mean, var).

Assumed density filtering (ADF) pushes a Gaussian with diagonal covariance through the
network layer by layer (moment matching after each ReLU). ``to_adf(model)`` walks an
``nn.Sequential`` (nested ones too, as long as they keep ``Sequential``'s own ``forward``),
maps every layer to its ``torchadf.nn`` twin and *shares* the parameters, so the ADF network
follows the model's device and dtype. Layers without an ADF twin are all collected and
reported in one ``ValueError``; :func:`convert` returns the reason instead (``distortion="auto"``
then uses Monte Carlo).

Layers converted exactly (the moments of a linear map of a Gaussian are exact): Conv, Linear,
AvgPool, Flatten/Unflatten, eval-mode BatchNorm (a per-channel affine map: mean ``a m + b``,
variance ``a^2 v``), Dropout variants and Identity (the identity in eval mode) and
AdaptiveAvgPool whose input size is a whole multiple of its output size (an AvgPool; checked
when it runs). ReLU is moment-matched (the ADF approximation). Everything else (MaxPool,
residual connections, GELU, attention, custom modules) is refused: use Monte Carlo.

Two covariance modes (torch-adf's names):

- ``mode="diag"`` (default, the FW-RDE paper's): every unit is treated as independent. ReLU
  layers become :class:`FusedReLU`, a ``torchadf.nn.ReLU`` whose moment matching and its
  analytic derivatives run as one autograd function: the same formulas as torch-adf (equal
  to ~1e-15 in the forward pass, tested), about 3x faster on CPU because it avoids
  ``torch.distributions``' argument validation and the many temporaries of the generic graph.
  Cheap (about one forward pass per mask) but biased where the noise is strongly correlated
  after convolutions and pooling (the logit variance collapses).
- ``mode="lowrank"``: the covariance is carried as a square root with one column per input
  pixel, exact through every linear layer; each ReLU scales the columns by ``Phi(mu/sd)``.
  It keeps the correlations, so it tracks Monte Carlo closely, at the cost of about one
  forward pass per input pixel per mask (small images only).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchadf.nn as adf
from torch import nn

__all__ = [
    "MODES",
    "SUPPORTED_LAYERS",
    "AdaptiveAvgPool",
    "ChannelAffine",
    "FusedReLU",
    "check_twin",
    "convert",
    "to_adf",
]

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


class ChannelAffine(nn.Module):
    """ADF twin of an eval-mode BatchNorm: the per-channel affine map ``y = a x + b``.

    ``a = weight / sqrt(running_var + eps)``, ``b = bias - running_mean * a``, read from the
    model's layer at every call (it follows the model's buffers, device and dtype). Exact:
    mean ``a m + b``, variance ``a^2 v`` (low-rank square roots are scaled by ``a``).
    """

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, mode: str) -> None:
        super().__init__()
        self.bn = [bn]  # a list: share the layer without registering it as a submodule
        self.mode = mode

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        bn = self.bn[0]
        a = (bn.running_var + bn.eps).rsqrt()
        if bn.weight is not None:
            a = a * bn.weight
        b = -bn.running_mean * a
        if bn.bias is not None:
            b = b + bn.bias
        return a, b

    def forward(self, in_mean: torch.Tensor, in_var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.coefficients()
        shape = (-1,) + (1,) * (in_mean.ndim - 2)
        a, b = a.view(shape), b.view(shape)
        out_var = in_var * a.square() if self.mode == "diag" else in_var * a.unsqueeze(-1)
        return in_mean * a + b, out_var


class AdaptiveAvgPool(nn.Module):
    """ADF twin of AdaptiveAvgPool{1,2,3}d when every input size is a multiple of the output size.

    Then the adaptive pool is an AvgPool with kernel = stride = input / output (exact: the
    mean is pooled, independent variances are pooled and divided by the kernel size). Other
    ratios raise a ``ValueError`` when the layer runs (``distortion="auto"`` checks the twin on
    the images first and falls back to Monte Carlo).
    """

    def __init__(self, output_size: int | tuple, dims: int, mode: str) -> None:
        super().__init__()
        size = output_size if isinstance(output_size, tuple) else (output_size,) * dims
        self.output_size, self.dims, self.mode = size, dims, mode
        self.pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[dims]

    def forward(self, in_mean: torch.Tensor, in_var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spatial = tuple(in_mean.shape[-self.dims :])
        out = tuple(s if o is None else o for s, o in zip(spatial, self.output_size))
        if any(s % o for s, o in zip(spatial, out)):
            raise ValueError(
                f"AdaptiveAvgPool{self.dims}d from {spatial} to {out} is not an integer ratio; "
                "ADF converts only whole-multiple ratios (use distortion='mc')"
            )
        k = tuple(s // o for s, o in zip(spatial, out))
        mean = self.pool(in_mean, k, k)
        if self.mode == "diag":
            return mean, self.pool(in_var, k, k) / math.prod(k)
        root = in_var.movedim(-1, 1)  # (N, R, C, *spatial): the rank axis out of the way
        lead = root.shape[:2]
        pooled = self.pool(root.flatten(0, 1), k, k)
        return mean, pooled.unflatten(0, lead).movedim(1, -1)


def _conv(cls: type) -> Callable[[nn.Module, str], nn.Module]:
    def make(m: nn.Module, mode: str) -> nn.Module:
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
            mode=mode,
        )
        out.weight, out.bias = m.weight, m.bias
        return out

    return make


def _linear(m: nn.Linear, mode: str) -> nn.Module:
    out = adf.Linear(m.in_features, m.out_features, bias=m.bias is not None, device="meta", mode=mode)
    out.weight, out.bias = m.weight, m.bias
    return out


def _avgpool(cls: type) -> Callable[[nn.Module, str], nn.Module]:
    def make(m: nn.Module, mode: str) -> nn.Module:
        kw = {"divisor_override": m.divisor_override} if hasattr(m, "divisor_override") else {}
        return cls(m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, mode=mode, **kw)

    return make


def _relu(m: nn.Module, mode: str) -> nn.Module:
    return FusedReLU() if mode == "diag" else adf.ReLU(mode=mode)


MODES = ("diag", "lowrank")

SUPPORTED_LAYERS: dict[type, Callable[[nn.Module, str], nn.Module]] = {
    nn.Conv1d: _conv(adf.Conv1d),
    nn.Conv2d: _conv(adf.Conv2d),
    nn.Conv3d: _conv(adf.Conv3d),
    nn.Linear: _linear,
    nn.ReLU: _relu,
    nn.AvgPool1d: _avgpool(adf.AvgPool1d),
    nn.AvgPool2d: _avgpool(adf.AvgPool2d),
    nn.AvgPool3d: _avgpool(adf.AvgPool3d),
    nn.Flatten: lambda m, mode: adf.Flatten(m.start_dim, m.end_dim, mode=mode),
    nn.Unflatten: lambda m, mode: adf.Unflatten(m.dim, m.unflattened_size, mode=mode),
    nn.Identity: lambda m, mode: adf.Identity(),
    nn.BatchNorm1d: ChannelAffine,
    nn.BatchNorm2d: ChannelAffine,
    nn.BatchNorm3d: ChannelAffine,
    nn.AdaptiveAvgPool1d: lambda m, mode: AdaptiveAvgPool(m.output_size, 1, mode),
    nn.AdaptiveAvgPool2d: lambda m, mode: AdaptiveAvgPool(m.output_size, 2, mode),
    nn.AdaptiveAvgPool3d: lambda m, mode: AdaptiveAvgPool(m.output_size, 3, mode),
}
for _drop in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout):
    SUPPORTED_LAYERS[_drop] = lambda m, mode: adf.Identity()  # the identity in eval mode


def _problem(module: nn.Module) -> str | None:
    """Why ``module`` (of a supported type) cannot be converted exactly, if it cannot."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and module.padding_mode != "zeros":
        return f"padding_mode={module.padding_mode!r}"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.training:
            return "training mode (it normalises by batch statistics; call model.eval())"
        if module.running_mean is None or module.running_var is None:
            return "track_running_stats=False (it normalises by batch statistics)"
    if isinstance(module, nn.modules.dropout._DropoutNd) and module.training:
        return "training mode (random dropout; call model.eval())"
    if isinstance(module, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        if getattr(module, "divisor_override", None) is not None:
            return "divisor_override"
        pad = module.padding if isinstance(module.padding, tuple) else (module.padding,)
        if any(pad) and not module.count_include_pad:
            return "padding with count_include_pad=False"
    return None


def _walk(module: nn.Module, prefix: str, out: list[nn.Module], bad: list[str], mode: str) -> None:
    if isinstance(module, nn.Sequential) and type(module).forward is not nn.Sequential.forward:
        bad.append(f"{prefix or 'model'}: {type(module).__name__} a Sequential with its own forward")
        return
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            _walk(child, f"{prefix}.{name}" if prefix else name, out, bad, mode)
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
    out.append(make(module, mode))


def convert(model: nn.Module, mode: str = "diag") -> tuple[adf.Sequential | None, list[str]]:
    """The ADF twin of ``model`` and ``[]``, or ``None`` and every layer that cannot be converted."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    layers: list[nn.Module] = []
    bad: list[str] = []
    _walk(model, "", layers, bad, mode)
    if bad:
        return None, bad
    return adf.Sequential(*layers).eval(), []


def to_adf(model: nn.Module, name: str = "model", mode: str = "diag") -> adf.Sequential:
    """The ADF twin of ``model`` (parameters shared); ``ValueError`` lists unsupported layers.

    ``mode`` is ``"diag"`` (variances) or ``"lowrank"`` (covariance square roots, last axis).
    """
    twin, bad = convert(model, mode)
    if twin is None:
        supported = ", ".join(sorted({t.__name__ for t in SUPPORTED_LAYERS})) + ", Sequential"
        raise ValueError(
            f"{name} cannot be converted for distortion='adf': unsupported layer(s) {bad}. "
            f"ADF supports {supported}. Use distortion='mc' (Monte Carlo) or 'auto' instead."
        )
    return twin


def check_twin(twin: nn.Module, x: torch.Tensor, logits: torch.Tensor, mode: str = "diag") -> str | None:
    """Why the twin is not the model on ``x`` (its zero-variance mean must equal ``logits``), or None.

    Catches what the layer walk cannot see: a layer that refuses the input size (an adaptive
    pool with a fractional ratio) or a forward that is not the composition of the layers.
    """
    zero = torch.zeros_like(x) if mode == "diag" else torch.zeros(*x.shape, 1, dtype=x.dtype, device=x.device)
    try:
        with torch.no_grad():
            mean, _ = twin(x, zero)
    except (ValueError, RuntimeError) as err:
        return f"the ADF twin fails on these images ({str(err).splitlines()[0]})"
    if mean.shape != logits.shape:
        return f"the ADF twin returns shape {tuple(mean.shape)}, the model {tuple(logits.shape)}"
    diff = float((mean - logits).abs().max())
    # ReLU moment matching with torch-adf's variance floor (1e-7) moves a noise-free mean by ~1e-4 per layer
    if not diff <= 1e-2 * max(1.0, float(logits.abs().max())):
        return (
            f"the ADF twin does not reproduce the model's logits (max difference {diff:.3g}): "
            "its forward is not the composition of its layers"
        )
    return None
