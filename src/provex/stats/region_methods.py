"""Map + region tests as one registered method: ``provex.explain(model, x, "rc-rde+test")``.

For every map method registered before this module is imported (it is imported last by
:mod:`provex._families`) a method ``"NAME+test"`` is registered. It computes NAME's map and
then tests the regions the map highlights with :func:`provex.stats.test_regions`; the
explanation it returns is NAME's, with

- ``info["region_tests"]``: the :class:`~provex.stats.RegionTestResult` as a dict (``to_dict``);
- ``info["per_image"]``: ``regions``, ``regions_rejected`` (per image), ``region_p_values`` or
  ``region_e_values`` and ``region_stopping_time`` (N, R), ``region_model_calls`` (N, R), padded
  with NaN / -1 / 0 to a fixed R (``max_regions``, or ``k`` for top-k) so batches and shards line up;
- ``maps["region_labels"]`` (0 outside, r + 1 in region r) and ``maps["region_decisions"]``
  (+1 on significant regions, -1 on the others), both of the relevance's shape;
- ``info["model_calls"]``: the map's calls (when it reports them) plus the tests'.

Options: NAME's own, plus ``test`` ("xrt" / "betting"), ``regions`` ("auto", "components",
"top-k", "cells"), ``test_alpha`` (the level; named so it cannot clash with a map option such
as LRP's ``alpha``), ``fdr`` (True / "image", "dataset", False) and ``test_options`` (a dict of
any other :func:`~provex.stats.test_regions` keyword: ``K``, ``M``, ``tau_max``, ``context``,
``score``, ``k``, ``grid``, ``max_regions``, ...). ``reference`` and ``seed`` are shared with the
map method when it has them (the same reference fills both), else added.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from provex.explanation import Explanation
from provex.registry import _REGISTRY, MethodSpec, register_method
from provex.stats.region_result import RegionTestResult
from provex.stats.region_tests import test_regions

__all__ = ["EXCLUDED", "TEST_OPTIONS", "attach_region_tests", "register_combined"]

SUFFIX = "+test"
EXCLUDED = ("shap-xrt",)
"""Registered methods that get no ``+test`` twin (already a test)."""

TEST_OPTIONS: dict[str, Any] = {"test": "xrt", "regions": "auto", "test_alpha": 0.05, "fdr": True, "test_options": None}
SHARED_OPTIONS: dict[str, Any] = {"reference": None, "seed": 0}
_FIXED = {"model", "x", "explanation", "reference", "regions", "test", "alpha", "fdr", "target", "seed"}
_TUNABLE = set(inspect.signature(test_regions).parameters) - _FIXED


def attach_region_tests(exp: Explanation, result: RegionTestResult) -> Explanation:
    """Add the region tests' decisions, per-image values and maps to ``exp`` (in place), and return it."""
    c = exp.relevance.shape[1]
    as_map = lambda t: t[:, None].expand(-1, c, -1, -1).to(exp.relevance.dtype).contiguous()  # noqa: E731
    exp.maps = {
        **(exp.maps or {}),
        "region_labels": as_map(result.labels.to(exp.relevance.device)),
        "region_decisions": as_map(result.decision_map().to(exp.relevance.device)),
    }
    exp.info["region_tests"] = result.to_dict()
    per_image = dict(exp.info.get("per_image") or {})
    per_image.update(result.per_image())
    exp.info["per_image"] = per_image
    base = exp.info.get("model_calls")
    exp.info["map_model_calls"] = base
    exp.info["test_model_calls"] = result.total_model_calls
    if isinstance(base, (int, float)):
        exp.info["model_calls"] = int(base) + result.total_model_calls
    return exp


def register_combined(base: str) -> str:
    """Register ``"BASE+test"`` for the registered map method ``base``; returns the new name."""
    spec: MethodSpec = _REGISTRY[base]
    base_options = spec.options
    clash = sorted(set(base_options) & set(TEST_OPTIONS))
    if clash:
        raise ValueError(f"method {base!r} has options {clash} that the +test method needs for itself")
    extra = {k: v for k, v in SHARED_OPTIONS.items() if k not in base_options}
    name = base + SUFFIX

    def combined(model: nn.Module, x: torch.Tensor, target: torch.Tensor, **options: Any) -> Explanation:
        map_opts = {k: v for k, v in options.items() if k in base_options}
        test_opts = dict(options.get("test_options") or {})
        unknown = sorted(set(test_opts) - _TUNABLE)
        if unknown:
            raise ValueError(f"test_options: unknown option(s) {unknown}; valid: {sorted(_TUNABLE)}")
        exp = spec.fn(model, x, target, **map_opts)
        result = test_regions(
            model,
            x,
            exp,
            reference=options.get("reference"),
            regions=options.get("regions", TEST_OPTIONS["regions"]),
            test=options.get("test", TEST_OPTIONS["test"]),
            alpha=options.get("test_alpha", TEST_OPTIONS["test_alpha"]),
            fdr=options.get("fdr", TEST_OPTIONS["fdr"]),
            target=target,
            seed=options.get("seed", SHARED_OPTIONS["seed"]),
            keep_images=False,
            **test_opts,
        )
        exp.method = name
        return attach_region_tests(exp, result)

    params = [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in ("model", "x", "target")] + [
        inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
        for k, v in {**base_options, **extra, **TEST_OPTIONS}.items()
    ]
    combined.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    combined.__name__ = name.replace("-", "_").replace("+", "_")
    combined.__doc__ = f"{base}'s map, then error-controlled tests of the regions it highlights."
    register_method(
        name,
        family="region tests",
        description=f"{base} map + tests of its regions (SHAP-XRT p-values or betting e-values, FDR control)",
    )(combined)
    return name


for _name in list(_REGISTRY):
    if _name not in EXCLUDED and not _name.endswith(SUFFIX):
        register_combined(_name)
