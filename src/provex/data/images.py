"""Your image files as tensors: PNG / JPEG files, folders and globs, read with Pillow.

``image_paths(spec)`` expands a file, a folder (its image files, sorted by name; not its
subfolders) or a glob pattern into a sorted list of files. ``read_image(path)`` returns a
float32 (C, H, W) tensor in [0, 1]; ``load_images(spec)`` stacks every file (all must have
one size, or pass ``resize``). :class:`ImageFiles` is the lazy ``Dataset`` form used for
fitting references and for dataset runs. ``normalize`` applies a per-channel
``(x - mean) / std`` such as ImageNet's, which most torchvision models expect; explanations
are then computed in the normalised space and drawn over the original image.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_SUFFIXES",
    "ImageFiles",
    "image_paths",
    "load_images",
    "normalize",
    "read_image",
    "to_float_images",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES


def image_paths(spec: str | os.PathLike | Sequence[str | os.PathLike], name: str = "input") -> list[Path]:
    """Image files named by a file, a folder, a glob pattern, or a list of those."""
    if isinstance(spec, (list, tuple)):
        out: list[Path] = []
        for s in spec:
            out.extend(image_paths(s, name))
        return out
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if _is_image(p))
        if not files:
            raise ValueError(f"{name}: folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        return files
    if path.is_file():
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"{name}: {path} is not an image file ({', '.join(IMAGE_SUFFIXES)})")
        return [path]
    if glob.has_magic(text):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if _is_image(Path(p)))
        if not files:
            raise ValueError(f"{name}: the pattern {text!r} matches no image files")
        return files
    raise ValueError(f"{name}: no such file or folder: {path}")


def read_image(
    path: str | os.PathLike,
    channels: int | None = None,
    resize: int | tuple[int, int] | None = None,
    name: str = "input",
) -> torch.Tensor:
    """One image file as a float32 (C, H, W) tensor in [0, 1].

    ``channels`` 1 converts to grey, 3 to RGB (an alpha channel is dropped); ``None`` keeps
    grey images grey and makes everything else RGB. ``resize`` is a side length (the image
    is resized to a square) or ``(H, W)``, with bilinear antialiased resampling.
    """
    from PIL import Image, UnidentifiedImageError

    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None, got {channels!r}")
    try:
        with Image.open(path) as img:
            img.load()
            mode = {1: "L", 3: "RGB"}.get(channels or 0, "L" if img.mode in ("L", "1", "I;16", "I", "F") else "RGB")
            if img.mode in ("I;16", "I", "F") and mode == "L":
                arr = np.asarray(img, dtype=np.float64)
                top = 65535.0 if img.mode == "I;16" or arr.max() > 255 else 255.0
                arr = (arr / top).astype(np.float32)[None]
            else:
                arr = np.asarray(img.convert(mode), dtype=np.float32) / 255.0
                arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{name}: cannot read {path} as an image ({err.__class__.__name__}: {err})") from None
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if resize is not None:
        size = (resize, resize) if isinstance(resize, int) else tuple(resize)
        if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
            raise ValueError(f"resize must be a positive int or (H, W), got {resize!r}")
        if tuple(t.shape[1:]) != size:
            t = torch.nn.functional.interpolate(
                t[None], size=size, mode="bilinear", antialias=True, align_corners=False
            )[0]
            t = t.clamp_(0, 1)
    return t


class ImageFiles(Dataset):
    """A lazy dataset over image files: item ``i`` is the (C, H, W) tensor of file ``i``."""

    def __init__(
        self,
        spec: str | os.PathLike | Sequence[str | os.PathLike],
        channels: int | None = None,
        resize: int | tuple[int, int] | None = None,
        name: str = "input",
    ) -> None:
        self.paths = image_paths(spec, name)
        self.channels = channels
        self.resize = resize
        self.name = name

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return read_image(self.paths[i], self.channels, self.resize, self.name)


def load_images(
    spec: str | os.PathLike | Sequence[str | os.PathLike],
    channels: int | None = None,
    resize: int | tuple[int, int] | None = None,
    name: str = "input",
) -> tuple[torch.Tensor, list[Path]]:
    """All images named by ``spec`` as one (N, C, H, W) tensor, and their paths."""
    files = ImageFiles(spec, channels, resize, name)
    images = [files[i] for i in range(len(files))]
    if channels is None and len({im.shape[0] for im in images}) > 1:
        images = [im.expand(3, -1, -1) if im.shape[0] == 1 else im for im in images]
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        raise ValueError(f"{name}: images have different sizes {sorted(shapes)[:4]}; pass resize=(H, W) (--resize)")
    return torch.stack(images), files.paths


def to_float_images(t: torch.Tensor, name: str = "x") -> torch.Tensor:
    """A uint8 tensor becomes float32 in [0, 1] (divided by 255); floats pass; other dtypes are refused."""
    if t.dtype == torch.uint8:
        return t.float().div_(255.0)
    if t.is_floating_point():
        return t
    raise ValueError(f"{name} has integer dtype {t.dtype}; give float images, or uint8 images in 0..255")


def normalize(
    x: torch.Tensor, mean: Sequence[float] | str = "imagenet", std: Sequence[float] | None = None
) -> torch.Tensor:
    """``(x - mean) / std`` per channel; ``mean="imagenet"`` uses ImageNet's statistics."""
    if isinstance(mean, str):
        if mean != "imagenet":
            raise ValueError(f"normalize: unknown statistics {mean!r}; use 'imagenet' or give mean and std")
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    if std is None:
        raise ValueError("normalize: std is required with a custom mean")
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    if m.shape[0] not in (1, x.shape[-3]) or s.shape != m.shape:
        raise ValueError(f"normalize: mean/std have {m.shape[0]}/{s.shape[0]} entries for {x.shape[-3]} channels")
    if bool((s <= 0).any()):
        raise ValueError("normalize: std must be positive")
    return (x - m) / s
