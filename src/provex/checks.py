"""Input checks shared by every method: clear one-line ``ValueError``s that name the argument.

Option validators (use these instead of hand-written ``isinstance`` / range checks; every
error message starts with the argument's name):

* :func:`check_int` ``(value, name, low=1, high=None)``: an integer (bools refused) in ``[low, high]``.
* :func:`check_float` ``(value, name, low=None, high=None, low_open=False, high_open=False)``:
  a finite real number in the given interval (open ends with ``low_open`` / ``high_open``).
* :func:`check_choice` ``(value, name, choices)``: one of ``choices``.
* :func:`check_bool` ``(value, name)``: ``True`` or ``False``.
* :func:`check_optional` ``(check, value, name, ...)``: ``None`` or whatever ``check`` accepts.
* :func:`provex.seeding.check_seed` (re-exported here): ``None``, an int or one int per image.

Factory tables (models, methods, benchmarks, sample sets, operators, losses, kernels, ...):
:func:`choose` ``(kind, name, available)`` returns the entry named ``name``, and
:func:`unknown` builds the one message every table uses for a name it lacks:
``unknown KIND 'x'; available: a, b, c`` (prefixed by ``ARGUMENT: `` when given).

Tensor checks: :func:`check_images` (an (N, C, H, W) floating, finite batch),
:func:`check_finite`, :func:`check_relevance`, :func:`check_logits`, and
:func:`resolve_target` (per-image target classes). The names are stable: other families
import them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import numpy as np
import torch

from provex.seeding import check_seed

__all__ = [
    "check_bool",
    "check_choice",
    "check_finite",
    "check_float",
    "check_images",
    "check_int",
    "check_logits",
    "check_optional",
    "check_relevance",
    "check_seed",
    "choose",
    "resolve_target",
    "unknown",
]

T = TypeVar("T")


# ----- factory tables -----


def unknown(
    kind: str, name: object, available: Iterable[Any], argument: str | None = None, also: str = ""
) -> ValueError:
    """The error for a name a table lacks: ``[ARGUMENT: ]unknown KIND 'x'; available: a, b[, or ALSO]``."""
    names = ", ".join(sorted({str(k) for k in available}))
    prefix = f"{argument}: " if argument else ""
    return ValueError(f"{prefix}unknown {kind} {name!r}; available: {names}" + (f", or {also}" if also else ""))


def choose(
    kind: str, name: object, available: Mapping[str, T] | Iterable[str], argument: str | None = None, also: str = ""
) -> T | str:
    """The entry of ``available`` named ``name`` (a mapping's value; ``name`` itself for a list of names).

    An unknown name raises :func:`unknown`'s one-line ``ValueError`` listing the valid names.
    """
    table = available if isinstance(available, Mapping) else {k: k for k in available}
    try:
        if name in table:
            return table[name]  # type: ignore[index]
    except TypeError:  # an unhashable name is no table entry
        pass
    raise unknown(kind, name, table, argument, also)


# ----- option validators -----


def check_int(value: object, name: str, low: int | None = 1, high: int | None = None) -> int:
    """``value`` must be an integer (not a bool) with ``low <= value <= high``; returns it as ``int``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if low is not None and value < low:
        what = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{name} must be {what}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be an integer <= {high}, got {value}")
    return value


def check_float(
    value: object,
    name: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` must be a finite real number in the interval given by ``low``/``high``.

    ``low_open=True`` excludes ``low`` (``value > low``), ``high_open=True`` excludes ``high``.
    Returns it as ``float``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    too_low = low is not None and (v <= low if low_open else v < low)
    too_high = high is not None and (v >= high if high_open else v > high)
    if too_low or too_high:
        lo = "" if low is None else f"{'(' if low_open else '['}{low:g}"
        hi = "" if high is None else f"{high:g}{')' if high_open else ']'}"
        if low is not None and high is not None:
            where = f"in {lo}, {hi}"
        elif low is not None:
            where = f"{'>' if low_open else '>='} {low:g}"
        else:
            where = f"{'<' if high_open else '<='} {high:g}"
        raise ValueError(f"{name} must be {where}, got {value!r}")
    return v


def check_choice(value: object, name: str, choices: Iterable[Any]) -> Any:
    """``value`` must be one of ``choices``; the error lists them."""
    options = list(choices)
    if not any(value == c and type(value) is type(c) for c in options):
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in options)}; got {value!r}")
    return value


def check_bool(value: object, name: str) -> bool:
    """``value`` must be ``True`` or ``False``."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_optional(check: Callable[..., T], value: object, name: str, *args: Any, **kwargs: Any) -> T | None:
    """``None``, or a value that ``check(value, name, *args, **kwargs)`` accepts."""
    if value is None:
        return None
    return check(value, name, *args, **kwargs)


# ----- tensors -----


def check_images(x: object, name: str = "x") -> torch.Tensor:
    """``x`` must be a floating (N, C, H, W) tensor with N >= 1 and only finite values."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype (e.g. torch.float32), got {x.dtype}")
    if x.ndim != 4:
        hint = " (add a batch dimension with x.unsqueeze(0))" if x.ndim == 3 else ""
        raise ValueError(f"{name} must have shape (N, C, H, W), got {tuple(x.shape)}{hint}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (N = 0)")
    check_finite(x, name)
    return x


def check_finite(t: torch.Tensor, name: str) -> None:
    """Raise if ``t`` holds NaN or infinity."""
    if not bool(torch.isfinite(t).all()):
        bad = "NaN" if bool(torch.isnan(t).any()) else "inf"
        raise ValueError(f"{name} contains {bad} values")


def check_relevance(relevance: object, x: torch.Tensor, name: str = "relevance") -> torch.Tensor:
    """A relevance map must be a finite tensor of exactly ``x``'s shape."""
    if not isinstance(relevance, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(relevance).__name__}")
    if relevance.shape != x.shape:
        raise ValueError(f"{name} has shape {tuple(relevance.shape)} but x has shape {tuple(x.shape)}")
    check_finite(relevance, name)
    return relevance


def check_logits(logits: object, n: int, name: str = "model") -> torch.Tensor:
    """A classifier's output for ``n`` images must be an (n, classes) tensor."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != n:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{name} must map (N, C, H, W) images to (N, classes) logits, got output {got}")
    return logits


def resolve_target(
    target: int | torch.Tensor | None,
    logits: torch.Tensor,
    name: str = "target",
) -> torch.Tensor:
    """Per-image target classes (N,) on ``logits``' device; ``None`` means the predicted class."""
    n, num_classes = logits.shape[0], logits.shape[1]
    if target is None:
        return logits.detach().argmax(1)
    t = torch.as_tensor(target)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer class index or an integer tensor, got dtype {t.dtype}")
    t = t.to(device=logits.device, dtype=torch.long)
    if t.ndim == 0:
        t = t.expand(n).clone()
    if t.shape != (n,):
        raise ValueError(f"{name} must be an int or have shape ({n},), got {tuple(t.shape)}")
    if bool(((t < 0) | (t >= num_classes)).any()):
        raise ValueError(f"{name} out of range: classes are 0..{num_classes - 1}, got {t.tolist()}")
    return t
