"""One shard of a dataset run: explain its images with every method and score the maps.

:func:`compute_shard` is the single task function every engine runs (in-process, worker
processes, Ray tasks), so their results agree bit for bit when the float arithmetic does:
the same shard boundaries, the same torch thread count (:func:`compute_context`) and the
same per-image seeds. Each image's seed is ``run seed + dataset index``: methods that take
``seed`` get the sequence of their images' seeds (notes/conventions.md), and the relevance
ordering test of image ``i`` is seeded with it too, so every method meets the same noise on
an image and nothing depends on the shard size or on which worker ran it.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["RunPlan", "ShardJob", "ShardResult", "compute_context", "compute_shard", "error_text"]


@dataclass
class RunPlan:
    """Everything a worker needs besides the model (sent once per worker)."""

    methods: dict[str, dict[str, Any]]
    score: dict[str, dict[str, Any]]
    seed: int
    threads: int = 1
    device: str = "cpu"
    reference: Any = None  # provex.Reference given by the user (passed to methods taking ``reference``)
    score_reference: Any = None  # the reference of the ordering test's Gaussian noise (noise="reference")


@dataclass
class ShardJob:
    """One shard: its number, dataset indices, images, labels and maps given from elsewhere."""

    shard: int
    indices: list[int]
    x: torch.Tensor
    label: torch.Tensor
    given: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


@dataclass
class ShardResult:
    """Tensors for the shard's ``.safetensors`` file and one row per (image, method)."""

    shard: int
    tensors: dict[str, torch.Tensor]
    rows: list[dict[str, Any]]
    seconds: float
    worker: str = ""


@contextlib.contextmanager
def compute_context(threads: int) -> Iterator[None]:
    """Run with ``threads`` torch threads and deterministic algorithms, restoring both after."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


def error_text(err: BaseException) -> str:
    """A short error description: type, message and the innermost frame."""
    tb = traceback.extract_tb(err.__traceback__)
    where = f" (at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
    return f"{type(err).__name__}: {err}{where}"[:2000]


def _per_image_scalars(per_image: dict[str, Any], n: int) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in (per_image or {}).items():
        t = torch.as_tensor(value)
        if t.ndim >= 1 and t.shape[0] == n:
            out[str(key)] = t.detach().cpu()
    return out


_FIXED_COLUMNS = {
    "index",
    "method",
    "target",
    "prediction",
    "label",
    "seconds",
    "model_calls",
    "seed",
    "auc_distortion",
    "auc_accuracy",
    "score_seconds",
}


def _ordering_scores(
    model: nn.Module, plan: RunPlan, job: ShardJob, relevance: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image ordering curves: each image alone, seeded with its own seed (shard-independent)."""
    from provex.evaluate import relevance_ordering

    opts = dict(plan.score["ordering"])
    if opts.get("noise") == "reference":
        opts["reference"] = plan.score_reference
    dist, acc, auc_d, auc_a, secs = [], [], [], [], []
    fraction = None
    for j, index in enumerate(job.indices):
        c = relevance_ordering(
            model,
            job.x[j : j + 1],
            relevance[j : j + 1],
            target=target[j : j + 1],
            seed=plan.seed + index,
            progress=False,
            **opts,
        )
        dist.append(c.per_image_distortion[0])
        acc.append(c.per_image_accuracy[0])
        auc_d.append(float(c.per_image_auc_distortion[0]))
        auc_a.append(float(c.per_image_auc_accuracy[0]))
        secs.append(c.seconds)
        fraction = c.fraction_kept
    return (
        torch.stack(dist),
        torch.stack(acc),
        fraction,
        torch.tensor(auc_d, dtype=torch.float64),
        torch.tensor(auc_a, dtype=torch.float64),
        torch.tensor(secs, dtype=torch.float64),
    )


def compute_shard(model: nn.Module, plan: RunPlan, job: ShardJob) -> ShardResult:
    """Explain ``job``'s images with every method of ``plan`` (and score them); see the module docstring."""
    from provex.explanation import Explanation
    from provex.registry import explain, get_method

    start = time.perf_counter()
    n = len(job.indices)
    seeds = [plan.seed + int(i) for i in job.indices]
    x = job.x.to(plan.device)
    tensors: dict[str, torch.Tensor] = {
        "index": torch.tensor(job.indices, dtype=torch.int64),
        "inputs": job.x.float(),
        "label": job.label.to(torch.int64),
    }
    rows: list[dict[str, Any]] = []
    for name, given_opts in plan.methods.items():
        opts = dict(given_opts)
        if name in job.given:
            relevance, target = job.given[name]
            with torch.no_grad():
                prediction = model(x).argmax(1).cpu()
            exp = Explanation(relevance.float(), name, target.long(), {"seconds": float("nan")}, prediction=prediction)
            method_seeds: list[Any] = seeds
        else:
            valid = get_method(name).options
            method_seeds = seeds
            if "seed" in valid:  # each image its own seed, unless the user fixed one (-O METHOD:seed=S)
                s = opts.setdefault("seed", seeds)
                method_seeds = list(s) if isinstance(s, (list, tuple)) else [-1 if s is None else int(s)] * n
            if "progress" in valid and "progress" not in opts:
                opts["progress"] = False
            if "reference" in valid and "reference" not in opts and plan.reference is not None:
                opts["reference"] = plan.reference
            exp = explain(model, x, name, device=plan.device, **opts)
        rel = exp.relevance.detach().cpu()
        tensors[f"{name}/relevance"] = rel
        if exp.ordering is not None:
            tensors[f"{name}/ordering"] = exp.ordering.detach().cpu()
        for key, value in (exp.maps or {}).items():
            tensors[f"{name}/maps/{key}"] = value.detach().cpu()
        per_image = _per_image_scalars(exp.info.get("per_image", {}), n)
        for key, value in per_image.items():
            tensors[f"{name}/per_image/{key}"] = value
        target = exp.target.detach().cpu()
        prediction = exp.prediction.detach().cpu() if exp.prediction is not None else torch.full((n,), -1)
        auc_d = auc_a = score_secs = torch.full((n,), float("nan"), dtype=torch.float64)
        if "ordering" in plan.score:
            dist, acc, fraction, auc_d, auc_a, score_secs = _ordering_scores(model, plan, job, rel, target)
            tensors[f"{name}/curve_distortion"] = dist
            tensors[f"{name}/curve_accuracy"] = acc
            tensors["fraction_kept"] = fraction
        seconds = float(exp.info.get("seconds", float("nan"))) / n
        total_calls = exp.info.get("model_calls")
        share = float(total_calls) / n if isinstance(total_calls, (int, float)) else float("nan")
        per_image_calls = per_image.pop("model_calls", None)  # exact counts, where the method gives them
        for j in range(n):
            row: dict[str, Any] = {
                "index": int(job.indices[j]),
                "method": name,
                "target": int(target[j]),
                "prediction": int(prediction[j]),
                "label": int(job.label[j]),
                "seconds": seconds,
                "model_calls": share if per_image_calls is None else float(per_image_calls[j]),
                "seed": int(method_seeds[j]),
                "auc_distortion": float(auc_d[j]),
                "auc_accuracy": float(auc_a[j]),
                "score_seconds": float(score_secs[j]),
            }
            for key, value in per_image.items():
                if value.ndim == 1:
                    column = f"per_image_{key}" if key in _FIXED_COLUMNS else key
                    row[column] = value[j].item()
            rows.append(row)
    return ShardResult(job.shard, tensors, rows, time.perf_counter() - start)
