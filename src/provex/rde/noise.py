"""The obfuscation noise of rate-distortion explanations: ``n ~ N(m, diag(v))``.

Statistics come from a :class:`provex.Reference` (``reference=``; the model card's training
statistics by default, else each image's own per-channel statistics) and are used per pixel
(``noise="per-pixel"``, as in the MNIST reference code) or summarised by one scalar mean and
variance (``noise="global"``, as in the reference STL-10 code). Shapes of ``mean``/``var``:
``()`` (one scalar pair), ``(C, H, W)`` (per pixel, shared by every image) or
``(N, C, H, W)`` / ``(N, 1, 1, 1)`` (per image: row ``i`` belongs to image ``i`` of the
batch being explained, never pooled over the batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["GaussianNoise"]


@dataclass
class GaussianNoise:
    """Independent Gaussian noise with mean ``mean`` and variance ``var`` (see the module doc for shapes)."""

    mean: torch.Tensor
    var: torch.Tensor

    def __post_init__(self) -> None:
        mean = torch.as_tensor(self.mean)
        # keep a floating dtype (so .to(dtype) works); integers become the default float
        self.mean = mean if mean.is_floating_point() else mean.to(torch.get_default_dtype())
        self.var = torch.as_tensor(self.var, dtype=self.mean.dtype, device=self.mean.device)
        if self.mean.shape != self.var.shape:
            raise ValueError(f"noise mean {tuple(self.mean.shape)} and var {tuple(self.var.shape)} differ in shape")
        if self.mean.ndim not in (0, 3, 4):
            raise ValueError(
                f"noise statistics must be scalars, (C, H, W) or (N, C, H, W), got {tuple(self.mean.shape)}"
            )
        if not bool(torch.isfinite(self.mean).all() & torch.isfinite(self.var).all()):
            raise ValueError("noise statistics contain NaN or inf")
        if bool((self.var < 0).any()):
            raise ValueError("noise var must be non-negative")

    @property
    def per_pixel(self) -> bool:
        """True unless the statistics are one scalar pair (for all images or per image)."""
        return self.mean.ndim == 3 or (self.mean.ndim == 4 and self.mean.shape[1:].numel() > 1)

    @property
    def per_image(self) -> bool:
        """True when row ``i`` of the statistics belongs to image ``i`` of the batch."""
        return self.mean.ndim == 4

    @classmethod
    def from_reference(cls, reference, per_pixel: bool = True) -> GaussianNoise:
        """The noise of a :class:`provex.Reference`: per pixel, or one (per-image) scalar pair."""
        noise = cls(reference.mean, reference.var)
        return noise if per_pixel else noise.global_scalar()

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
            raise ValueError("model has no card with data_mean/data_var; pass reference=provex.Reference.fit(x_train)")
        noise = cls(torch.as_tensor(mean).float(), torch.as_tensor(var).float())
        return noise if per_pixel else noise.global_scalar()

    def global_scalar(self) -> GaussianNoise:
        """One scalar mean and total variance ``E[var] + Var[mean]`` (per image for per-image statistics)."""
        if not self.per_pixel:
            return self
        dims = tuple(range(self.mean.ndim - 3, self.mean.ndim))
        g_mean = self.mean.mean(dims, keepdim=self.per_image)
        g_var = (self.var + self.mean.square()).mean(dims, keepdim=self.per_image) - g_mean.square()
        return GaussianNoise(g_mean, g_var.clamp_min(0.0))

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> GaussianNoise:
        return GaussianNoise(self.mean.to(device, dtype), self.var.to(device, dtype))

    def check_shape(self, image_shape: tuple[int, ...], n_images: int | None = None, name: str = "noise") -> None:
        """Per-pixel statistics must have the image shape (C, H, W); per-image ones one row per image."""
        stat = tuple(self.mean.shape[-3:]) if self.mean.ndim else ()
        if self.per_pixel and stat != tuple(image_shape):
            raise ValueError(f"{name} statistics have shape {stat} but images are {tuple(image_shape)}")
        if self.per_image and n_images is not None and self.mean.shape[0] != n_images:
            raise ValueError(f"{name} statistics belong to {self.mean.shape[0]} images but there are {n_images}")

    def rows(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean`` and ``var`` for masks on images ``image`` (M,), broadcastable to (M, C, H, W)."""
        if self.per_image:
            return self.mean[image], self.var[image]
        return self.mean, self.var

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        shape: tuple[int, ...] | None = None,
        image: int | None = None,
    ) -> torch.Tensor:
        """``n`` draws of shape (n, C, H, W) (of image ``image`` for per-image statistics; ``shape``
        = (C, H, W) is needed when the statistics do not have the image shape)."""
        mean, var = self.mean, self.var
        if self.per_image:
            if image is None:
                raise ValueError("image: per-image noise statistics need the image index to sample")
            mean, var = mean[image], var[image]
        full = tuple(mean.shape) if mean.ndim == 3 and mean.shape.numel() > 1 else tuple(shape or mean.shape)
        z = torch.randn((n, *full), generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + var.sqrt() * z
