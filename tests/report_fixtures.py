"""Small inputs for the report tests: a run folder in the run-store format, concept results."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from provex import Explanation
from provex.benchmarks.report import write_run_store
from provex.evaluate import relevance_ordering
from provex.models.spec import describe_model

METHODS = ("sensitivity", "rc-rde", "smoothgrad")


def small_run(folder: Path, model, x: torch.Tensor, y: torch.Tensor, indices: list[int]) -> dict[str, Explanation]:
    """Three methods on the images ``x`` (cheap, deterministic maps) scored coarsely, as a run folder.

    ``rc-rde`` here is a synthetic mask (top 100 pixels of the gradient), so the test stays fast.
    Shards of 4 images; the dataset indices are ``indices``.
    """
    with torch.no_grad():
        pred = model(x).argmax(1)
    x_req = x.clone().requires_grad_(True)
    logit = model(x_req).gather(1, pred[:, None]).sum()
    (grad,) = torch.autograd.grad(logit, x_req)
    flat = grad.abs().flatten(1)
    mask = torch.zeros_like(flat)
    mask.scatter_(1, flat.topk(100, dim=1).indices, 1.0)
    exps = {
        "sensitivity": Explanation(grad, "sensitivity", pred, {"options": {}, "seconds": 0.1}, prediction=pred),
        "rc-rde": Explanation(
            mask.view_as(x),
            "rc-rde",
            pred,
            {"options": {"rate": 100}, "seconds": 1.0},
            prediction=pred,
            maps={"k=50": (mask.view_as(x) * 0.5), "k=100": mask.view_as(x)},
        ),
        "smoothgrad": Explanation(grad**2, "smoothgrad", pred, {"options": {"square": True}}, prediction=pred),
    }
    curves = {m: relevance_ordering(model, x, e, step=98, n_samples=2, seed=0) for m, e in exps.items()}
    write_run_store(
        folder,
        x,
        y,
        exps,
        model_desc={**describe_model(model), "spec": "mnist-cnn", "zoo": True},
        curves=curves,
        indices=indices,
        shard_size=4,
        class_names=[f"digit {k}" for k in range(10)],
    )
    return exps


def concept_results(folder: Path, wealth: bool) -> Path:
    """A ``test-concepts`` results.json with two classes (optionally with wealth paths)."""
    rows = [
        {"concept": "loop", "rejection_rate": 0.9, "mean_tau": 0.3, "important": True, "fdr_rejection_rate": 0.8},
        {"concept": "bar", "rejection_rate": 0.1, "mean_tau": 0.95, "important": True, "fdr_rejection_rate": 0.0},
    ]
    results = {}
    for cls in ("3", "8"):
        entry = {"rows": rows, "figure": f"class{cls}-cskit.png"}
        if wealth:
            entry["wealth"] = {"loop": [[1.0, 2.0, 25.0], [1.0, 0.5, None]], "bar": [[1.0, 1.1, 0.9]]}
        results[cls] = entry
    d = {
        "settings": {
            "command": "test-concepts",
            "model": "mnist-cnn",
            "test": "cskit",
            "kernel": "rbf",
            "alpha": 0.05,
            "tau_max": 3,
            "repeats": 2,
            "fdr": True,
        },
        "concepts": ["loop", "bar"],
        "cav_accuracy": {"loop": 0.9, "bar": 0.8},
        "results": results,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(d))
    return folder
