"""Learned proximal networks: f_theta = grad psi_theta for an input-convex psi_theta.

By Gribonval and Nikolova (2020), a map is the proximal operator of some (possibly non-convex)
regulariser R exactly when it is the gradient of a convex function, so ``LPN(icnn)`` is
``prox_R`` for the R that :func:`provex.inverse.evaluate_prior` recovers. The gradient is taken
by autograd; in training mode (or when the input requires grad) the graph is kept
(``create_graph=True``) so a loss on f can be back-propagated to the weights (double backprop).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from provex.inverse.icnn import ICNN, ConvICNN, VectorICNN

__all__ = ["LPN", "build_lpn"]


class LPN(nn.Module):
    """f(x) = grad psi(x) for the input-convex network ``icnn``; same input and output shape."""

    def __init__(self, icnn: ICNN):
        super().__init__()
        if not isinstance(icnn, ICNN):
            raise ValueError(f"icnn must be a provex.inverse.ICNN, got {type(icnn).__name__}")
        self.icnn = icnn

    @property
    def alpha(self) -> float:
        """Strong-convexity modulus of psi (the PnP convergence theorem needs alpha > 0)."""
        return self.icnn.alpha

    def psi(self, x: torch.Tensor) -> torch.Tensor:
        """The convex potential psi(x), shape (N,)."""
        return self.icnn(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep_graph = torch.is_grad_enabled() and (self.training or x.requires_grad)
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.icnn(xg).sum(), xg, create_graph=keep_graph)
        return g if keep_graph else g.detach()

    def project_(self) -> LPN:
        """Keep psi convex: clamp the hidden-path weights at zero."""
        self.icnn.project_()
        return self

    def check_convex(self) -> None:
        self.icnn.check_convex()


def build_lpn(arch: str = "conv", **config: Any) -> LPN:
    """An LPN from a config dict (the zoo's builder): ``arch`` "conv" (:class:`ConvICNN`) or "vector"."""
    if arch == "conv":
        return LPN(ConvICNN(**config))
    if arch == "vector":
        return LPN(VectorICNN(**config))
    raise ValueError(f"arch must be 'conv' or 'vector', got {arch!r}")
