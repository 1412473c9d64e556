"""Any classifier from a short spec: a zoo name, a torchvision architecture, a file.

=============================  ==========================================================
spec                           what is loaded
=============================  ==========================================================
``mnist-cnn``                  a zoo model with its card (``provex models list``)
``torchvision:resnet18``       ``torchvision.models.get_model("resnet18")`` with random
                               weights, or ``weights=FILE`` (a state dict, read safely)
``model.pt`` / ``model.ts``    a TorchScript file (``torch.jit.save``)
``model.pt2``                  a ``torch.export`` program (``torch.export.save``)
``net.py:make_model``          ``make_model()`` from that Python file, then ``weights=FILE``
=============================  ==========================================================

Pickled whole models are refused (``torch.load`` of a pickle runs arbitrary code); save a
state dict and use ``FILE.py:FACTORY`` or TorchScript instead. Every loaded model is in eval
mode and carries ``model.provex_spec``, the description that run manifests record.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["describe_model", "load_model"]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _load_state_dict(model: nn.Module, weights: str | os.PathLike, name: str) -> None:
    path = Path(weights)
    if not path.is_file():
        raise ValueError(f"{name}: no such file {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's pickle-protocol notes; the error below is the message
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickles with code, corrupt files: never a traceback
            raise ValueError(
                f"{name}: {path} is not a state dict readable without running code ({err.__class__.__name__})"
            ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{name}: {path} does not hold a state dict (a mapping of names to tensors)")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise ValueError(f"{name}: {path} does not fit the model: {' '.join(first[:2])[:300]}") from None


def _from_file(path: Path, factory: str, name: str) -> nn.Module:
    if not path.is_file():
        raise ValueError(f"{name}: no such file {path}")
    module_name = f"provex_user_model_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{name}: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # so pickling for worker processes finds the classes
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[module_name]
        raise ValueError(f"{name}: importing {path} failed: {err.__class__.__name__}: {err}") from None
    fn = getattr(module, factory, None)
    if fn is None or not callable(fn):
        raise ValueError(f"{name}: {path} has no callable {factory!r}")
    model = fn()
    if not isinstance(model, nn.Module):
        raise ValueError(f"{name}: {path}:{factory}() returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_model(
    spec: str | os.PathLike | nn.Module,
    weights: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    name: str = "model",
) -> nn.Module:
    """Load a classifier from ``spec`` (see the module docstring), in eval mode on ``device``."""
    from provex import models as zoo

    if isinstance(spec, nn.Module):
        model = spec
        desc: dict[str, Any] = {"spec": f"python:{type(spec).__name__}"}
    else:
        text = str(spec)
        if weights is not None and not Path(weights).is_file():
            raise ValueError(f"weights: no such file {weights}")
        if text.startswith("torchvision:"):
            import torchvision

            arch = text.split(":", 1)[1]
            if arch not in torchvision.models.list_models():
                raise ValueError(f"{name}: torchvision has no model {arch!r} (see torchvision.models.list_models())")
            model = torchvision.models.get_model(arch, weights=None)
            desc = {"spec": text}
        elif ":" in text and text.rsplit(":", 1)[0].endswith(".py"):
            file, factory = text.rsplit(":", 1)
            model = _from_file(Path(file), factory, name)
            desc = {"spec": text, "source_digest": _file_digest(Path(file))}
        elif text.endswith(".py"):
            raise ValueError(f"{name}: name the factory function, e.g. {text}:make_model")
        elif Path(text).is_file() and text.endswith(".pt2"):
            path = Path(text)
            try:
                model = torch.export.load(str(path)).module()
            except Exception as err:
                raise ValueError(f"{name}: {path} is not a torch.export program ({err.__class__.__name__})") from None
            desc = {"spec": text, "digest": _file_digest(path)}
        elif Path(text).is_file():
            path = Path(text)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, still common
                    model = torch.jit.load(str(path), map_location="cpu")
            except Exception:
                raise ValueError(
                    f"{name}: {path} is not a TorchScript file; for a state dict use "
                    "torchvision:NAME or FILE.py:FACTORY with --weights (pickled models are refused)"
                ) from None
            desc = {"spec": text, "digest": _file_digest(path)}
        elif text in zoo.registered():
            desc = {"spec": text, "zoo": True}
            try:  # a zoo weights file (state dict + card), e.g. from `provex train`
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = zoo.load(text, device=device, path=weights)
                if weights is not None:
                    desc.update({"weights": str(weights), "weights_digest": _file_digest(Path(weights))})
                weights = None
            except Exception:
                if weights is None:
                    raise
                model = zoo.load(text, device=device)
        else:
            raise ValueError(
                f"{name}: {text!r} is not a zoo model ({', '.join(zoo.available())}), a torchvision:NAME, "
                "a TorchScript file or FILE.py:FACTORY"
            )
        if weights is not None:
            _load_state_dict(model, weights, "weights")
            desc["weights"] = str(weights)
            desc["weights_digest"] = _file_digest(Path(weights))
    if device is not None:
        model.to(device)
    model.eval()
    with contextlib.suppress(AttributeError, RuntimeError):  # some scripted modules refuse new attributes
        model.provex_spec = desc  # type: ignore[attr-defined]
    return model


def describe_model(model: nn.Module) -> dict[str, Any]:
    """What a run manifest records of ``model``: its spec, class, size and a weights digest."""
    desc = dict(getattr(model, "provex_spec", None) or {"spec": f"python:{type(model).__name__}"})
    h = hashlib.sha256()
    n = 0
    for key, t in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        n += t.numel()
    desc.update({"class": type(model).__name__, "parameters": int(n), "state_digest": h.hexdigest()[:16]})
    return desc
