"""One image, one answer: each method's map (and its ordering score) alone vs in a batch.

``provex benchmark batch-independence [--quick] [--images 16] [--methods ...] [--out DIR]``
explains the shipped MNIST samples with every registered method at its default options
(``progress=False``), once as one batch and once image by image, and scores every map with
the relevance ordering test (per-image seeds, so both runs of an image see the same noise).
Acceptance (issue 12): the per-image ordering areas agree within 0.01 for every method.
Records per method the largest difference of the distortion area, of the accuracy area and
of the maps (relative to the map's largest magnitude). ``--quick``: 2 images.
Writes ``results.json``, ``batch_independence.png`` and ``table.md``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import provex
from provex.benchmarks.common import add_quick_argument, environment, print_table, write_json
from provex.evaluate import relevance_ordering

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="provex benchmark batch-independence", description=__doc__)
    add_quick_argument(p, "2 images")
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    p.add_argument("--step", type=int, default=16, help="ordering test: components replaced per step")
    p.add_argument("--n-samples", type=int, default=16, help="ordering test: noise draws per step")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="benchmarks/batch_independence/results")
    a = p.parse_args(argv)
    for name in ("images", "step", "n_samples"):
        if getattr(a, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer")
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    n = 2 if a.quick else a.images
    methods = a.methods or provex.methods()
    unknown = sorted(set(methods) - set(provex.methods()))
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}")
    model = provex.models.load("mnist-cnn")
    x = provex.data.samples("mnist")[0][:n]
    results: dict[str, Any] = {}
    rows = []
    for method in methods:
        spec = provex.registry.get_method(method)
        opts = {"progress": False} if "progress" in spec.options else {}
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batch = provex.explain(model, x, method, **opts)
            alone = [provex.explain(model, x[i : i + 1], method, **opts) for i in range(n)]
        seconds = time.perf_counter() - start
        single = torch.cat([e.relevance for e in alone])
        score = {"step": a.step, "n_samples": a.n_samples, "seed": 0, "progress": False}
        cb = relevance_ordering(model, x, batch.relevance, target=batch.target, **score)
        cs = relevance_ordering(model, x, single, target=batch.target, **score)
        d_dist = (cb.per_image_auc_distortion - cs.per_image_auc_distortion).abs()
        d_acc = (cb.per_image_auc_accuracy - cs.per_image_auc_accuracy).abs()
        scale = single.flatten(1).abs().max(1).values.clamp_min(1e-30)
        d_map = ((batch.relevance - single).flatten(1).abs().max(1).values / scale).max()
        results[method] = {
            "max_abs_diff_auc_distortion": float(d_dist.max()),
            "max_abs_diff_auc_accuracy": float(d_acc.max()),
            "max_relative_map_diff": float(d_map),
            "identical_maps": bool(torch.equal(batch.relevance, single)),
            "per_image_auc_distortion_batch": cb.per_image_auc_distortion.tolist(),
            "per_image_auc_distortion_alone": cs.per_image_auc_distortion.tolist(),
            "seconds": seconds,
        }
        ok = float(d_dist.max()) <= 0.01 and float(d_acc.max()) <= 0.01
        rows.append([method, float(d_dist.max()), float(d_acc.max()), float(d_map), "yes" if ok else "NO"])
        print(
            f"{method:16s} d_auc_dist {float(d_dist.max()):.2e}  d_auc_acc {float(d_acc.max()):.2e}  "
            f"d_map {float(d_map):.2e}  ({seconds:.1f} s)",
            flush=True,
        )
    out = Path(a.out)
    settings = {**vars(a), "images": n, "model": "mnist-cnn"}
    write_json(out / "results.json", {"settings": settings, "environment": environment(), "methods": results})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from provex.viz.heatmap import save_figure

    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(results), 3.5))
    names = list(results)
    vals = [
        max(results[m]["max_abs_diff_auc_distortion"], results[m]["max_abs_diff_auc_accuracy"], 1e-17) for m in names
    ]
    ax.bar(names, vals)
    ax.set_yscale("log")
    ax.axhline(0.01, color="r", lw=1, label="acceptance 0.01")
    ax.set_ylabel("max |area alone - area in batch|")
    ax.tick_params(axis="x", rotation=60)
    ax.legend()
    ax.set_title(f"{n} MNIST images, default options (1e-17: identical)")
    save_figure(fig, out / "batch_independence.png")
    text = print_table(rows, ["method", "max d auc distortion", "max d auc accuracy", "max rel. map diff", "<= 0.01"])
    (out / "table.md").write_text(
        f"# batch independence ({n} images, mnist-cnn, default options)\n\n"
        f"`provex benchmark batch-independence {' '.join(argv or [])}`\n\n```\n{text}\n```\n"
    )
    print(f"wrote {out / 'results.json'}, {out / 'batch_independence.png'}, {out / 'table.md'}")
    return 0
