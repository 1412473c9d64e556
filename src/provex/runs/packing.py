"""A model (and the run's plan) as bytes that another process or machine can rebuild.

Worker processes and Ray workers receive the model once, as bytes. TorchScript models travel
as ``torch.jit.save`` archives. Everything else goes through cloudpickle, with the code
that is not an installed package sent by value: models loaded from ``FILE.py:FACTORY``
live in a module that a worker cannot import, and classes defined in a script or notebook
(``__main__``) or in a local file next to it neither; cloudpickle's
``register_pickle_by_value`` ships their code along. Installed packages (torch,
torchvision, provex, timm, ...) are pickled by reference and must be installed on workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["dumps", "loads", "pack_model", "unpack_model"]

_INSTALLED_ROOTS = tuple(
    str(Path(p).resolve()) for p in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
)


def _installed(module_name: str) -> bool:
    """True for modules of installed distributions, the standard library and provex itself."""
    top = module_name.split(".")[0]
    if top in ("provex", "torch", "builtins") or top in sys.stdlib_module_names:
        return True
    module = sys.modules.get(top)
    origin = getattr(module, "__file__", None)
    if origin is None:
        return False
    resolved = str(Path(origin).resolve())
    return resolved.startswith(_INSTALLED_ROOTS) or "site-packages" in resolved or "dist-packages" in resolved


def _module_names(obj: Any, depth: int = 0) -> set[str]:
    """Modules defining the classes and functions inside ``obj`` (containers, dataclasses, models)."""
    if depth > 4:
        return set()
    if isinstance(obj, nn.Module):
        return {type(m).__module__ for m in obj.modules()}
    names = {type(obj).__module__}
    if callable(obj) and hasattr(obj, "__module__") and isinstance(obj.__module__, str):
        names.add(obj.__module__)
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (list, tuple, set)):
        items = list(obj)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        items = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    else:
        items = []
    for item in items:
        names |= _module_names(item, depth + 1)
    return names


def _local_modules(obj: Any) -> list[Any]:
    """Modules of the code inside ``obj`` that a worker may not be able to import."""
    out = []
    for name in sorted(_module_names(obj)):
        if name == "__main__" or _installed(name):
            continue  # cloudpickle already sends __main__ by value
        module = sys.modules.get(name)
        if module is not None:
            out.append(module)
    return out


@contextlib.contextmanager
def _by_value(modules: list[Any]) -> Iterator[None]:
    import cloudpickle

    registered = []
    try:
        for m in modules:
            with contextlib.suppress(ValueError):  # already registered
                cloudpickle.register_pickle_by_value(m)
                registered.append(m)
        yield
    finally:
        for m in registered:
            cloudpickle.unregister_pickle_by_value(m)


def dumps(obj: Any) -> bytes:
    """cloudpickle ``obj``, sending the code of non-installed modules by value."""
    import cloudpickle

    with _by_value(_local_modules(obj)):
        return cloudpickle.dumps(obj)


def loads(blob: bytes) -> Any:
    import pickle

    return pickle.loads(blob)


def pack_model(model: nn.Module) -> bytes:
    """The model as bytes (TorchScript archive or cloudpickle); see the module docstring."""
    if isinstance(model, torch.jit.ScriptModule):
        buf = io.BytesIO()
        torch.jit.save(model, buf)
        return dumps(("torchscript", buf.getvalue(), getattr(model, "provex_spec", None)))
    try:
        return dumps(("module", model, None))
    except Exception as err:
        raise ValueError(
            f"model: cannot send {type(model).__name__} to worker processes ({type(err).__name__}: {err}); "
            "use --engine local --workers 1 (in-process), or save it as TorchScript"
        ) from None


def unpack_model(blob: bytes) -> nn.Module:
    """Rebuild a model packed by :func:`pack_model`, in eval mode."""
    kind, payload, spec = loads(blob)
    if kind == "torchscript":
        model = torch.jit.load(io.BytesIO(payload), map_location="cpu")
        with contextlib.suppress(AttributeError, RuntimeError):
            model.provex_spec = spec
    else:
        model = payload
    return model.eval()
