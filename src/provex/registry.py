"""One entry point for every explanation method: ``explain(model, x, method, ...)``.

Method families register an implementation with :func:`register_method`. An implementation
is called as ``fn(model, x, target, **options)`` with ``x`` already checked (finite, floating,
(N, C, H, W), on the requested device) and ``target`` resolved to an (N,) long tensor; it
returns an :class:`~provex.explanation.Explanation`. The registry adds the prediction, the
wall time and the options used to ``info``.
"""

from __future__ import annotations

import inspect
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from provex.checks import check_images, resolve_target
from provex.explanation import Explanation

__all__ = ["MethodSpec", "explain", "get_method", "methods", "register_method"]

MethodFn = Callable[..., Explanation]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its implementation, family and one-line description."""

    name: str
    fn: MethodFn
    family: str
    description: str

    @property
    def options(self) -> dict[str, Any]:
        """Keyword options and their defaults (everything after ``model, x, target``)."""
        params = list(inspect.signature(self.fn).parameters.values())[3:]
        return {
            p.name: (None if p.default is inspect.Parameter.empty else p.default)
            for p in params
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(name: str, *, family: str, description: str) -> Callable[[MethodFn], MethodFn]:
    """Decorator that makes ``fn(model, x, target, **options)`` available to :func:`explain`."""

    def deco(fn: MethodFn) -> MethodFn:
        _REGISTRY[name] = MethodSpec(name=name, fn=fn, family=family, description=description)
        return fn

    return deco


def _load_families() -> None:
    """Import the modules that register methods (done lazily to keep ``import provex`` light)."""
    from provex import _families  # noqa: F401


def methods(details: bool = False) -> list[str] | list[MethodSpec]:
    """Names (or full specs, with ``details=True``) of the methods ``explain`` accepts."""
    _load_families()
    specs = [_REGISTRY[k] for k in sorted(_REGISTRY)]
    return specs if details else [s.name for s in specs]


def get_method(name: str) -> MethodSpec:
    """The spec registered under ``name``; an unknown name lists the valid ones."""
    _load_families()
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; available methods: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def explain(
    model: nn.Module,
    x: torch.Tensor,
    method: str = "sensitivity",
    target: int | torch.Tensor | None = None,
    device: str | torch.device | None = None,
    **options: Any,
) -> Explanation:
    """Explain ``model``'s output on the images ``x`` (N, C, H, W) with ``method``.

    ``target`` is the class to explain per image (int or (N,) tensor); ``None`` means the
    predicted class. ``device`` moves the model (in place, as ``nn.Module.to`` does) and ``x``
    there first. Other keyword ``options`` go to the method; ``provex.methods(details=True)``
    lists each method's options and defaults.
    """
    spec = get_method(method)
    valid = spec.options
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method {method!r}; valid options: {sorted(valid) or 'none'}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x = check_images(x)
    if device is not None:
        model.to(device)
        x = x.to(device)
    else:
        param = next(model.parameters(), None)
        if param is not None and param.device != x.device:
            x = x.to(param.device)
    if model.training:
        warnings.warn("model is in training mode; call model.eval() for reproducible explanations", stacklevel=2)
    with torch.no_grad():
        logits = model(x)
    if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
        raise ValueError(f"model must map (N, C, H, W) to (N, classes) logits, got output {tuple(logits.shape)}")
    tgt = resolve_target(target, logits)
    start = time.perf_counter()
    exp = spec.fn(model, x, tgt, **options)
    exp.info.setdefault("seconds", time.perf_counter() - start)
    exp.info.setdefault("options", {**valid, **options})
    exp.prediction = logits.argmax(1)
    return exp
