"""Acceptance measurements for the rate-distortion explanations on the shipped MNIST model.

``provex benchmark rde-acceptance [--quick] [--out DIR]``:

1. RC-RDE at k = 100 (its defaults: ADF distortion, monotone FW, 300 iterations) on the 50
   shipped samples, against the top-100 mask of the sensitivity map (absolute gradient) and
   a random 100-pixel mask. All masks are scored with the same Monte Carlo estimator (512
   fixed draws, fixed seed). Goal: the RC-RDE mask has the lower distortion for >= 90% of
   the images; the median ratios are reported.
2. ADF against Monte Carlo with 1e5 draws at random masks (uniform [0, 1] masks and random
   binary masks keeping 100 pixels), for the paper's diagonal ADF (``distortion="adf"``) and
   the low-rank ADF (``distortion="adf-lowrank"``). Goal: within 5%.

Writes ``results.json`` and ``rde_acceptance.png`` into ``--out``; ``--only adf`` (or
``baselines``) reruns one part and keeps the other part of an existing ``results.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from provex import models
from provex.benchmarks.common import (
    add_progress_argument,
    add_quick_argument,
    environment,
    print_table,
    write_json,
)
from provex.data.samples import samples
from provex.rde import ADFDistortion, Components, GaussianNoise, MonteCarloDistortion
from provex.registry import explain
from provex.viz.heatmap import draw_heatmap, save_figure

__all__ = ["main", "top_k_mask"]


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(N, n) binary masks keeping the ``k`` largest scores of each row."""
    idx = scores.topk(k, dim=1).indices
    return torch.zeros_like(scores).scatter_(1, idx, 1.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="provex benchmark rde-acceptance", description=__doc__)
    add_quick_argument(p, "4 images for RC-RDE against the baselines, 1 image for the ADF check")
    add_progress_argument(p)
    p.add_argument("--out", default="results/rde-acceptance")
    p.add_argument("--rate", type=int, default=100)
    p.add_argument("--draws", type=int, default=512, help="Monte Carlo draws for scoring the masks")
    p.add_argument("--adf-draws", type=int, default=100_000, help="Monte Carlo draws for the ADF check")
    p.add_argument("--adf-images", type=int, default=6, help="images for the ADF check (2 masks each)")
    p.add_argument("--only", choices=("all", "baselines", "adf"), default="all", help="run one part only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    n_images = 50
    if a.quick:
        n_images, a.adf_images = 4, 1
    for name in ("rate", "draws", "adf_draws", "adf_images", "threads"):
        if getattr(a, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive")
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    model = models.load("mnist-cnn", device=dev)
    x, _ = samples("mnist")
    x = x[:n_images].to(dev)
    out = Path(a.out)
    results: dict[str, Any] = {}
    if a.only != "all" and (out / "results.json").exists():
        results = json.loads((out / "results.json").read_text())
    results.update({"settings": vars(a), "environment": environment(), "images": n_images})
    noise = GaussianNoise.from_model(model)
    comps = Components(tuple(x.shape[1:]))
    img = torch.arange(n_images, device=dev)
    if a.only in ("all", "baselines"):
        _baselines(a, model, x, noise, comps, img, results, out)
    if a.only in ("all", "adf"):
        _adf_vs_mc(a, model, x, noise, comps, img, results)
    write_json(out / "results.json", results)
    rows = []
    if "rc_rde_vs_baselines" in results:
        r = results["rc_rde_vs_baselines"]
        rows += [
            ["RC-RDE below sensitivity top-k", f"{100 * r['fraction_below_sensitivity']:.0f}%", ">= 90%"],
            ["RC-RDE below random k", f"{100 * r['fraction_below_random']:.0f}%", ">= 90%"],
            ["median D(RC-RDE) / D(sensitivity)", f"{r['median_ratio_to_sensitivity']:.3f}", ""],
            ["median D(RC-RDE) / D(random)", f"{r['median_ratio_to_random']:.3f}", ""],
        ]
    if "adf_vs_mc" in results:
        r = results["adf_vs_mc"]
        for kind in ("adf", "adf_lowrank"):
            if f"{kind}_max_abs_relative_difference" in r:
                rows.append(
                    [
                        f"{kind} vs MC max |rel. diff|",
                        f"{100 * r[f'{kind}_max_abs_relative_difference']:.2f}%",
                        "<= 5%",
                    ]
                )
    print_table(rows, ["measure", "value", "goal"])
    print(f"wrote {out / 'results.json'}")
    return 0


def _baselines(
    a: argparse.Namespace,
    model: torch.nn.Module,
    x: torch.Tensor,
    noise: GaussianNoise,
    comps: Components,
    img: torch.Tensor,
    results: dict[str, Any],
    out: Path,
) -> None:
    """Part 1: RC-RDE vs sensitivity top-k vs random k-pixel masks, one fixed MC scorer."""
    n_images, n, dev = x.shape[0], x[0].numel(), x.device
    rc = explain(model, x, "rc-rde", rate=a.rate, progress=a.progress)
    target = rc.target
    sens = explain(model, x, "sensitivity", target=target, absolute=True)
    gen = torch.Generator().manual_seed(a.seed)
    masks = {
        "rc_rde": rc.relevance.flatten(1),
        "rc_rde_top_k": top_k_mask(rc.relevance.flatten(1), a.rate),
        "sensitivity_top_k": top_k_mask(sens.relevance.flatten(1), a.rate),
        "random_k": top_k_mask(torch.rand(n_images, n, generator=gen).to(dev), a.rate),
    }
    scorer = MonteCarloDistortion(model, x, target, noise, comps, a.draws, 1024, seed=a.seed, fixed=True)
    with torch.no_grad():
        dist = {k: scorer(m, img, False)[0].cpu() for k, m in masks.items()}
    ratio_sens = dist["rc_rde"] / dist["sensitivity_top_k"]
    ratio_rand = dist["rc_rde"] / dist["random_k"]
    results["rc_rde_vs_baselines"] = {
        "rate": a.rate,
        "draws": a.draws,
        "distortion": {k: v.tolist() for k, v in dist.items()},
        "fraction_below_sensitivity": float((ratio_sens < 1).float().mean()),
        "fraction_below_random": float((ratio_rand < 1).float().mean()),
        "median_ratio_to_sensitivity": float(ratio_sens.median()),
        "median_ratio_to_random": float(ratio_rand.median()),
        "fraction_binarised_below_sensitivity": float(
            (dist["rc_rde_top_k"] < dist["sensitivity_top_k"]).float().mean()
        ),
        "median_ratio_binarised_to_sensitivity": float((dist["rc_rde_top_k"] / dist["sensitivity_top_k"]).median()),
        "rc_rde_seconds": rc.info["seconds"],
    }

    _figure(x.cpu(), masks, dist, ratio_sens, ratio_rand, out / "rde_acceptance.png")


def _adf_vs_mc(
    a: argparse.Namespace,
    model: torch.nn.Module,
    x: torch.Tensor,
    noise: GaussianNoise,
    comps: Components,
    img: torch.Tensor,
    results: dict[str, Any],
) -> None:
    """Part 2: diagonal and low-rank ADF against Monte Carlo (``--adf-draws``) at random masks."""
    n_images, n = x.shape[0], x[0].numel()
    with torch.no_grad():
        target = model(x).argmax(1)
    rows_adf = []
    chosen = torch.linspace(0, n_images - 1, a.adf_images).round().long().tolist()
    estimators = {
        "adf": ADFDistortion(model, x, target, noise, comps),
        "adf_lowrank": ADFDistortion(model, x, target, noise, comps, batch_size=2 * n, mode="lowrank"),
    }
    mc = MonteCarloDistortion(model, x, target, noise, comps, a.adf_draws, 2000, seed=a.seed + 1)
    gen = torch.Generator().manual_seed(a.seed + 2)
    for i in chosen:
        for kind in ("uniform", f"binary-{a.rate}"):
            s = (
                torch.rand(1, n, generator=gen)
                if kind == "uniform"
                else top_k_mask(torch.rand(1, n, generator=gen), a.rate)
            )
            s = s.to(x.device)
            row: dict[str, Any] = {"image": i, "mask": kind}
            with torch.no_grad():
                row["mc"] = float(mc(s, img[i : i + 1], False)[0])
                for name, est in estimators.items():
                    row[name] = float(est(s, img[i : i + 1], False)[0])
                    row[f"{name}_relative_difference"] = row[name] / row["mc"] - 1
            rows_adf.append(row)
            print(
                f"image {i:2d} {kind:11s} MC({a.adf_draws}) {row['mc']:9.4f}  "
                + "  ".join(f"{k} {row[k]:9.4f} ({100 * row[f'{k}_relative_difference']:+.2f}%)" for k in estimators),
                flush=True,
            )
    summary: dict[str, Any] = {"draws": a.adf_draws, "masks": rows_adf}
    for name in estimators:
        rel = [abs(r[f"{name}_relative_difference"]) for r in rows_adf]
        summary[f"{name}_max_abs_relative_difference"] = max(rel)
        summary[f"{name}_fraction_within_5pct"] = float(np.mean([r <= 0.05 for r in rel]))
    results["adf_vs_mc"] = summary


def _figure(
    x: torch.Tensor,
    masks: dict[str, torch.Tensor],
    dist: dict[str, torch.Tensor],
    ratio_sens: torch.Tensor,
    ratio_rand: torch.Tensor,
    path: Path,
) -> None:
    show = [0, 1, 2]
    fig = plt.figure(figsize=(13, 7))
    grid = fig.add_gridspec(len(show), 6)
    for row, i in enumerate(show):
        ax = fig.add_subplot(grid[row, 0])
        ax.imshow(x[i, 0], cmap="gray")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"image {i}", fontsize=8)
        for col, key in enumerate(["rc_rde", "sensitivity_top_k", "random_k"], start=1):
            ax = fig.add_subplot(grid[row, col])
            draw_heatmap(ax, masks[key][i].view(1, 28, 28).cpu(), None, "RdBu_r", colorbar=False)
            ax.set_title(f"{key}: D={float(dist[key][i]):.2f}", fontsize=8)
    ax = fig.add_subplot(grid[:, 4:])
    ax.scatter(dist["sensitivity_top_k"], dist["rc_rde"], s=14, label="vs sensitivity top-k")
    ax.scatter(dist["random_k"], dist["rc_rde"], s=14, marker="x", label="vs random k")
    lo = min(float(v.min()) for v in dist.values()) / 1.5
    lim = [max(lo, 1e-4), max(float(dist["random_k"].max()), float(dist["sensitivity_top_k"].max())) * 1.5]
    ax.plot(lim, lim, "k:", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("baseline mask distortion (MC, fixed draws)")
    ax.set_ylabel("RC-RDE mask distortion")
    ax.set_title(
        f"RC-RDE lower for {100 * float((ratio_sens < 1).float().mean()):.0f}% (sensitivity), "
        f"{100 * float((ratio_rand < 1).float().mean()):.0f}% (random)",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
