"""MNIST from the standard IDX files, with no network needed.

The reader looks in an explicit ``root``, else in ``$PROVEX_DATA/mnist``, else in a few
conventional places (``./data/mnist``, ``../shared/data/mnist``); gzipped and plain files
are both accepted. ``download=True`` falls back to torchvision on machines with a network.
When nothing is found the error lists every path tried and names ``PROVEX_DATA``.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

__all__ = ["MNIST_FILES", "DataNotFoundError", "load_mnist", "mnist_dirs", "read_idx"]

MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# IDX type codes -> numpy dtypes (big-endian where it matters).
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DataNotFoundError(FileNotFoundError):
    """Raised when a dataset cannot be found in any of the places searched."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into a numpy array of its declared shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type 0x{type_code:02x}")
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header_end])
    dtype = _IDX_DTYPES[type_code]
    count = int(np.prod(shape)) if shape else 1
    expected = count * dtype.itemsize
    if len(raw) - header_end != expected:
        raise ValueError(f"{path}: IDX payload has {len(raw) - header_end} bytes, header says {expected}")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header_end)
    return data.reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def mnist_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """The directories searched for the MNIST IDX files, in order."""
    if root is not None:
        return [Path(root)]
    dirs: list[Path] = []
    env = os.environ.get("PROVEX_DATA")
    if env:
        dirs.append(Path(env) / "mnist")
    dirs += [Path.cwd() / "data" / "mnist", Path.cwd().parent / "shared" / "data" / "mnist"]
    return dirs


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _torchvision_download(split: str, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import MNIST

    ds = MNIST(str(root), train=(split == "train"), download=True)
    return ds.data.clone(), ds.targets.clone()


def load_mnist(
    split: str = "train",
    root: str | os.PathLike | None = None,
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load MNIST as ``(images, labels)``.

    ``images`` is float32 in [0, 1] of shape (N, 1, 28, 28); ``labels`` is int64 of shape (N,).
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(MNIST_FILES)}, got {split!r}")
    img_stem, lbl_stem = MNIST_FILES[split]
    tried: list[str] = []
    for directory in mnist_dirs(root):
        img, lbl = _find(directory, img_stem), _find(directory, lbl_stem)
        if img is not None and lbl is not None:
            images = torch.from_numpy(read_idx(img))
            labels = torch.from_numpy(read_idx(lbl))
            break
        tried.append(str(directory / (img_stem + "[.gz]")))
    else:
        if download:
            target = Path(root) if root is not None else Path(os.environ.get("PROVEX_DATA", "data"))
            images, labels = _torchvision_download(split, target)
        else:
            raise DataNotFoundError(
                f"MNIST {split!r} split not found. Tried: {', '.join(tried)}. "
                "Pass root=<dir with the IDX files>, set the PROVEX_DATA environment variable to "
                "a folder containing mnist/, or use download=True where a network exists."
            )
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"MNIST files have inconsistent shapes: images {tuple(images.shape)}, labels {tuple(labels.shape)}"
        )
    x = images.to(torch.float32).div_(255.0).unsqueeze(1)
    return x.contiguous(), labels.to(torch.int64)
