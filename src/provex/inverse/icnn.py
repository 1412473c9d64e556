"""Input-convex neural networks psi_theta: R^n -> R, the potentials behind learned proximal networks.

A network is convex in its input when every layer after the first is a non-negative
combination of convex, non-decreasing functions of the previous layer plus an affine function
of the input (Amos et al., 2017). Here:

* the first layer ``z_1 = act(W_0 x + b_0)`` is unconstrained;
* every later layer ``z_{k+1} = act(W_k z_k + S_k x + b_k)`` has ``W_k >= 0`` (the *hidden
  path*) and an unconstrained input skip ``S_k x + b_k``;
* the output ``w^T z_L + s^T x`` has ``w >= 0``;
* ``act`` is softplus with sharpness ``beta`` (convex, non-decreasing, smooth);
* ``alpha / 2 * ||x||^2`` is added so psi is alpha-strongly convex (the PnP theorem needs it).

The hidden-path weights are kept non-negative by projection (:meth:`ICNN.project_`, a clamp at
zero) after every optimiser step; :meth:`ICNN.check_convex` and loading a state dict refuse
weights with a negative hidden-path entry. Two architectures: :class:`VectorICNN` (fully
connected, inputs (N, d)) and :class:`ConvICNN` (convolutional, inputs (N, C, H, W)).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ICNN", "ConvICNN", "VectorICNN"]


class ICNN(nn.Module):
    """Base class: ``forward(x)`` is psi(x) of shape (N,); subclasses list their hidden-path weights."""

    alpha: float
    beta: float

    def hidden_path(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` for every weight that must stay non-negative for convexity."""
        raise NotImplementedError

    def hidden_path_names(self) -> list[str]:
        return [name for name, _ in self.hidden_path()]

    @torch.no_grad()
    def project_(self) -> ICNN:
        """Clamp every hidden-path weight at zero (call after each optimiser step)."""
        for _, p in self.hidden_path():
            p.clamp_(min=0.0)
        return self

    def check_convex(self) -> None:
        """Raise ``ValueError`` naming the first hidden-path weight with a negative entry."""
        for name, p in self.hidden_path():
            _check_nonnegative(name, p.detach())

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # Refuse weights that would make psi non-convex before copying anything in.
        for name in self.hidden_path_names():
            key = prefix + name
            if key in state_dict:
                _check_nonnegative(key, state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def act(self, t: torch.Tensor) -> torch.Tensor:
        return F.softplus(t, beta=self.beta)

    def quadratic(self, x: torch.Tensor) -> torch.Tensor:
        """``alpha / 2 * ||x||^2`` per sample."""
        return 0.5 * self.alpha * x.flatten(1).pow(2).sum(1)


def _check_nonnegative(name: str, w: torch.Tensor) -> None:
    if bool((w < 0).any()):
        n = int((w < 0).sum())
        raise ValueError(
            f"hidden-path weight {name!r} has {n} negative entries (min {float(w.min()):.3g}); "
            "psi would not be convex, so the network would not be a proximal operator. "
            "Project with ICNN.project_() after each optimiser step, or load weights trained that way."
        )


def _init_nonneg_(w: torch.Tensor, fan_in: int) -> None:
    """Non-negative start: uniform on [0, 1/fan_in] keeps each unit's input O(1)."""
    with torch.no_grad():
        w.uniform_(0.0, 1.0 / max(fan_in, 1))


class VectorICNN(ICNN):
    """Fully connected ICNN on (N, dim) inputs: a first layer, ``layers`` hidden-path layers, an output.

    ``layers=4, hidden=50`` is the reference 1-D Laplace network (5 softplus layers of width 50).
    """

    def __init__(self, dim: int = 1, hidden: int = 50, layers: int = 4, beta: float = 10.0, alpha: float = 0.0):
        super().__init__()
        _check_arch(dim=dim, hidden=hidden, beta=beta, alpha=alpha, layers=layers, min_layers=0)
        self.dim, self.hidden, self.layers = int(dim), int(hidden), int(layers)
        self.beta, self.alpha = float(beta), float(alpha)
        self.first = nn.Linear(dim, hidden)
        self.mix = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(layers))
        self.skip = nn.ModuleList(nn.Linear(dim, hidden) for _ in range(layers))
        self.out = nn.Linear(hidden, 1, bias=False)
        self.out_skip = nn.Linear(dim, 1)
        for m in [*self.mix, self.out]:
            _init_nonneg_(m.weight, m.in_features)

    def hidden_path(self) -> Iterator[tuple[str, nn.Parameter]]:
        for i, m in enumerate(self.mix):
            yield f"mix.{i}.weight", m.weight
        yield "out.weight", self.out.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (N, {self.dim}), got {tuple(x.shape)}")
        z = self.act(self.first(x))
        for mix, skip in zip(self.mix, self.skip):
            z = self.act(mix(z) + skip(x))
        return (self.out(z) + self.out_skip(x)).squeeze(1) + self.quadratic(x)


class ConvICNN(ICNN):
    """Convolutional ICNN on (N, C, H, W) images (H, W divisible by 4), after the LPN MNIST network.

    Layers: conv3x3 (unconstrained) at full size; hidden-path conv3x3 stride 2, stride 1, stride 2
    (to H/4 x W/4), each with a skip conv from the input average-pooled to that layer's input
    resolution; a dense hidden-path layer of width ``dense`` with a skip from the input pooled to
    H/4 x W/4; a non-negative output row. ``hidden=64, beta=10, alpha=0.01`` is the reference MNIST LPN.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int | tuple[int, int] = 28,
        hidden: int = 64,
        dense: int = 64,
        beta: float = 10.0,
        alpha: float = 0.01,
    ):
        super().__init__()
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        _check_arch(dim=in_channels, hidden=hidden, beta=beta, alpha=alpha, layers=1, min_layers=1)
        if h <= 0 or w <= 0 or h % 4 or w % 4:
            raise ValueError(f"image_size must be positive and divisible by 4, got {(h, w)}")
        if dense <= 0:
            raise ValueError(f"dense must be positive, got {dense}")
        self.in_channels, self.image_size, self.hidden, self.dense = (
            int(in_channels),
            (int(h), int(w)),
            int(hidden),
            int(dense),
        )
        self.beta, self.alpha = float(beta), float(alpha)
        c = in_channels
        self.first = nn.Conv2d(c, hidden, 3, padding=1)
        # (stride, input resolution divisor) of the three hidden-path convolutions.
        self._plan = [(2, 1), (1, 2), (2, 2)]
        self.mix = nn.ModuleList(nn.Conv2d(hidden, hidden, 3, stride=s, padding=1, bias=False) for s, _ in self._plan)
        self.skip = nn.ModuleList(nn.Conv2d(c, hidden, 3, stride=s, padding=1) for s, _ in self._plan)
        flat = hidden * (h // 4) * (w // 4)
        self.fc = nn.Linear(flat, dense, bias=False)
        self.fc_skip = nn.Linear(c * (h // 4) * (w // 4), dense)
        self.out = nn.Linear(dense, 1, bias=False)
        for m in self.mix:
            _init_nonneg_(m.weight, hidden * 9)
        _init_nonneg_(self.fc.weight, flat)
        _init_nonneg_(self.out.weight, dense)

    def hidden_path(self) -> Iterator[tuple[str, nn.Parameter]]:
        for i, m in enumerate(self.mix):
            yield f"mix.{i}.weight", m.weight
        yield "fc.weight", self.fc.weight
        yield "out.weight", self.out.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = (self.in_channels, *self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must have shape (N, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        pooled = {1: x, 2: F.avg_pool2d(x, 2), 4: F.avg_pool2d(x, 4)}
        z = self.act(self.first(x))
        for (_, res), mix, skip in zip(self._plan, self.mix, self.skip):
            z = self.act(mix(z) + skip(pooled[res]))
        z = self.act(self.fc(z.flatten(1)) + self.fc_skip(pooled[4].flatten(1)))
        return self.out(z).squeeze(1) + self.quadratic(x)


def _check_arch(*, dim: int, hidden: int, beta: float, alpha: float, layers: int, min_layers: int) -> None:
    for name, v in (("dim/in_channels", dim), ("hidden", hidden)):
        if int(v) != v or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v}")
    if int(layers) != layers or layers < min_layers:
        raise ValueError(f"layers must be an integer >= {min_layers}, got {layers}")
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta (softplus sharpness) must be positive, got {beta}")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha (strong convexity) must be >= 0, got {alpha}")
