"""What "absent" means for a component: the reference distribution of perturbation methods.

Every method that removes part of an image replaces it by something: RDE by Gaussian noise
``N(mean, diag(var))``, h-Shap by a background image, SHAP-XRT by draws of the region, the
relevance-ordering test by noise. A :class:`Reference` carries all three from one place:
per-pixel ``mean`` and ``var`` and a ``background`` image (by default the mean), fitted once
from data the user has, stored with every explanation so a result can be reproduced.

>>> import provex, torch
>>> ref = provex.Reference.fit(torch.rand(100, 3, 32, 32))           # a tensor
>>> ref = provex.Reference.fit("train_images/", resize=32)           # doctest: +SKIP
>>> ref.save("ref.safetensors"); provex.Reference.load("ref.safetensors")  # doctest: +SKIP
>>> exp = provex.explain(model, x, "rc-rde", reference=ref)          # doctest: +SKIP

``Reference.fit`` streams: it reads a tensor, a ``Dataset``, a ``DataLoader`` or a folder /
glob of image files batch by batch and merges per-pixel moments with Chan's parallel update
in float64, so memory stays at one batch however many images there are (``max_images``
caps the count). Which reference a method uses is decided by :func:`resolve_reference`:
the one passed, else the model card's training statistics (zoo models), else each image's
own per-channel statistics (never statistics pooled over the explained batch, which would
make an image's explanation depend on its batch-mates), with a warning naming the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from provex.io import atomic_write

__all__ = ["Reference", "ReferenceWarning", "resolve_reference"]

_FORMAT = "provex.reference/1"
FALLBACK_MESSAGE = (
    "no reference distribution given and the model has no card with data statistics: each image's "
    "own per-channel mean and variance stand in for 'absent'. Pass reference=provex.Reference.fit(train_images) "
    "(or --reference FOLDER on the command line) for explanations relative to your data"
)


class ReferenceWarning(UserWarning):
    """Raised (once per call site) when a method falls back to per-image statistics."""


@dataclass
class Reference:
    """Per-pixel mean and variance of the data and a background image, all (C, H, W).

    A *per-image* reference (from :meth:`per_image`) has (N, C, H, W) tensors, row ``i``
    belonging to image ``i`` of the batch being explained. ``count`` is the number of images
    the statistics came from; ``source`` says where they came from.
    """

    mean: torch.Tensor
    var: torch.Tensor
    background: torch.Tensor | None = None
    count: int = 0
    source: str = "given"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mean = torch.as_tensor(self.mean)
        if not self.mean.is_floating_point():
            self.mean = self.mean.float()
        self.var = torch.as_tensor(self.var, dtype=self.mean.dtype, device=self.mean.device)
        if self.background is None:
            self.background = self.mean
        self.background = torch.as_tensor(self.background, dtype=self.mean.dtype, device=self.mean.device)
        if self.mean.ndim not in (3, 4):
            raise ValueError(
                f"reference mean must be (C, H, W) (or (N, C, H, W) per image), got {tuple(self.mean.shape)}"
            )
        for key in ("var", "background"):
            value = getattr(self, key)
            if value.shape != self.mean.shape:
                raise ValueError(f"reference {key} has shape {tuple(value.shape)}, mean {tuple(self.mean.shape)}")
        for key in ("mean", "var", "background"):
            if not bool(torch.isfinite(getattr(self, key)).all()):
                raise ValueError(f"reference {key} contains NaN or inf")
        if bool((self.var < 0).any()):
            raise ValueError("reference var must be non-negative")

    # ----- shape and use -----

    @property
    def per_image(self) -> bool:
        """True for per-image statistics: (N, C, H, W), one row per explained image."""
        return self.mean.ndim == 4

    @property
    def shape(self) -> tuple[int, ...]:
        """The image shape (C, H, W) this reference describes."""
        return tuple(self.mean.shape[-3:])

    def check(self, x: torch.Tensor, name: str = "reference") -> None:
        """The reference must describe images of ``x``'s shape (and count, if per image)."""
        if self.shape != tuple(x.shape[1:]):
            raise ValueError(f"{name} describes images of shape {self.shape} but x has shape {tuple(x.shape[1:])}")
        if self.per_image and self.mean.shape[0] != x.shape[0]:
            raise ValueError(f"{name} holds statistics of {self.mean.shape[0]} images but x has {x.shape[0]}")

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Reference:
        """A copy on ``device`` with floating ``dtype``."""
        move = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
        return Reference(
            move(self.mean), move(self.var), move(self.background), self.count, self.source, dict(self.meta)
        )

    def expand(self, n: int) -> Reference:
        """Per-image form for a batch of ``n`` images (a view: no memory is copied)."""
        if self.per_image:
            if self.mean.shape[0] != n:
                raise ValueError(f"reference holds {self.mean.shape[0]} images, asked for {n}")
            return self
        grow = lambda t: t.unsqueeze(0).expand(n, *t.shape)  # noqa: E731
        return Reference(
            grow(self.mean), grow(self.var), grow(self.background), self.count, self.source, dict(self.meta)
        )

    def select(self, index: torch.Tensor | list[int]) -> Reference:
        """Rows ``index`` of a per-image reference (a global one is returned unchanged)."""
        if not self.per_image:
            return self
        idx = torch.as_tensor(index, device=self.mean.device, dtype=torch.long)
        return Reference(self.mean[idx], self.var[idx], self.background[idx], self.count, self.source, dict(self.meta))

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        image: int | None = None,
    ) -> torch.Tensor:
        """``n`` Gaussian draws ``N(mean, diag(var))`` of shape (n, C, H, W) (of image ``image`` if per image)."""
        mean, var = self.mean, self.var
        if self.per_image:
            if image is None:
                raise ValueError("image: a per-image reference needs the image index to sample")
            mean, var = mean[image], var[image]
        z = torch.randn((n, *mean.shape), generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + var.sqrt() * z

    # ----- construction -----

    @classmethod
    def fit(
        cls,
        data: torch.Tensor | str | os.PathLike | Iterable,
        *,
        max_images: int | None = None,
        batch_size: int = 256,
        channels: int | None = None,
        resize: int | tuple[int, int] | None = None,
        progress: bool = False,
        name: str = "data",
    ) -> Reference:
        """Per-pixel statistics of ``data``: a (N, C, H, W) tensor (float, or uint8 in 0..255),
        a folder / glob / file list of images, a ``Dataset`` (items ``x`` or ``(x, label, ...)``)
        or a ``DataLoader`` / any iterable of batches. Memory: one batch."""
        from provex.data.images import ImageFiles, to_float_images

        if max_images is not None and (
            isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1
        ):
            raise ValueError(f"max_images must be a positive integer or None, got {max_images!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        source = type(data).__name__
        if isinstance(data, (str, os.PathLike)) or (
            isinstance(data, (list, tuple)) and data and isinstance(data[0], (str, os.PathLike))
        ):
            files = ImageFiles(data, channels=channels, resize=resize, name=name)
            source = str(data) if isinstance(data, (str, os.PathLike)) else f"{len(files)} image files"
            data = files
        batches = _batches(data, batch_size, name)
        total = len(data) if hasattr(data, "__len__") and not isinstance(data, torch.utils.data.DataLoader) else None
        if (
            isinstance(data, torch.utils.data.DataLoader)
            and hasattr(data, "dataset")
            and hasattr(data.dataset, "__len__")
        ):
            total = len(data.dataset)
        if max_images is not None:
            total = max_images if total is None else min(total, max_images)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc="Reference.fit", unit="img")
        count, mean, m2 = 0, None, None
        try:
            for batch in batches:
                b = to_float_images(batch, name).detach().to("cpu", torch.float64)
                if b.ndim == 3:
                    b = b.unsqueeze(0)
                if b.ndim != 4:
                    raise ValueError(f"{name}: batches must be (B, C, H, W) images, got shape {tuple(b.shape)}")
                if max_images is not None:
                    b = b[: max_images - count]
                if b.shape[0] == 0:
                    break
                if mean is not None and b.shape[1:] != mean.shape:
                    raise ValueError(
                        f"{name}: images of shape {tuple(b.shape[1:])} after {tuple(mean.shape)}; pass resize="
                    )
                if not bool(torch.isfinite(b).all()):
                    raise ValueError(f"{name} contains NaN or inf values")
                nb = b.shape[0]
                mb = b.mean(0)
                m2b = (b - mb).square().sum(0)
                if mean is None:
                    count, mean, m2 = nb, mb, m2b
                else:
                    delta = mb - mean
                    tot = count + nb
                    mean = mean + delta * (nb / tot)
                    m2 = m2 + m2b + delta.square() * (count * nb / tot)
                    count = tot
                if bar is not None:
                    bar.update(nb)
                if max_images is not None and count >= max_images:
                    break
        finally:
            if bar is not None:
                bar.close()
        if mean is None:
            raise ValueError(f"{name} holds no images")
        var = m2 / count
        return cls(mean.float(), var.float(), None, count, f"fit on {count} images ({source})")

    @classmethod
    def from_model(cls, model: nn.Module) -> Reference | None:
        """The training statistics on a zoo model's card (``data_mean``, ``data_var``), else None."""
        card = getattr(model, "card", None)
        mean = getattr(card, "data_mean", None)
        var = getattr(card, "data_var", None)
        if mean is None or var is None:
            return None
        name = getattr(card, "name", "model")
        count = (
            int(getattr(card, "training", {}).get("train_images", 0) or 0)
            if isinstance(getattr(card, "training", None), dict)
            else 0
        )
        return cls(torch.as_tensor(mean).float(), torch.as_tensor(var).float(), None, count, f"model card of {name}")

    @classmethod
    def per_image_statistics(cls, x: torch.Tensor) -> Reference:
        """Each image's own per-channel mean and variance, as an (N, C, H, W) per-image reference."""
        flat = x.detach().flatten(2)
        mean = flat.mean(2)[..., None, None].expand_as(x)
        var = flat.var(2, unbiased=False)[..., None, None].expand_as(x)
        return cls(mean, var, None, 1, "per-image channel statistics (fallback)")

    # ----- storage -----

    def digest(self) -> str:
        """A short SHA-256 of the statistics (identifies the reference in manifests)."""
        h = hashlib.sha256()
        for t in (self.mean, self.var, self.background):
            h.update(t.detach().cpu().float().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """A small JSON-able summary for ``Explanation.info`` and run manifests."""
        return {
            "source": self.source,
            "count": int(self.count),
            "shape": list(self.shape),
            "per_image": self.per_image,
            "digest": self.digest(),
            "mean": float(self.mean.mean()),
            "std": float(self.var.mean().sqrt()),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the reference to a ``.safetensors`` file atomically (no pickle involved)."""
        from safetensors.torch import save_file

        if self.per_image:
            raise ValueError("a per-image reference belongs to one batch and is not saved; fit one on data instead")
        meta = {"format": _FORMAT, "count": str(int(self.count)), "source": self.source, "meta": json.dumps(self.meta)}
        tensors = {
            k: getattr(self, k).detach().cpu().float().clone().contiguous() for k in ("mean", "var", "background")
        }
        with atomic_write(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, name: str = "reference") -> Reference:
        """Read a reference written by :meth:`save` (safetensors: safe on untrusted files)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{name}: no such file {path}")
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"{name}: {path} is not a provex reference file ({err})") from None
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{name}: {path} is not a provex reference file")
        missing = {"mean", "var", "background"} - set(tensors)
        if missing:
            raise ValueError(f"{name}: {path} lacks {sorted(missing)}")
        return cls(
            tensors["mean"],
            tensors["var"],
            tensors["background"],
            int(meta.get("count", 0)),
            meta.get("source", str(path)),
            json.loads(meta.get("meta", "{}")),
        )


def _batches(data: Any, batch_size: int, name: str) -> Iterable[torch.Tensor]:
    """Image batches from a tensor, a Dataset or an iterable of batches."""
    if isinstance(data, torch.Tensor):
        if data.ndim != 4:
            raise ValueError(f"{name} must have shape (N, C, H, W), got {tuple(data.shape)}")
        return (data[i : i + batch_size] for i in range(0, data.shape[0], batch_size))
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
        return (_images_of(b, name) for b in loader)
    if isinstance(data, Iterable):
        return (_images_of(b, name) for b in data)
    raise ValueError(
        f"{name} must be a tensor, a folder of images, a Dataset or a DataLoader, got {type(data).__name__}"
    )


def _images_of(batch: Any, name: str) -> torch.Tensor:
    if isinstance(batch, (list, tuple)) and batch:
        batch = batch[0]
    elif isinstance(batch, dict):
        for key in ("image", "images", "x", "input", "pixel_values"):
            if key in batch:
                batch = batch[key]
                break
    if not isinstance(batch, torch.Tensor):
        raise ValueError(f"{name}: expected image tensors, got {type(batch).__name__}")
    return batch


def resolve_reference(
    reference: Reference | str | os.PathLike | None,
    model: nn.Module,
    x: torch.Tensor,
    name: str = "reference",
) -> Reference:
    """The reference a method uses for images ``x``, on ``x``'s device and dtype.

    ``reference`` given (a :class:`Reference` or a path to a saved one) wins; else the model
    card's training statistics; else each image's own per-channel statistics, with a
    :class:`ReferenceWarning` naming the fix. The result is checked against ``x``'s shape.
    """
    if isinstance(reference, (str, os.PathLike)):
        reference = Reference.load(reference, name)
    if reference is None:
        reference = Reference.from_model(model)
        if reference is not None and reference.shape != tuple(x.shape[1:]):
            reference = None  # a card for other images (e.g. a resized input): do not use it
    if reference is None:
        warnings.warn(FALLBACK_MESSAGE, ReferenceWarning, stacklevel=3)
        reference = Reference.per_image_statistics(x)
    if not isinstance(reference, Reference):
        raise ValueError(
            f"{name} must be a provex.Reference, a path to a saved one, or None; got {type(reference).__name__}"
        )
    reference.check(x, name)
    return reference.to(x.device, x.dtype)
