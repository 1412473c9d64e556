"""One entry point for every explanation method: ``explain(model, x, method, ...)``.

A method registers itself in its own module with :func:`register_method`; the registry finds
every such module on first use (see :mod:`provex._families`), so adding a method is a
one-file change. An implementation is called as ``fn(model, x, target, **options)`` and
returns an :class:`~provex.explanation.Explanation`. Before the call the registry

* refuses unknown options (and maps a deprecated option name to its new one, with a
  ``FutureWarning``);
* checks ``x`` (finite, floating, (N, C, H, W)), moves it to the model's device and casts it
  to the model's floating dtype (a float64 or half input for a float32 model just works);
  a value that overflows that dtype is refused with an error naming ``x``;
* switches autograd on locally (``torch.enable_grad()`` outside any ``inference_mode``), so
  gradient methods work inside ``torch.no_grad()`` and ``torch.inference_mode()`` (an input
  made in inference mode is cloned);
* resolves ``target`` to an (N,) long tensor from one no-grad prediction pass, unless the
  method was registered with ``resolves_target=True``: such a method (one forward pass is
  all it needs, e.g. a gradient) receives ``target`` as ``None`` or an (N,) long tensor,
  resolves it on its *own* forward output with :func:`provex.checks.resolve_target` and sets
  ``exp.prediction``, so the call costs one pass instead of two.

After the call it records the cost keys every method has (see ``notes/conventions.md``):

* ``info["model_calls"]``: inputs passed through the model, counted by a forward pre-hook on
  ``model`` for the duration of the call (a forward, or a forward+backward, of one image
  counts 1; the prediction pass counts too). Passes through a *converted copy* of the model
  (an ADF twin, a rewritten graph for LRP) do not reach that hook: the method reports them
  as ``info["model_calls_converted"]`` (an int) and the registry adds them in (the RDE
  methods' ``info["model_calls_adf"]``, inputs through their ADF twin, counts the same way:
  :data:`CONVERTED_CALL_KEYS`). A ``model_calls`` a method set itself is replaced.
* ``info["model_calls_backward"]``: of those, the inputs whose forward recorded an autograd
  graph (a backward can follow: gradient methods), plus the converted passes (LRP's rewritten
  graph is a forward+backward); RDE counts its own exactly. Benchmarks turn the two counts into
  forward+backward equivalents.
* ``info["seconds"]``: wall time of the whole ``explain`` call.
* ``info["options"]``: every option with the value used.

The relevance (and any extra ``maps``) come back in the dtype the model saw.
"""

from __future__ import annotations

import inspect
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from provex.checks import check_images, check_logits, choose, resolve_target
from provex.explanation import Explanation

__all__ = [
    "CHEAP_VOCABULARY",
    "CONVERTED_CALL_KEYS",
    "MethodSpec",
    "explain",
    "get_method",
    "methods",
    "model_dtype",
    "register_method",
]

MethodFn = Callable[..., Explanation]

CHEAP_VOCABULARY: dict[str, Any] = {"max_iter": 3, "n_samples": 2, "progress": False}
"""Options of the shared vocabulary that make any method's call cheap (used where a method
registered no ``cheap_options`` of its own): few iterations, few draws, no progress bar."""


CONVERTED_CALL_KEYS = ("model_calls_converted", "model_calls_adf")
"""``info`` keys a method uses for inputs it ran through a converted copy of the model (not
through ``model`` itself); the registry adds them to the hooked count."""


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: implementation, family, description and registration flags.

    ``cheap_options``: options that keep one call fast on a small image (same code path, small
    budgets); the contract tests and smoke runs use them. ``resolves_target``: the method
    resolves ``target`` on its own forward pass (see the module docstring). ``deprecated``:
    old option name -> new name, accepted with a ``FutureWarning`` for one release.
    """

    name: str
    fn: MethodFn
    family: str
    description: str
    resolves_target: bool = False
    deprecated: Mapping[str, str] = field(default_factory=dict)
    explicit_cheap_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def options(self) -> dict[str, Any]:
        """Keyword options and their defaults (everything after ``model, x, target``)."""
        params = list(inspect.signature(self.fn).parameters.values())[3:]
        return {
            p.name: (None if p.default is inspect.Parameter.empty else p.default)
            for p in params
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }

    @property
    def cheap_options(self) -> dict[str, Any]:
        """Small-budget options: the shared vocabulary's cheap values, then the method's own."""
        valid = self.options
        out = {k: v for k, v in CHEAP_VOCABULARY.items() if k in valid}
        out.update(self.explicit_cheap_options)
        return out

    def translate(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Options with deprecated names renamed (warning once per call); unknown names refused."""
        out = dict(options)
        for old, new in self.deprecated.items():
            if old in out:
                if new in out:
                    raise ValueError(f"{old} is the deprecated name of {new}; pass only {new}")
                warnings.warn(
                    f"option {old!r} of {self.name!r} is deprecated and will be removed in the next release; "
                    f"use {new!r}",
                    FutureWarning,
                    stacklevel=3,
                )
                out[new] = out.pop(old)
        valid = self.options
        unknown = sorted(set(out) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for method {self.name!r}; valid options: {sorted(valid) or 'none'}"
            )
        return out


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(
    name: str,
    *,
    family: str,
    description: str,
    cheap_options: Mapping[str, Any] | None = None,
    resolves_target: bool = False,
    deprecated: Mapping[str, str] | None = None,
) -> Callable[[MethodFn], MethodFn]:
    """Decorator that makes ``fn(model, x, target, **options)`` available to :func:`explain`.

    ``cheap_options``: small budgets for tests and smoke runs (merged over
    :data:`CHEAP_VOCABULARY`). ``resolves_target``: ``fn`` gets ``target`` unresolved (``None``
    or (N,) long) and resolves it on its own forward output. ``deprecated``: ``{old: new}``
    option names still accepted for one release.
    """

    def deco(fn: MethodFn) -> MethodFn:
        spec = MethodSpec(
            name=name,
            fn=fn,
            family=family,
            description=description,
            resolves_target=resolves_target,
            deprecated=dict(deprecated or {}),
            explicit_cheap_options=dict(cheap_options or {}),
        )
        unknown = sorted(set(spec.explicit_cheap_options) - set(spec.options))
        bad_alias = sorted(v for v in spec.deprecated.values() if v not in spec.options)
        if unknown or bad_alias:
            raise ValueError(f"register_method({name!r}): options {unknown or bad_alias} are not options of {fn}")
        _REGISTRY[name] = spec
        return fn

    return deco


def _load_families() -> None:
    """Import the modules that register methods (done lazily to keep ``import provex`` light)."""
    from provex import _families

    _families.load()


def methods(details: bool = False) -> list[str] | list[MethodSpec]:
    """Names (or full specs, with ``details=True``) of the methods ``explain`` accepts."""
    _load_families()
    specs = [_REGISTRY[k] for k in sorted(_REGISTRY)]
    return specs if details else [s.name for s in specs]


def get_method(name: str) -> MethodSpec:
    """The spec registered under ``name``; an unknown name lists the valid ones."""
    _load_families()
    return choose("method", name, _REGISTRY)


# ----- the call -----


def model_dtype(model: nn.Module, default: torch.dtype = torch.float32) -> torch.dtype:
    """The floating dtype of the model's first floating parameter (or buffer); ``default`` if none."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return default


def _model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return fallback


class _ScriptView(nn.Module):
    """A TorchScript model behind a plain module: ScriptModules take no hooks, this one does."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)


@contextmanager
def _count_inputs(model: nn.Module) -> Iterator[list[int]]:
    """Count the inputs (first dimension of the first tensor argument) of every ``model`` call:
    ``[all, those whose forward recorded an autograd graph]`` (the second: passes a backward
    can follow, the forward+backward passes of gradient methods)."""
    count = [0, 0]

    def size(args: tuple, kwargs: dict) -> int:
        for a in (*args, *kwargs.values()):
            if isinstance(a, torch.Tensor):
                return int(a.shape[0]) if a.ndim else 1
        return 0

    def pre(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        count[0] += size(args, kwargs)

    def post(_module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.requires_grad:
            count[1] += size(args, kwargs)

    handles = [
        model.register_forward_pre_hook(pre, with_kwargs=True),
        model.register_forward_hook(post, with_kwargs=True),
    ]
    try:
        yield count
    finally:
        for h in handles:
            h.remove()


def _prepare_x(x: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``x`` on the model's device in the model's dtype; out-of-range values are refused."""
    if x.is_inference():
        with torch.inference_mode(False):
            x = x.clone()
    if x.dtype != dtype:
        cast = x.to(dtype)
        if not bool(torch.isfinite(cast).all()):
            limit = torch.finfo(dtype).max
            raise ValueError(
                f"x has values beyond the range of the model's dtype {dtype} (|x| <= {limit:g}); "
                "rescale x or run the model in a wider dtype"
            )
        x = cast
    return x.to(device)


def _target_shape(target: int | torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor | None:
    """``target`` as ``None`` or an (N,) long tensor (range is checked later on the logits)."""
    if target is None:
        return None
    t = torch.as_tensor(target)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"target must be an integer class index or an integer tensor, got dtype {t.dtype}")
    t = t.to(device=device, dtype=torch.long)
    if t.ndim == 0:
        t = t.expand(n).clone()
    if t.shape != (n,):
        raise ValueError(f"target must be an int or have shape ({n},), got {tuple(t.shape)}")
    return t


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return check_logits(model(x), x.shape[0])


def _explain_error(err: RuntimeError, model: nn.Module, method: str, dtype: torch.dtype, device: torch.device) -> None:
    """Turn the torch errors of the audited cases into one-line errors naming the argument."""
    msg = str(err)
    if "Inference tensor" in msg or "inference tensor" in msg:
        raise ValueError(
            f"model: its parameters were created inside torch.inference_mode(), so {method!r} cannot take "
            "gradients through it; create or load the model outside inference_mode"
        ) from err
    if dtype in (torch.float16, torch.bfloat16):
        first = msg.strip().splitlines()[0] if msg.strip() else type(err).__name__
        raise ValueError(
            f"model: {method!r} failed with the model in {dtype} on {device.type} ({first}); "
            "run it in float32 (model.float())"
        ) from err


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
    there first. ``x`` is cast to the model's floating dtype. Other keyword ``options`` go to
    the method; ``provex.methods(details=True)`` lists each method's options and defaults.
    Works inside ``torch.no_grad()`` and ``torch.inference_mode()``.
    """
    start = time.perf_counter()
    spec = get_method(method)
    options = spec.translate(options)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x = check_images(x)
    if device is not None:
        model.to(device)
    dev = torch.device(device) if device is not None else _model_device(model, x.device)
    dtype = model_dtype(model, default=x.dtype)
    if model.training:
        warnings.warn("model is in training mode; call model.eval() for reproducible explanations", stacklevel=2)
    if isinstance(model, torch.jit.ScriptModule):
        model = _ScriptView(model).train(model.training)
    with torch.inference_mode(False), torch.enable_grad(), _count_inputs(model) as calls:
        x = _prepare_x(x, dtype, dev)
        try:
            if spec.resolves_target:
                exp = spec.fn(model, x, _target_shape(target, x.shape[0], dev), **options)
                if exp.prediction is None:
                    exp.prediction = _predict(model, x).argmax(1)
            else:
                logits = _predict(model, x)
                tgt = resolve_target(target, logits)
                exp = spec.fn(model, x, tgt, **options)
                exp.prediction = logits.argmax(1)
        except RuntimeError as err:
            _explain_error(err, model, method, dtype, dev)
            raise
    if exp.relevance.dtype != x.dtype:
        exp.relevance = exp.relevance.to(x.dtype)
    if exp.maps:
        exp.maps = {k: v.to(x.dtype) for k, v in exp.maps.items()}
    converted = sum(int(exp.info.get(k, 0) or 0) for k in CONVERTED_CALL_KEYS)
    exp.info["model_calls"] = int(calls[0]) + converted
    # a method that counts its own backward passes (RDE) keeps its count
    exp.info.setdefault("model_calls_backward", int(calls[1]) + converted)
    exp.info["seconds"] = time.perf_counter() - start
    exp.info.setdefault("options", {**spec.options, **options})
    return exp
