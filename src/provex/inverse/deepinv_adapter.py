"""Use an LPN inside deepinv (optional extra: ``pip install provex[deepinv]``).

* :class:`LPNDenoiser` is a ``deepinv.models.Denoiser`` (``forward(x, sigma)`` ignores sigma: an
  LPN is trained for one noise level) for ``deepinv.optim.PnP`` and deepinv's other solvers.
* :class:`LPNPrior` is an explicit ``deepinv.optim.Prior``: ``prox`` is the LPN and ``fn`` is the
  recovered regulariser R(x) (:func:`provex.inverse.evaluate_prior`). The LPN is prox_R with unit
  step, so use it where deepinv's prox step ``gamma = lambda * stepsize`` equals 1 (a warning
  says so otherwise).
* :func:`as_deepinv_physics` wraps a provex operator as a ``deepinv.physics.LinearPhysics``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

try:
    import deepinv
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("provex.inverse.deepinv_adapter needs deepinv: pip install 'provex[deepinv]'") from err

from provex.inverse.lpn import LPN
from provex.inverse.operators import LinearOperator
from provex.inverse.prior import evaluate_prior

__all__ = ["LPNDenoiser", "LPNPrior", "as_deepinv_physics"]


def _check_lpn(lpn: object) -> LPN:
    if not isinstance(lpn, LPN):
        raise ValueError(f"lpn must be a provex.inverse.LPN, got {type(lpn).__name__}")
    return lpn


class LPNDenoiser(deepinv.models.Denoiser):
    """An LPN as a deepinv denoiser; ``sigma`` is accepted for the interface and ignored."""

    def __init__(self, lpn: LPN):
        super().__init__()
        self.lpn = _check_lpn(lpn)

    def forward(self, x: torch.Tensor, sigma: Any = None, **kwargs: Any) -> torch.Tensor:
        return self.lpn(x)


class LPNPrior(deepinv.optim.Prior):
    """Explicit prior with prox = LPN and value R(x) recovered by convex inversion."""

    def __init__(self, lpn: LPN, **prior_kwargs: Any):
        lpn = _check_lpn(lpn)
        super().__init__(g=self._value)
        self.lpn = lpn
        self.prior_kwargs = prior_kwargs
        self._warned = False

    def _value(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return evaluate_prior(self.lpn, x, **self.prior_kwargs).values

    def prox(self, x: torch.Tensor, *args: Any, gamma: float = 1.0, **kwargs: Any) -> torch.Tensor:
        g = float(gamma)
        if abs(g - 1.0) > 1e-6 and not self._warned:
            warnings.warn(
                f"deepinv asked for prox of gamma * R with gamma = {g:g}; an LPN is prox_R (gamma = 1). "
                "Set lambda_reg * stepsize = 1 for an exact prox.",
                RuntimeWarning,
                stacklevel=2,
            )
            self._warned = True
        return self.lpn(x)


def as_deepinv_physics(op: LinearOperator) -> deepinv.physics.LinearPhysics:
    """A deepinv ``LinearPhysics`` with the operator's A and exact adjoint (no noise model)."""
    if not isinstance(op, LinearOperator):
        raise ValueError(f"op must be a provex LinearOperator, got {type(op).__name__}")
    return deepinv.physics.LinearPhysics(A=op, A_adjoint=op.adjoint)
