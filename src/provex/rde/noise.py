"""The obfuscation noise of rate-distortion explanations: ``n ~ N(m, diag(v))``.

Statistics are per pixel (``m``, ``v`` of shape (C, H, W), estimated from training data,
as in the MNIST reference) or one global scalar pair (as in the reference STL-10 code).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["GaussianNoise"]


@dataclass
class GaussianNoise:
    """Independent Gaussian noise with mean ``mean`` and variance ``var``.

    Both are tensors of the image shape (C, H, W) (per-pixel statistics) or scalars
    (shape ``()``, one global mean and variance for every component).
    """

    mean: torch.Tensor
    var: torch.Tensor

    def __post_init__(self) -> None:
        self.mean = torch.as_tensor(self.mean, dtype=torch.get_default_dtype())
        self.var = torch.as_tensor(self.var, dtype=self.mean.dtype, device=self.mean.device)
        if self.mean.shape != self.var.shape:
            raise ValueError(f"noise mean {tuple(self.mean.shape)} and var {tuple(self.var.shape)} differ in shape")
        if not bool(torch.isfinite(self.mean).all() & torch.isfinite(self.var).all()):
            raise ValueError("noise statistics contain NaN or inf")
        if bool((self.var < 0).any()):
            raise ValueError("noise var must be non-negative")

    @property
    def per_pixel(self) -> bool:
        return self.mean.ndim > 0

    @classmethod
    def from_data(cls, x: torch.Tensor, per_pixel: bool = True) -> GaussianNoise:
        """Statistics of the images ``x`` (N, C, H, W): per pixel over N, or over everything."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
            raise ValueError(f"x must be a floating (N, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")
        if per_pixel:
            if x.shape[0] < 2:
                raise ValueError("x: per-pixel noise statistics need at least 2 images (or use per_pixel=False)")
            return cls(x.mean(0), x.var(0, unbiased=False))
        return cls(x.mean(), x.var(unbiased=False))

    @classmethod
    def from_model(cls, model: nn.Module, per_pixel: bool = True) -> GaussianNoise:
        """Training-data statistics on the model card (``model.card.data_mean / data_var``)."""
        card = getattr(model, "card", None)
        mean = getattr(card, "data_mean", None)
        var = getattr(card, "data_var", None)
        if mean is None or var is None:
            raise ValueError("model has no card with data_mean/data_var; pass noise=GaussianNoise.from_data(x_train)")
        mean, var = torch.as_tensor(mean).float(), torch.as_tensor(var).float()
        if per_pixel:
            return cls(mean, var)
        # total variance over pixels and samples: E[var] + Var[mean]
        g_mean = mean.mean()
        return cls(g_mean, (var + mean.square()).mean() - g_mean.square())

    def global_scalar(self) -> GaussianNoise:
        """The same noise summarised by one scalar mean and (total) variance."""
        if not self.per_pixel:
            return self
        g_mean = self.mean.mean()
        return GaussianNoise(g_mean, (self.var + self.mean.square()).mean() - g_mean.square())

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> GaussianNoise:
        return GaussianNoise(self.mean.to(device, dtype), self.var.to(device, dtype))

    def check_shape(self, image_shape: tuple[int, ...], name: str = "noise") -> None:
        """Per-pixel statistics must have the image shape (C, H, W)."""
        if self.per_pixel and tuple(self.mean.shape) != tuple(image_shape):
            raise ValueError(
                f"{name} statistics have shape {tuple(self.mean.shape)} but images are {tuple(image_shape)}"
            )

    def sample(self, n: int, generator: torch.Generator | None = None, shape: tuple[int, ...] | None = None):
        """``n`` draws of shape (n, C, H, W) (``shape`` = (C, H, W) is needed for scalar statistics)."""
        shape = tuple(self.mean.shape) if self.per_pixel else tuple(shape or ())
        z = torch.randn((n, *shape), generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.var.sqrt() * z
