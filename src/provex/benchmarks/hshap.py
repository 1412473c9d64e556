"""h-Shap against perturbation and gradient maps on the crosses images (the paper's first experiment).

``provex benchmark hshap [--images N] [--quick] [--out DIR]`` explains ``N`` synthetic images
with one cross (only true positives of ``crosses-cnn``, as in the paper) for the class "cross"
with:

- h-Shap, absolute threshold 0 and relative threshold 70% (the paper's settings) and absolute
  threshold 1e-6, at the paper's ``min_size=4`` and at ``min_size=2``; background = the model
  card's mean training image. With softmax scores a child's score never exceeds its parent's
  (local values of a [0, 1] game are at most 1), so threshold 1e-6 gives exactly the map of
  threshold 0 with scores <= 1e-6 set to zero: the same f1 under the paper's ``> 1e-6`` rule,
  without exploring branches whose scores are already below it;
- KernelSHAP and LIME (captum, called here through small local adapters) on a grid of 4 x 4
  pixel features, the same background, at several sample budgets;
- the gradient magnitude (provex ``sensitivity``, ``absolute=True``) and SmoothGrad (captum
  ``NoiseTunnel`` over ``Saliency``, which averages gradient magnitudes). Signed gradients
  are negative on the crosses (dark ink on white: brighter means less cross), so the
  paper's ``> 1e-6`` rule would miss them entirely.

Every perturbation method plays the same game as h-Shap: the softmax probability of the
target class. Each map (summed over channels) is thresholded as in the paper (``> 1e-6``) and
scored by f1 against the ground-truth cross mask; the "oracle" f1 (best threshold per image)
is reported too. Model evaluations are counted by a wrapper around the model (images passed
through it, forward+backward counting as one). Seconds per image are also given in units of
one forward+backward pass of a batch of 64, measured in the same run. Writes ``results.json``,
``runtime_vs_f1.png`` (log axes) and ``examples.png`` into ``--out`` and prints a table.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from provex import models
from provex.benchmarks.common import add_progress_argument, add_quick_argument, environment, print_table, write_json
from provex.benchmarks.model_speed import forward_backward_seconds
from provex.data.crosses import crosses
from provex.registry import explain
from provex.viz.heatmap import draw_heatmap, save_figure

__all__ = ["CountingModel", "f1_scores", "main", "oracle_f1_scores"]

EPS = 1e-6  # the paper's threshold on maps before f1
TARGET = 1  # the class "contains a cross"


class CountingModel(nn.Module):
    """Wraps a model and counts the images passed through it (the model evaluations)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += int(x.shape[0])
        return self.model(x)


def f1_scores(maps: torch.Tensor, masks: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Per-image f1 of ``maps > eps`` (N, H, W) against boolean ``masks`` (N, H, W)."""
    pred = maps > eps
    tp = (pred & masks).sum((1, 2)).double()
    fp = (pred & ~masks).sum((1, 2)).double()
    fn = (~pred & masks).sum((1, 2)).double()
    return 2 * tp / (2 * tp + fp + fn).clamp_min(1)


def oracle_f1_scores(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per-image best f1 over all thresholds of the map (an upper bound independent of ``eps``)."""
    out = []
    for m, g in zip(maps.flatten(1), masks.flatten(1)):
        order = torch.argsort(m, descending=True)
        vals, hits = m[order], g[order].double()
        tp = hits.cumsum(0)
        k = torch.arange(1, m.numel() + 1, dtype=torch.float64)
        f1 = 2 * tp / (k + g.sum())
        # Only cut between distinct values (ties are kept or dropped together).
        last_of_value = torch.ones_like(vals, dtype=torch.bool)
        last_of_value[:-1] = vals[:-1] != vals[1:]
        out.append(float(f1[last_of_value].max()))
    return torch.tensor(out, dtype=torch.float64)


@dataclass
class Method:
    """One row of the benchmark: how to explain a batch of images and what it is."""

    name: str
    family: str
    run: Callable[[torch.Tensor], torch.Tensor]  # images (n, C, H, W) -> maps (n, H, W)
    per_image: bool = False  # run one image at a time (captum's KernelShap / Lime)
    params: dict[str, Any] = field(default_factory=dict)


def _grid_mask(height: int, width: int, cell: int) -> torch.Tensor:
    """(1, 1, H, W) feature ids of a grid of ``cell x cell`` pixel features."""
    cols = -(-width // cell)
    return ((torch.arange(height)[:, None] // cell) * cols + torch.arange(width)[None, :] // cell)[None, None]


def _methods(
    counter: CountingModel, background: torch.Tensor, budgets: list[int], smooth_samples: int, grid: int, batch: int
) -> list[Method]:
    from captum.attr import KernelShap, Lime, NoiseTunnel, Saliency

    def prob(z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(counter(z), dim=1)

    mask = _grid_mask(background.shape[1], background.shape[2], grid)
    bg = background[None]

    def hshap(**kw: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        def run(x: torch.Tensor) -> torch.Tensor:
            exp = explain(
                counter, x, "h-shap", target=TARGET, reference=background, batch_size=batch, progress=False, **kw
            )
            return exp.relevance.sum(1)

        return run

    def captum_perturbation(cls: type, n_samples: int) -> Callable[[torch.Tensor], torch.Tensor]:
        explainer = cls(prob)

        def run(x: torch.Tensor) -> torch.Tensor:
            attr = explainer.attribute(
                x,
                baselines=bg,
                target=TARGET,
                feature_mask=mask,
                n_samples=n_samples,
                perturbations_per_eval=min(n_samples, batch),
            )
            return attr.detach().sum(1).double()

        return run

    def gradient(x: torch.Tensor) -> torch.Tensor:
        return explain(counter, x, "sensitivity", target=TARGET, absolute=True).relevance.sum(1).double()

    smooth = NoiseTunnel(Saliency(counter))

    def smoothgrad(x: torch.Tensor) -> torch.Tensor:
        attr = smooth.attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=smooth_samples,
            nt_samples_batch_size=smooth_samples,
            stdevs=0.15,
            target=TARGET,
        )
        return attr.detach().sum(1).double()

    out = []
    for s in (4, 2):
        for label, kw in [
            ("abs 0", {"threshold": 0.0}),
            ("rel 70%", {"threshold": 0.7, "threshold_mode": "relative"}),
            ("abs 1e-6", {"threshold": EPS}),
        ]:
            out.append(Method(f"h-Shap {label} (s={s})", "h-Shap", hshap(grid=s, **kw), params={"min_size": s, **kw}))
    for b in budgets:
        out.append(
            Method(
                f"KernelSHAP {b}",
                "KernelSHAP",
                captum_perturbation(KernelShap, b),
                True,
                {"n_samples": b, "grid": grid},
            )
        )
    for b in budgets:
        out.append(Method(f"LIME {b}", "LIME", captum_perturbation(Lime, b), True, {"n_samples": b, "grid": grid}))
    out.append(Method("gradient", "gradient", gradient))
    out.append(Method(f"SmoothGrad {smooth_samples}", "SmoothGrad", smoothgrad, params={"nt_samples": smooth_samples}))
    return out


def _shown(method: Method, top_budget: int) -> bool:
    """Methods drawn in examples.png: h-Shap at s=4 and abs 1e-6 at s=2, the largest budgets, gradients."""
    if method.family == "h-Shap":
        return "(s=4)" in method.name or "abs 1e-6 (s=2)" in method.name
    return method.family not in ("KernelSHAP", "LIME") or method.params["n_samples"] == top_budget


def _true_positives(
    model: nn.Module, n: int, seed: int, n_crosses: list[int]
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The first ``n`` generated positives that the model classifies as positive."""
    d = crosses(2 * n + 20, seed=seed, positive_fraction=1.0, n_crosses=n_crosses)
    with torch.no_grad():
        pred = torch.cat([model(d.images[i : i + 256]).argmax(1) for i in range(0, d.images.shape[0], 256)])
    keep = torch.nonzero(pred == TARGET).flatten()
    if keep.numel() < n:
        raise ValueError(f"only {keep.numel()} of {d.images.shape[0]} generated images are true positives")
    keep = keep[:n]
    return d.images[keep], d.masks[keep, 0], int(d.images.shape[0])


def _figure(results: list[dict[str, Any]], path: Path, title: str) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    families = list(dict.fromkeys(r["family"] for r in results))
    markers = dict(zip(families, "o^svDP*"))
    for ax, key, label in [
        (axes[0], "seconds_per_image", "seconds per image"),
        (axes[1], "evaluations_per_image", "model evaluations per image"),
    ]:
        for fam in families:
            rows = [r for r in results if r["family"] == fam]
            if fam == "h-Shap":
                for r in rows:
                    ax.scatter(r[key], r["f1_mean"], marker="o", s=50, label=r["name"], zorder=3)
            else:
                rows = sorted(rows, key=lambda r: r[key])
                ax.plot([r[key] for r in rows], [r["f1_mean"] for r in rows], marker=markers[fam], label=fam)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"{label} (log)")
        ax.set_ylabel("f1 of map > 1e-6 vs cross mask (log)")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def _examples(images: torch.Tensor, masks: torch.Tensor, examples: dict[str, torch.Tensor], path: Path) -> Path:
    """Images with their cross masks, then each method's map (no image underneath, to keep it legible)."""
    names = list(examples)
    n = images.shape[0]
    fig, axes = plt.subplots(n, len(names) + 1, figsize=(2.1 * (len(names) + 1), 1.9 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(images[i].permute(1, 2, 0).numpy())
        axes[i, 0].contour(masks[i].numpy(), levels=[0.5], colors="c", linewidths=0.6)
        axes[i, 0].set_xticks([])
        axes[i, 0].set_yticks([])
        for j, name in enumerate(names):
            draw_heatmap(axes[i, j + 1], examples[name][i], None, cmap="RdBu_r", colorbar=False)
            if i == 0:
                axes[i, j + 1].set_title(name, fontsize=7)
    axes[0, 0].set_title("image", fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="provex benchmark hshap", description=__doc__)
    p.add_argument("--images", type=int, default=None, help="true-positive images (default 100, --quick 5)")
    add_quick_argument(p, "5 images")
    add_progress_argument(p)
    p.add_argument("--budgets", type=int, nargs="+", default=None, help="KernelSHAP / LIME samples (default 300 3000)")
    p.add_argument("--crosses", type=int, nargs="+", default=[1], help="crosses per image (default 1)")
    p.add_argument("--smoothgrad-samples", type=int, default=None, help="SmoothGrad samples (default 50)")
    p.add_argument("--grid", type=int, default=4, help="KernelSHAP / LIME feature cell in pixels (default 4)")
    p.add_argument("--batch-size", type=int, default=256, help="model inputs per forward pass")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the CPU is shared)")
    p.add_argument("--out", default="results/hshap")
    a = p.parse_args(argv)
    n = a.images if a.images is not None else (5 if a.quick else 100)
    budgets = a.budgets or [300, 3000]
    smooth_samples = a.smoothgrad_samples or 50
    if n < 1 or any(b < 1 for b in budgets) or smooth_samples < 1 or a.grid < 1 or a.threads < 1:
        raise ValueError("--images, --budgets, --smoothgrad-samples, --grid and --threads must be positive")
    torch.set_num_threads(a.threads)
    start_all = time.perf_counter()

    model = models.load("crosses-cnn")
    background = model.card.data_mean  # type: ignore[union-attr]
    images, masks, generated = _true_positives(model, n, a.seed, a.crosses)
    fwd64, fwdbwd64 = forward_backward_seconds(model, images[:1].expand(64, -1, -1, -1).contiguous(), repeats=5)
    counter = CountingModel(model).eval()
    methods = _methods(counter, background, budgets, smooth_samples, a.grid, a.batch_size)

    results: list[dict[str, Any]] = []
    examples: dict[str, torch.Tensor] = {}
    n_show = min(3, n)
    bar = tqdm(total=len(methods) * n, desc="hshap benchmark", unit="map", disable=not a.progress)
    for method in methods:
        torch.manual_seed(a.seed)
        counter.rows = 0
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if method.per_image:
                maps = []
                for i in range(n):
                    maps.append(method.run(images[i : i + 1]))
                    bar.update(1)
                maps_t = torch.cat(maps)
            else:
                maps_t = torch.cat([method.run(images[i : i + 25]) for i in range(0, n, 25)])
                bar.update(n)
        seconds = time.perf_counter() - start
        f1 = f1_scores(maps_t, masks)
        oracle = oracle_f1_scores(maps_t, masks)
        results.append(
            {
                "name": method.name,
                "family": method.family,
                "params": method.params,
                "f1_mean": float(f1.mean()),
                "f1_sem": float(f1.std() / np.sqrt(n)) if n > 1 else 0.0,
                "oracle_f1_mean": float(oracle.mean()),
                "seconds_per_image": seconds / n,
                "seconds_per_image_in_fwd_bwd_64": seconds / n / fwdbwd64,
                "evaluations_per_image": counter.rows / n,
                "positive_fraction_of_map": float((maps_t > EPS).double().mean()),
                "f1_per_image": f1.tolist(),
            }
        )
        if _shown(method, max(budgets)):
            examples[method.name] = maps_t[:n_show, None].float()
    bar.close()

    others = [r for r in results if r["family"] != "h-Shap"]
    best_other = max(others, key=lambda r: r["f1_mean"])
    kernel = [r for r in results if r["family"] == "KernelSHAP"]
    ks_best = min(kernel, key=lambda r: (-r["f1_mean"], r["evaluations_per_image"]))
    goal = []
    for r in results:
        if r["family"] != "h-Shap":
            continue
        ratio = ks_best["evaluations_per_image"] / r["evaluations_per_image"]
        goal.append(
            {
                "method": r["name"],
                "f1": r["f1_mean"],
                "best_other": best_other["name"],
                "best_other_f1": best_other["f1_mean"],
                "f1_at_least_every_other": r["f1_mean"] >= best_other["f1_mean"],
                "kernelshap_best": ks_best["name"],
                "kernelshap_best_f1": ks_best["f1_mean"],
                "evaluations_ratio_vs_kernelshap_best": ratio,
                "ten_times_fewer_evaluations": ratio >= 10,
                "met": r["f1_mean"] >= best_other["f1_mean"] and ratio >= 10,
            }
        )
    wall = time.perf_counter() - start_all

    rows = [
        [
            r["name"],
            r["f1_mean"],
            r["f1_sem"],
            r["oracle_f1_mean"],
            r["evaluations_per_image"],
            r["seconds_per_image"],
            r["seconds_per_image_in_fwd_bwd_64"],
        ]
        for r in results
    ]
    print_table(rows, ["method", "f1", "+-sem", "oracle f1", "evals/img", "s/img", "s/img in fwd+bwd(64)"])
    for g in goal:
        print(
            f"{g['method']}: f1 {g['f1']:.4f} vs best other {g['best_other']} {g['best_other_f1']:.4f} "
            f"({'>=' if g['f1_at_least_every_other'] else '<'}); "
            f"{g['evaluations_ratio_vs_kernelshap_best']:.1f}x fewer "
            f"evaluations than {g['kernelshap_best']} (KernelSHAP's best f1) -> goal {'met' if g['met'] else 'NOT met'}"
        )
    out = Path(a.out)
    settings = {
        "images": n,
        "generated": generated,
        "crosses": a.crosses,
        "budgets": budgets,
        "smoothgrad_samples": smooth_samples,
        "grid": a.grid,
        "batch_size": a.batch_size,
        "seed": a.seed,
        "threads": a.threads,
        "quick": a.quick,
        "eps": EPS,
        "score": "softmax probability of class 1 for every perturbation method",
        "background": "crosses-cnn card data_mean (mean of 1000 training images)",
    }
    write_json(
        out / "results.json",
        {
            "settings": settings,
            "environment": environment(),
            "model": {"name": "crosses-cnn", "metrics": model.card.metrics},  # type: ignore[union-attr]
            "unit": {"forward_64_s": fwd64, "forward_backward_64_s": fwdbwd64},
            "wall_seconds": wall,
            "results": results,
            "goal": goal,
        },
    )
    fig = _figure(
        results,
        out / "runtime_vs_f1.png",
        f"crosses-cnn: {n} true-positive images with {'/'.join(map(str, a.crosses))} cross(es)",
    )
    ex = _examples(images[:n_show], masks[:n_show], examples, out / "examples.png")
    print(f"wall time {wall:.0f} s; wrote {out / 'results.json'}, {fig} and {ex}")
    return 0
