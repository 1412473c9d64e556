"""What a dataset run explains: one indexable source of images and labels, whatever the input.

:func:`resolve_data` turns ``mnist-test`` / ``mnist-train``, ``samples:NAME`` (the shipped
sample sets), a folder / glob of image files, a tensor file (``.pt``, ``.npy``, ``.npz``),
an (N, C, H, W) tensor, an ``(images, labels)`` pair or a ``torch.utils.data.Dataset`` into a
:class:`RunData`. The driver reads each shard's images with :meth:`RunData.batch` and ships
them with the task, so workers (other processes, other machines) never need the data files.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["RunData", "resolve_data"]

DataLike = str | os.PathLike | torch.Tensor | tuple | list | torch.utils.data.Dataset
"""What :func:`resolve_data` accepts."""


@dataclass
class RunData:
    """``n`` images of shape ``shape`` (C, H, W), read shard by shard with :meth:`batch`.

    ``spec`` says where they come from (recorded in the manifest), ``digest`` identifies the
    content where that is cheap (files, tensors), ``classes`` names the labels when known and
    ``normalize`` is the per-channel ``(x - mean) / std`` applied before the model sees them.
    """

    spec: str
    n: int
    shape: tuple[int, int, int]
    read: Callable[[Sequence[int]], tuple[torch.Tensor, torch.Tensor]]
    classes: list[str] | None = None
    normalize: dict[str, list[float]] | None = None
    digest: str | None = None

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (n, C, H, W) float32 as the model sees them and labels (n,) int64 (-1: unknown)."""
        x, y = self.read(indices)
        if tuple(x.shape[1:]) != self.shape:
            first = list(indices)[:3]
            raise ValueError(f"data: images {first}... have shape {tuple(x.shape[1:])}, expected {self.shape}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"data: images {list(indices)[:3]}... contain NaN or inf")
        if self.normalize is not None:
            m = torch.tensor(self.normalize["mean"], dtype=x.dtype).view(-1, 1, 1)
            s = torch.tensor(self.normalize["std"], dtype=x.dtype).view(-1, 1, 1)
            x = (x - m) / s
        return x.contiguous(), y.to(torch.int64)

    def describe(self) -> dict[str, Any]:
        """The manifest's ``data`` entry."""
        return {
            "spec": self.spec,
            "n": self.n,
            "shape": list(self.shape),
            "normalize": self.normalize,
            "digest": self.digest,
        }


def _float_images(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.dtype == torch.uint8:
        t = t.float().div_(255.0)
    elif not t.is_floating_point():
        raise ValueError(f"{name}: images have integer dtype {t.dtype}; give float images or uint8 in 0..255")
    t = t.float()
    if t.ndim == 3:  # (N, H, W) grey images
        t = t.unsqueeze(1)
    if t.ndim != 4 or t.shape[0] == 0:
        raise ValueError(f"{name}: images must be a non-empty (N, C, H, W) tensor, got shape {tuple(t.shape)}")
    return t


def _labels(y: Any, n: int, name: str) -> torch.Tensor:
    if y is None:
        return torch.full((n,), -1, dtype=torch.int64)
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    if y.shape != (n,) or y.is_floating_point():
        raise ValueError(f"{name}: labels must be {n} integers, got {y.dtype} of shape {tuple(y.shape)}")
    return y.to(torch.int64)


def _tensor_digest(*ts: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in ts:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _in_memory(x: torch.Tensor, y: torch.Tensor, spec: str, digest: str | None, classes: list[str] | None) -> RunData:
    def read(indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return x[idx], y[idx]

    return RunData(spec, int(x.shape[0]), tuple(x.shape[1:]), read, classes, None, digest)


def _from_tensor_file(path: Path, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images and optional labels from ``.pt`` / ``.npy`` / ``.npz`` (tensor, dict or (x, y) pair)."""
    if path.suffix == ".npy":
        obj: Any = torch.from_numpy(np.load(path, allow_pickle=False))
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            obj = {k: torch.from_numpy(z[k]) for k in z.files}
    elif path.suffix in (".pt", ".pth"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            kind = err.__class__.__name__
            raise ValueError(f"{name}: {path} is not readable without running code ({kind})") from None
    else:
        raise ValueError(f"{name}: {path} must be a .pt, .npy or .npz file, a folder or mnist-test")
    if isinstance(obj, torch.Tensor):
        return obj, None
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(o, torch.Tensor) for o in obj):
        return obj[0], obj[1]
    if isinstance(obj, dict):
        xk = next((k for k in ("images", "x", "inputs", "data") if k in obj), None)
        yk = next((k for k in ("labels", "y", "targets") if k in obj), None)
        if xk is not None:
            return obj[xk], obj.get(yk) if yk else None
    raise ValueError(
        f"{name}: {path} must hold an (N, C, H, W) tensor, an (images, labels) pair or a dict "
        "with 'images' (and 'labels')"
    )


def _folder_digest(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p.name}\0{st.st_size}\0".encode())
    return h.hexdigest()[:16]


def _from_dataset(ds: torch.utils.data.Dataset, spec: str, name: str) -> RunData:
    if not hasattr(ds, "__len__") or len(ds) == 0:
        raise ValueError(f"{name}: the Dataset must have a length and at least one item")

    def item(i: int) -> tuple[torch.Tensor, int]:
        it = ds[i]
        label = -1
        if isinstance(it, (tuple, list)):
            it, label = it[0], (int(it[1]) if len(it) > 1 and it[1] is not None else -1)
        elif isinstance(it, dict):
            label = int(it.get("label", -1))
            it = next((it[k] for k in ("image", "images", "x", "input", "pixel_values") if k in it), None)
        if not isinstance(it, torch.Tensor):
            raise ValueError(f"{name}: item {i} is {type(it).__name__}, expected an image tensor (C, H, W)")
        t = _float_images(it.unsqueeze(0), f"{name} item {i}")[0]
        return t, label

    def read(indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        items = [item(int(i)) for i in indices]
        shapes = {tuple(t.shape) for t, _ in items}
        if len(shapes) > 1:
            raise ValueError(f"{name}: items {list(indices)[:3]}... have different shapes {sorted(shapes)[:3]}")
        return torch.stack([t for t, _ in items]), torch.tensor([lab for _, lab in items], dtype=torch.int64)

    first, _ = item(0)
    classes = getattr(ds, "classes", None)
    classes = [str(c) for c in classes] if isinstance(classes, (list, tuple)) else None
    return RunData(spec, len(ds), tuple(first.shape), read, classes)


def resolve_data(
    data: DataLike,
    *,
    limit: int | None = None,
    channels: int | None = None,
    resize: int | tuple[int, int] | None = None,
    normalize: str | dict[str, Sequence[float]] | None = None,
    name: str = "data",
) -> RunData:
    """A :class:`RunData` for ``data`` (see the module docstring); ``limit`` keeps the first images.

    ``channels`` / ``resize`` apply to image files; ``normalize`` is ``"imagenet"`` or
    ``{"mean": [...], "std": [...]}`` (per channel), applied to every image before the model.
    """
    from provex.data import load_mnist
    from provex.data.images import IMAGENET_MEAN, IMAGENET_STD, ImageFiles
    from provex.data.samples import samples

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    if isinstance(data, (str, os.PathLike)):
        text = str(data)
        if text in ("mnist-test", "mnist-train"):
            x, y = load_mnist(text.split("-")[1])
            rd = _in_memory(x, y, text, None, [str(c) for c in range(10)])
        elif text.startswith("samples:"):
            try:
                x, y = samples(text.split(":", 1)[1])
            except (KeyError, ValueError, FileNotFoundError):
                raise ValueError(f"{name}: no shipped sample set {text!r} (samples:mnist, samples:crosses)") from None
            rd = _in_memory(x, y, text, _tensor_digest(x, y), None)
        elif Path(text).is_file() and Path(text).suffix.lower() in (".pt", ".pth", ".npy", ".npz"):
            path = Path(text)
            x, y = _from_tensor_file(path, name)
            x = _float_images(x, name)
            rd = _in_memory(x, _labels(y, x.shape[0], name), text, _file_digest(path), None)
        else:
            files = ImageFiles(text, channels=channels, resize=resize, name=name)
            rd = _from_dataset(files, text, name)
            rd.digest = _folder_digest(files.paths)
    elif isinstance(data, torch.Tensor):
        x = _float_images(data, name)
        rd = _in_memory(x, _labels(None, x.shape[0], name), "python:tensor", _tensor_digest(x), None)
    elif isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x = _float_images(data[0], name)
        y = _labels(data[1], x.shape[0], name)
        rd = _in_memory(x, y, "python:tensor", _tensor_digest(x, y), None)
    elif isinstance(data, torch.utils.data.Dataset):
        rd = _from_dataset(data, f"python:{type(data).__name__}", name)
    else:
        raise ValueError(
            f"{name} must be mnist-test, samples:NAME, a folder or glob of images, a .pt/.npy/.npz file, "
            f"a tensor, an (images, labels) pair or a Dataset, got {type(data).__name__}"
        )
    if limit is not None:
        rd.n = min(rd.n, limit)
    if normalize is not None:
        if isinstance(normalize, str):
            if normalize != "imagenet":
                raise ValueError(f"normalize must be 'imagenet' or {{'mean': [...], 'std': [...]}}, got {normalize!r}")
            normalize = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
        mean = [float(v) for v in normalize["mean"]]
        std = [float(v) for v in normalize["std"]]
        if len(mean) != rd.shape[0] or len(std) != rd.shape[0] or min(std) <= 0:
            raise ValueError(f"normalize needs {rd.shape[0]} means and {rd.shape[0]} positive stds")
        rd.normalize = {"mean": mean, "std": std}
    return rd
