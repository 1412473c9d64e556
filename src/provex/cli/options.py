"""Pieces shared by sub-commands: models, images, references and output folders from the shell.

Everything here turns a user's command-line value into a checked object or a one-line
``ValueError`` that names the option (``provex.cli.main`` prints it and exits with code 2):

* :func:`check_device` — ``--device`` names a device this machine has (checked before work);
* :func:`check_out_folder` / :func:`output_files` — ``--out`` is (or can become) a writable
  folder, and the files a run will write do not exist yet (unless ``--overwrite``);
* :func:`load_cli_model` — ``--model`` (zoo name, ``torchvision:NAME``, TorchScript file,
  ``FILE.py:FACTORY``) with ``--weights``;
* :func:`load_inputs` — ``--input``: image files, folders and globs, or one ``.pt`` / ``.npy``
  tensor, with ``--resize``, ``--normalize imagenet`` or ``--mean/--std``; integer pixels are
  rescaled from 0..255 and pickles are refused;
* :func:`check_model_input` — one image through the model first, so a wrong image shape is a
  message naming ``--input`` and the expected shape, not a traceback from the first layer;
* :func:`load_reference` — ``--reference`` (a saved reference or a folder of images);
* :func:`read_labels` — ``--labels``: class names, one per line or a JSON list.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from provex.options import parse_options  # re-exported: the CLI's option pairs
from provex.reference import Reference

__all__ = [
    "Inputs",
    "add_image_arguments",
    "add_model_arguments",
    "check_device",
    "check_model_input",
    "check_out_folder",
    "expected_input",
    "load_cli_model",
    "load_input",
    "load_inputs",
    "load_reference",
    "load_tensor_file",
    "normalization_arg",
    "one_line",
    "output_files",
    "parse_options",
    "read_labels",
]

TENSOR_SUFFIXES = (".pt", ".pth", ".npy")


def one_line(err: BaseException | str) -> str:
    """An error message on one line (newlines and runs of spaces collapsed)."""
    return " ".join(str(err).split())


# ----- device and output folder -----


def check_device(device: str | None, name: str = "--device") -> torch.device | None:
    """The torch device named by ``device``, refusing one this machine does not have."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name}: {device!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name} {device}: no CUDA GPU is available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name} {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name} {device}: Apple's MPS backend is not available on this machine; use --device cpu")
    try:
        torch.empty(1, device=dev)
    except (RuntimeError, AssertionError) as err:
        raise ValueError(f"{name} {device}: not usable on this machine ({one_line(err)[:160]})") from None
    return dev


def check_out_folder(out: str | os.PathLike, name: str = "--out") -> Path:
    """``out`` is a folder or can be created as one; stale temporaries of killed runs are removed.

    Nothing is created here (a failed run leaves no empty folder behind); the writers create it.
    """
    from provex.io import remove_stale_temporaries

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name}: {path} is a file, not a folder; name a folder (it is created if missing)")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"{name}: cannot create folder {path}: {probe} is a file")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{name}: cannot write into {probe} (permission denied)")
    if path.is_dir():
        remove_stale_temporaries(path)
    return path


def output_files(folder: Path, names: Sequence[str], overwrite: bool, patterns: Sequence[str] = ()) -> list[Path]:
    """The paths ``folder/NAME``; refuses (before any work) if one exists, unless ``overwrite``.

    ``patterns`` are globs of files an earlier run of the same kind may have written (e.g. the
    pages of a figure); they count as existing outputs too.
    """
    paths = [folder / n for n in names]
    if not overwrite:
        existing = [p for p in paths if p.exists()]
        for pat in patterns:
            existing += sorted(folder.glob(pat)) if folder.is_dir() else []
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise ValueError(
                f"--out: {existing[0]} exists{more} from an earlier run; pass --overwrite to replace it, "
                "or choose another --out"
            )
    return paths


# ----- model -----


def add_model_arguments(p: argparse.ArgumentParser, default: str = "mnist-cnn") -> None:
    """``--model`` and ``--weights``."""
    p.add_argument(
        "--model",
        default=default,
        help=f"zoo name (default {default}; `provex models list`), torchvision:NAME, a TorchScript file, "
        "or FILE.py:FACTORY (a function returning the nn.Module)",
    )
    p.add_argument(
        "--weights",
        default=None,
        metavar="FILE",
        help="a state dict (.pt / .pth via torch.load(weights_only=True), or .safetensors) for "
        "torchvision:NAME or FILE.py:FACTORY; for a zoo model, a retrained weights file",
    )


def load_cli_model(spec: str, weights: str | None, device: torch.device | None) -> nn.Module:
    """``--model`` / ``--weights`` -> an eval-mode module; every failure is a ValueError naming the option."""
    from provex.models.spec import load_model

    if weights is not None and Path(weights).is_dir():
        raise ValueError(f"--weights: {weights} is a folder; give the state-dict file")
    if Path(spec).is_dir():
        raise ValueError(f"--model: {spec} is a folder; give a zoo name, torchvision:NAME, a file or FILE.py:FACTORY")
    try:
        return load_model(spec, weights=weights, device=device, name="--model")
    except ValueError as err:
        raise ValueError(str(err).replace("weights:", "--weights:", 1)) from None


def expected_input(model: nn.Module) -> tuple[int | None, tuple[int, int] | None]:
    """(channels, (H, W)) the model takes, where it can be read off: the card, else the first conv."""
    card = getattr(model, "card", None)
    mean = getattr(card, "data_mean", None)
    if isinstance(mean, torch.Tensor) and mean.ndim == 3:
        return int(mean.shape[0]), (int(mean.shape[1]), int(mean.shape[2]))
    for m in model.modules():
        kind = getattr(m, "original_name", type(m).__name__)
        weight = getattr(m, "weight", None)
        if kind in ("Conv2d", "LazyConv2d") and isinstance(weight, torch.Tensor) and weight.ndim == 4:
            try:
                groups = int(getattr(m, "groups", 1))
            except (TypeError, RuntimeError):
                groups = 1
            return int(weight.shape[1]) * groups, None
        if kind == "Linear":
            return None, None
    return None, None


def check_model_input(model: nn.Module, x: torch.Tensor, device: torch.device | None) -> int:
    """Pass one image through the model; a failure becomes a ValueError naming ``--input``.

    Returns the number of classes (the model must return (1, classes) logits).
    """
    channels, size = expected_input(model)
    shape = tuple(x.shape[1:])
    want = (
        f" (the model takes {channels}-channel images" + (f" of {size[0]}x{size[1]} pixels)" if size else ")")
        if channels
        else ""
    )
    if channels is not None and shape[0] != channels:
        raise ValueError(f"--input: images have {shape[0]} channel(s), shape {shape}{want}")
    if size is not None and shape[1:] != size:
        raise ValueError(f"--input: images are {shape[1]}x{shape[2]} pixels{want}; pass --resize {size[0]} {size[1]}")
    first = x[:1]
    if device is not None:
        first = first.to(device)
    try:
        with torch.no_grad():
            out = model(first)
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise ValueError(
            f"--input: the model cannot take images of shape {shape}{want}: {one_line(err)[:200]}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"--model: must map (N, C, H, W) images to (N, classes) logits; one image gave {got}")
    return int(out.shape[1])


# ----- images and tensors -----


def add_image_arguments(p: argparse.ArgumentParser) -> None:
    """``--resize``, ``--normalize``, ``--mean``, ``--std``: how files become model inputs."""
    p.add_argument(
        "--resize", type=int, nargs="+", metavar="N", help="resize images to N x N (or H W) pixels, bilinear"
    )
    p.add_argument(
        "--normalize",
        choices=["imagenet"],
        default=None,
        help="the model takes (x - mean) / std with ImageNet's statistics (most torchvision models); "
        "figures still show the original pixels",
    )
    p.add_argument("--mean", type=float, nargs="+", metavar="M", help="per-channel mean the model subtracts")
    p.add_argument("--std", type=float, nargs="+", metavar="S", help="per-channel std the model divides by")


@dataclass
class Inputs:
    """Images as the model sees them (``x``) and as the files hold them (``pixels``)."""

    x: torch.Tensor
    pixels: torch.Tensor
    names: list[str]
    stem: str
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    normalization: dict[str, list[float]] | None = None


def _resize_arg(resize: Sequence[int] | None) -> tuple[int, int] | None:
    if resize is None:
        return None
    if len(resize) not in (1, 2) or any(r < 1 for r in resize):
        raise ValueError(f"--resize takes one or two positive sizes (N, or H W), got {list(resize)}")
    return (resize[0], resize[0]) if len(resize) == 1 else (resize[0], resize[1])


def normalization_arg(
    normalize: str | None, mean: Sequence[float] | None, std: Sequence[float] | None
) -> dict[str, list[float]] | None:
    """(mean, std) lists from ``--normalize`` / ``--mean`` / ``--std``, or None."""
    from provex.data.images import IMAGENET_MEAN, IMAGENET_STD

    if normalize is not None:
        if mean is not None or std is not None:
            raise ValueError("--normalize imagenet and --mean/--std exclude each other")
        return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        raise ValueError("--mean and --std go together")
    if len(mean) != len(std):
        raise ValueError(f"--mean has {len(mean)} values, --std {len(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"--std must be positive, got {list(std)}")
    return {"mean": list(mean), "std": list(std)}


def load_tensor_file(path: str | os.PathLike, name: str = "--input") -> torch.Tensor:
    """A tensor from ``.pt`` / ``.pth`` (read without running code) or ``.npy`` (no pickles)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name}: {path} is a folder")
    if not path.is_file():
        raise ValueError(f"{name}: no such file {path}")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as err:
            if "pickle" in str(err):
                raise ValueError(f"{name}: {path} holds Python objects (a pickle); save a numeric array") from None
            raise ValueError(f"{name}: cannot read {path} as a .npy array ({one_line(err)[:120]})") from None
        except (OSError, EOFError) as err:
            raise ValueError(f"{name}: cannot read {path} as a .npy array ({one_line(err)[:120]})") from None
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "buif":
            raise ValueError(f"{name}: {path} holds a {getattr(arr, 'dtype', type(arr))} array, not numbers")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's notes on pickle protocols: the error below says it all
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile, AttributeError) as err:
            with open(path, "rb") as fh:
                head = fh.read(2)
            looks_pickled = head[:1] == b"\x80" or head == b"PK"  # a pickle, or torch's zip of one
            why = "a pickle with code or objects other than tensors" if looks_pickled else "not a tensor file"
            del err
            raise ValueError(f"{name}: {path} is {why}; provex reads tensors only (torch.save(tensor, FILE))") from None
        t = _first_tensor(obj)
        if t is None:
            raise ValueError(f"{name}: {path} holds a {type(obj).__name__}, not an image tensor")
    return t


def _first_tensor(obj: Any) -> torch.Tensor | None:
    """A tensor, the first element of a tuple/list ``(images, labels)``, or ``images`` / ``x`` in a dict."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (tuple, list)) and obj and isinstance(obj[0], torch.Tensor):
        return obj[0]
    if isinstance(obj, dict):
        for key in ("images", "x", "inputs", "input"):
            if isinstance(obj.get(key), torch.Tensor):
                return obj[key]
    return None


def _as_images(t: torch.Tensor, notes: list[str], name: str = "--input") -> torch.Tensor:
    """(N, C, H, W) float images from a tensor: integers 0..255 rescaled, other shapes explained."""
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name}: a {t.dtype} tensor is not an image; give float images in [0, 1] or 0..255 integers")
    if not t.is_floating_point():
        lo, hi = (int(t.min()), int(t.max())) if t.numel() else (0, 0)
        if lo < 0 or hi > 255:
            raise ValueError(
                f"{name}: integer tensor ({t.dtype}) with values {lo}..{hi}; give float images, "
                "or integer pixels in 0..255 (rescaled to [0, 1])"
            )
        notes.append(f"{name}: {t.dtype} pixels 0..255 rescaled to [0, 1] (divided by 255)")
        t = t.float() / 255.0
    else:
        t = t.float()
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4:
        raise ValueError(f"{name}: images must have shape (N, C, H, W) or (C, H, W), got {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name}: holds no images (N = 0)")
    if t.shape[1] not in (1, 3, 4) and t.shape[-1] in (1, 3):
        raise ValueError(
            f"{name}: shape {tuple(t.shape)} looks channels-last; give (N, C, H, W), e.g. x.permute(0, 3, 1, 2)"
        )
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf values")
    return t


def _input_stem(specs: Sequence[str], files: Sequence[Path]) -> str:
    """The name outputs carry: a file's stem, a folder's name, a glob's folder."""
    if len(specs) == 1:
        p = Path(specs[0])
        if p.is_file():
            return p.stem
        if p.is_dir():
            return p.resolve().name or "input"
    parents = {f.resolve().parent for f in files}
    if len(files) == 1:
        return files[0].stem
    if len(parents) == 1:
        return next(iter(parents)).name or "input"
    return "input"


def _safe(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", stem).strip("._") or "input"


def load_inputs(
    specs: Sequence[str],
    channels: int | None,
    resize: Sequence[int] | None,
    normalization: dict[str, list[float]] | None,
) -> Inputs:
    """``--input`` values -> :class:`Inputs`; images are read with ``channels`` (the model's) when known."""
    from provex.data.images import load_images, normalize

    size = _resize_arg(resize)
    notes: list[str] = []
    tensors = [s for s in specs if Path(s).suffix.lower() in TENSOR_SUFFIXES]
    if tensors:
        if len(specs) != 1:
            raise ValueError("--input: give one tensor file, or any number of image files, folders and globs")
        pixels = _as_images(load_tensor_file(specs[0]), notes)
        if size is not None and tuple(pixels.shape[2:]) != size:
            pixels = torch.nn.functional.interpolate(
                pixels, size=size, mode="bilinear", antialias=True, align_corners=False
            )
        if channels is not None and pixels.shape[1] != channels:
            raise ValueError(
                f"--input: {specs[0]} holds {pixels.shape[1]}-channel images of shape {tuple(pixels.shape[1:])}; "
                f"the model takes {channels}-channel images"
            )
        stem = Path(specs[0]).stem
        names = [f"{stem}[{i}]" for i in range(pixels.shape[0])]
        files: list[Path] = [Path(specs[0])]
    else:
        for s in specs:
            p = Path(s)
            if p.exists() and not (p.is_dir() or p.is_file()):
                raise ValueError(f"--input: {p} is neither a file nor a folder")
        pixels, files = load_images(list(specs), channels=channels, resize=size, name="--input")
        if channels is not None:
            from PIL import Image

            with Image.open(files[0]) as img:
                native = 1 if img.mode in ("L", "1", "I;16", "I", "F") else 3
            if native != channels:
                notes.append(f"--input: images converted to {'grey' if channels == 1 else 'RGB'} for the model")
        stem = _input_stem(specs, files)
        names = [f.name for f in files]
    if normalization is None and pixels.min() >= 0 and pixels.max() > 2.0:
        notes.append(
            f"--input: float values reach {float(pixels.max()):.4g}; images are usually in [0, 1] "
            "(0..255 floats should be divided by 255)"
        )
    x = pixels
    if normalization is not None:
        n = len(normalization["mean"])
        if n not in (1, pixels.shape[1]):
            raise ValueError(f"--mean/--std have {n} values for {pixels.shape[1]}-channel images")
        x = normalize(pixels, normalization["mean"], normalization["std"])
    return Inputs(x, pixels, names, _safe(stem), list(files), notes, normalization)


def load_samples(
    model: str,
    index: Sequence[int] | None,
    every: bool,
    resize: Sequence[int] | None,
    normalization: dict[str, list[float]] | None,
    default: Sequence[int] = tuple(range(8)),
) -> tuple[Inputs, list[int]]:
    """The zoo model's shipped samples (``--index`` / ``--all``; default the first 8) as :class:`Inputs`."""
    from provex import models
    from provex.data.images import normalize
    from provex.data.samples import samples

    if model not in models.registered():
        raise ValueError(f"--input is required for --model {model!r} (only zoo models ship sample images)")
    sample_set = models.entry(model).samples
    if sample_set is None:
        raise ValueError(f"model {model!r} has no shipped samples; pass --input FILE")
    if resize:
        raise ValueError("--resize applies to --input files, not to the shipped samples")
    xs, _ = samples(sample_set)
    idx = list(range(xs.shape[0])) if every else list(index or [i for i in default if i < xs.shape[0]])
    bad = [i for i in idx if not 0 <= i < xs.shape[0]]
    if bad:
        raise ValueError(f"--index out of range 0..{xs.shape[0] - 1}: {bad}")
    pixels = xs[idx]
    x = pixels if normalization is None else normalize(pixels, normalization["mean"], normalization["std"])
    names = [f"sample {i}" for i in idx]
    return Inputs(x, pixels, names, f"{sample_set}-samples", normalization=normalization), idx


def load_input(path: str | os.PathLike) -> torch.Tensor:
    """Images (N, C, H, W) from a ``.pt`` / ``.npy`` tensor (integers 0..255 rescaled to [0, 1])."""
    return _as_images(load_tensor_file(path), [])


# ----- reference and labels -----


def load_reference(
    spec: str,
    channels: int | None,
    resize: Sequence[int] | None,
    normalization: dict[str, list[float]] | None,
    progress: bool = False,
) -> Reference:
    """``--reference``: a saved reference file, or a folder / glob of images fitted now.

    A reference describes the same pixels as ``--input``: ``--resize`` applies to a folder
    and ``--normalize`` / ``--mean/--std`` to both (mean and background shift and scale,
    variance scales by std squared), so it ends up in the space the model sees.
    """
    path = Path(spec)
    if path.is_file() and path.suffix.lower() == ".safetensors":
        ref = Reference.load(path, name="--reference")
    elif path.is_file() and path.suffix.lower() in TENSOR_SUFFIXES:
        ref = Reference.fit(_as_images(load_tensor_file(path, "--reference"), [], "--reference"), name="--reference")
    else:
        ref = Reference.fit(spec, channels=channels, resize=_resize_arg(resize), progress=progress, name="--reference")
    if normalization is not None:
        c = ref.mean.shape[-3]
        m = torch.as_tensor(normalization["mean"], dtype=ref.mean.dtype).view(-1, 1, 1).expand(c, 1, 1)
        s = torch.as_tensor(normalization["std"], dtype=ref.mean.dtype).view(-1, 1, 1).expand(c, 1, 1)
        ref = Reference(
            (ref.mean - m) / s,
            ref.var / s.square(),
            (ref.background - m) / s,
            ref.count,
            ref.source + f", normalised with mean {normalization['mean']} std {normalization['std']}",
            dict(ref.meta),
        )
    return ref


def read_labels(path: str | os.PathLike) -> list[str]:
    """Class names from ``path``: one per line (blank lines ignored), or a JSON list of strings."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--labels: {path} is a folder; give a text file with one class name per line")
    if not path.is_file():
        raise ValueError(f"--labels: no such file {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as err:
        raise ValueError(f"--labels: cannot read {path} as text ({err.__class__.__name__})") from None
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"--labels: {path} is not a valid JSON list ({err.msg}, line {err.lineno})") from None
        if not isinstance(names, list) or not all(isinstance(n, (str, int, float)) for n in names):
            raise ValueError(f"--labels: {path} must hold a JSON list of class names")
        names = [str(n) for n in names]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ValueError(f"--labels: {path} holds no class names")
    return names
