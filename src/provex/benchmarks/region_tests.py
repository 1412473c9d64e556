"""Region tests (issue 16): validity on blind models, FDR with known truth, power, MNIST faithfulness.

``provex benchmark region-tests [--blocks validity,calibration,fdr,power,mnist] [--images 200]
[--fdr-images 100] [--mnist-images 50] [--quick] [--out DIR]`` runs :func:`provex.stats.test_regions` (SHAP-XRT
and betting) in four blocks and writes ``results.json`` (merged block by block, so one block
can be rerun), ``table.md`` and figures into ``--out``:

* ``validity``: the shipped MNIST CNN and the crosses CNN made blind to a fixed region R (a
  wrapper overwrites R with the reference background before the first layer; no retraining).
  Rejection rate of R over ``--images`` images, both tests, contexts "rest" (C = everything
  else: a blind model gives p = 1 exactly) and "empty" (C = {}: a random statistic, p uniform),
  beside the same region on the original model. ``validity.png``.
* ``calibration``: the MNIST blind model's XRT p-values for R in context "empty" over
  ``--calibration-images`` images (default 1000): rejection rate, Kolmogorov-Smirnov test of
  uniformity, histogram and QQ plot. ``calibration.png``.
* ``fdr``: MNIST CNN blind to 4 of 8 tested 7 x 7 blocks (known truth: the blinded blocks are
  null) on ``--fdr-images`` images, FDR = mean over images of false / max(rejections, 1), under
  BH / e-BH per image, over the dataset, and uncorrected; power on the other blocks. XRT
  p-values are computed once per context (K for per-image BH over 8 regions: 159) and each
  control applied to them; betting runs once per control (the stopping level depends on it).
  ``fdr.png``.
* ``power``: crosses images with one cross; regions = the 10 x 10 slot holding the cross and 3
  other slots (distractor shapes where there are some), BH / e-BH per image; rejection rate of
  the cross slot and of the others, model calls per region for XRT and betting. ``power.png``,
  ``examples-crosses-*.png``.
* ``mnist``: RC-RDE, h-Shap, SmoothGrad and LRP maps of the shipped MNIST CNN on
  ``--mnist-images`` test images: the fraction of each map's top-4 blocks (7 x 7) that are
  significant (BH / e-BH per image), of its 4 top native regions (RC-RDE's connected
  components, h-Shap's positive cells), of 4 random blocks (a floor), and the
  relevance-ordering AUC beside it (``step=10, n_samples=8``, Gaussian noise from the model card,
  lower is better). ``mnist.png``, ``examples-mnist-*.png``.

Timings are ratios against one forward pass of a batch of 256 of the same model measured in the
same run. ``--quick``: the same code with 10 images per block (4 for ``mnist``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from provex import models
from provex.benchmarks.common import add_quick_argument, environment, print_table, time_call, write_json
from provex.data.crosses import crosses
from provex.data.mnist import load_mnist
from provex.evaluate import gaussian_noise, relevance_ordering
from provex.io import atomic_write
from provex.reference import Reference
from provex.registry import explain
from provex.stats.region_tests import _control, test_regions
from provex.stats.regions import block_regions

__all__ = ["BLOCKS", "BlindModel", "main"]

BLOCKS = ("validity", "calibration", "fdr", "power", "mnist")
ALPHA = 0.05
TESTS = ("xrt", "betting")
MAP_METHODS = ("rc-rde", "h-shap", "smoothgrad", "lrp-alpha-beta")


class BlindModel(nn.Module):
    """``model`` that never sees the pixels of ``mask``: they are overwritten with ``fill`` first."""

    def __init__(self, model: nn.Module, mask: torch.Tensor, fill: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mask", mask.bool())
        self.register_buffer("fill", fill.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.where(self.mask, self.fill.to(x.dtype), x))


def _slack(n: int) -> float:
    """Three binomial standard errors at rate alpha over n tests."""
    return 3 * math.sqrt(ALPHA * (1 - ALPHA) / max(n, 1))


def _binom_p(k: int, n: int) -> float:
    """P(Binomial(n, alpha) >= k): how surprising k rejections are at level alpha."""
    from scipy.stats import binom

    return float(binom.sf(k - 1, n, ALPHA))


def _pass_seconds(model: nn.Module, x: torch.Tensor) -> float:
    xb = x[:1].expand(256, *x.shape[1:]).contiguous()

    def fwd() -> None:
        with torch.no_grad():
            model(xb)

    return time_call(fwd, repeats=3)


def _mnist(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_mnist("test")
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


def _cross_images(model: nn.Module, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` crosses images with one cross that the model calls positive, and their cross masks."""
    d = crosses(int(n * 1.2) + 10, seed=seed, positive_fraction=1.0, n_crosses=1)
    with torch.no_grad():
        pred = torch.cat([model(d.images[i : i + 256]).argmax(1) for i in range(0, d.images.shape[0], 256)])
    keep = (pred == 1).nonzero().squeeze(1)[:n]
    return d.images[keep], d.masks[keep, 0]


def _run(model: nn.Module, x: torch.Tensor, explanation: Any = None, **kw: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    res = test_regions(model, x, explanation, **kw)
    return res, time.perf_counter() - start


# ----- blocks -----


def block_validity(n: int, seed: int, batch_size: int) -> dict[str, Any]:
    out: dict[str, Any] = {"images": n, "alpha": ALPHA, "slack": _slack(n), "rows": []}
    mnist = models.load("mnist-cnn")
    xm, _ = _mnist(n, seed)
    region_m = torch.zeros(28, 28, dtype=torch.bool)
    region_m[7:21, 7:21] = True
    cross_model = models.load("crosses-cnn")
    xc, _ = _cross_images(cross_model, n, seed + 1)
    region_c = torch.zeros(100, 120, dtype=torch.bool)
    region_c[:50, :60] = True
    settings = [("mnist-cnn", mnist, xm, region_m), ("crosses-cnn", cross_model, xc, region_c)]
    for name, model, x, region in settings:
        ref = Reference.from_model(model)
        blind = BlindModel(model, region, ref.background).eval()  # type: ignore[union-attr]
        unit = _pass_seconds(model, x)
        for which, m in (("blind", blind), ("original", model)):
            for context in ("rest", "empty"):
                for test in TESTS:
                    res, sec = _run(
                        m, x, reference=ref, regions=region[None], test=test, context=context, fdr=False,
                        seed=list(range(seed, seed + n)), batch_size=batch_size,
                    )  # fmt: skip
                    k = int(res.rejected[:, 0].sum())
                    row = {
                        "model": name,
                        "which": which,
                        "context": context,
                        "test": test,
                        "rejected": k,
                        "rate": k / n,
                        "binomial_p": _binom_p(k, n),
                        "calls_per_region": float(res.model_calls[:, 0].double().mean()),
                        "seconds": sec,
                        "seconds_in_passes_of_256": sec / unit,
                    }
                    if test == "xrt":
                        row["mean_p"] = float(res.p_values[:, 0].mean())
                        row["p_equal_1"] = float((res.p_values[:, 0] == 1).double().mean())
                    else:
                        row["mean_e"] = float(res.e_values[:, 0].mean())
                        row["mean_stopping_time"] = float(res.stopping_time[:, 0].double().mean())
                    out["rows"].append(row)
                    print(f"validity {name} {which} {context} {test}: rate {k / n:.3f} ({sec:.0f} s)", flush=True)
    blind_rows = [r for r in out["rows"] if r["which"] == "blind"]
    out["max_blind_rate"] = max(r["rate"] for r in blind_rows)
    out["met"] = all(r["rate"] <= ALPHA + out["slack"] for r in blind_rows)
    return out


def block_calibration(n: int, seed: int, batch_size: int) -> dict[str, Any]:
    """XRT p-values of a blind region with a random statistic (context "empty") over many images: uniform?"""
    from scipy.stats import kstest

    model = models.load("mnist-cnn")
    ref = Reference.from_model(model)
    x, _ = _mnist(n, seed + 5)
    region = torch.zeros(28, 28, dtype=torch.bool)
    region[7:21, 7:21] = True
    blind = BlindModel(model, region, ref.background).eval()  # type: ignore[union-attr]
    res, sec = _run(
        blind, x, reference=ref, regions=region[None], test="xrt", context="empty", fdr=False,
        seed=list(range(seed + 10_000, seed + 10_000 + n)), batch_size=batch_size,
    )  # fmt: skip
    p = res.p_values[:, 0]
    k = int(res.settings["K"][0])
    # p is discrete uniform on {1, ..., K + 1} / (K + 1) under H0: jitter it to a continuous uniform for KS
    jitter = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) / (k + 1)
    rejected = int((p <= ALPHA).sum())
    print(f"calibration: rate {rejected / n:.4f} over {n} images ({sec:.0f} s)", flush=True)
    return {
        "images": n,
        "K": k,
        "rejected": rejected,
        "rate": rejected / n,
        "slack": _slack(n),
        "binomial_p": _binom_p(rejected, n),
        "ks_pvalue": float(kstest((p - jitter).numpy(), "uniform").pvalue),
        "p_values": p.tolist(),
        "seconds": sec,
        "met": rejected / n <= ALPHA + _slack(n),
    }


def block_fdr(n: int, seed: int, batch_size: int) -> dict[str, Any]:
    model = models.load("mnist-cnn")
    ref = Reference.from_model(model)
    x, _ = _mnist(n, seed + 2)
    blocks = block_regions(28, 28, 7)  # 4 x 4 blocks of 7 px, row-major
    tested = [5, 6, 9, 10, 1, 4, 11, 14]  # the 4 central blocks and 4 around them
    null = [6, 9, 1, 14]  # blinded: known nulls
    blind_mask = blocks[null].any(0)
    blind = BlindModel(model, blind_mask, ref.background).eval()  # type: ignore[union-attr]
    masks = blocks[tested]
    is_null = torch.tensor([b in null for b in tested])
    out: dict[str, Any] = {"images": n, "tested_blocks": tested, "null_blocks": null, "rows": []}
    for context in ("rest", "empty"):
        for test in TESTS:
            xrt_run = None
            for scope in ("image", "dataset", "none"):
                if test == "xrt" and xrt_run is not None:
                    # the p-values do not depend on the control: apply it to the same ones (K of the image scope)
                    res, sec = xrt_run
                    rej = _control(res.p_values, res.valid, "p", ALPHA, scope, "bh")[0]
                else:
                    res, sec = _run(
                        blind, x, reference=ref, regions=masks, test=test, context=context, fdr=scope,
                        seed=list(range(seed, seed + n)), batch_size=batch_size,
                    )  # fmt: skip
                    rej = res.rejected
                    if test == "xrt":
                        xrt_run = (res, sec)
                false = (rej & is_null).sum(1).double()
                total = rej.sum(1).double()
                if scope == "dataset":
                    fdr = float(false.sum() / total.sum().clamp_min(1))
                else:
                    fdr = float((false / total.clamp_min(1)).mean())
                row = {
                    "context": context,
                    "test": test,
                    "control": scope,
                    "fdr": fdr,
                    "fwer": float((false > 0).double().mean()),
                    "power": float(rej[:, ~is_null].double().mean()),
                    "null_rejection_rate": float(rej[:, is_null].double().mean()),
                    "calls_per_region": float(res.model_calls.double().mean()),
                    "seconds": sec,
                }
                out["rows"].append(row)
                print(f"fdr {context} {test} {scope}: FDR {fdr:.4f} power {row['power']:.3f} ({sec:.0f} s)", flush=True)
    controlled = [r for r in out["rows"] if r["control"] != "none"]
    out["max_fdr"] = max(r["fdr"] for r in controlled)
    out["met"] = out["max_fdr"] <= ALPHA
    return out


def _slots(mask: torch.Tensor, image: torch.Tensor, gen: torch.Generator, others: int = 3) -> torch.Tensor:
    """The 10 x 10 slot holding the cross, then ``others`` other slots (with shapes first)."""
    rr, cc = mask.nonzero(as_tuple=True)
    r0, c0 = int(rr.min()) // 10, int(cc.min()) // 10
    occupied, empty = [], []
    for r in range(10):
        for c in range(12):
            if (r, c) == (r0, c0):
                continue
            ink = bool((image[:, r * 10 : r * 10 + 10, c * 10 : c * 10 + 10] < 0.99).any())
            (occupied if ink else empty).append((r, c))
    pick = [occupied[j] for j in torch.randperm(len(occupied), generator=gen).tolist()]
    pick += [empty[j] for j in torch.randperm(len(empty), generator=gen).tolist()]
    out = torch.zeros(1 + others, 100, 120, dtype=torch.bool)
    for j, (r, c) in enumerate([(r0, c0), *pick[:others]]):
        out[j, r * 10 : r * 10 + 10, c * 10 : c * 10 + 10] = True
    return out


def block_power(n: int, seed: int, batch_size: int, out_dir: Path) -> dict[str, Any]:
    model = models.load("crosses-cnn")
    ref = Reference.from_model(model)
    x, cmask = _cross_images(model, n, seed + 3)
    gen = torch.Generator().manual_seed(seed)
    masks = torch.stack([_slots(cmask[i], x[i], gen) for i in range(x.shape[0])])
    unit = _pass_seconds(model, x)
    out: dict[str, Any] = {"images": int(x.shape[0]), "rows": [], "calls": {}}
    for test in TESTS:
        res, sec = _run(
            model, x, reference=ref, regions=masks, test=test, target=1, fdr=True,
            seed=list(range(seed, seed + x.shape[0])), batch_size=batch_size,
        )  # fmt: skip
        calls = res.model_calls.double()
        row = {
            "test": test,
            "cross_rejection_rate": float(res.rejected[:, 0].double().mean()),
            "other_rejection_rate": float(res.rejected[:, 1:].double().mean()),
            "calls_cross_mean": float(calls[:, 0].mean()),
            "calls_cross_median": float(calls[:, 0].median()),
            "calls_other_mean": float(calls[:, 1:].mean()),
            "total_model_calls": res.total_model_calls,
            "seconds": sec,
            "seconds_in_passes_of_256": sec / unit,
            "control": res.control,
        }
        out["rows"].append(row)
        out["calls"][test] = {"cross": calls[:, 0].tolist(), "other": calls[:, 1:].flatten().tolist()}
        print(f"power {test}: cross {row['cross_rejection_rate']:.3f}, calls {row['calls_cross_mean']:.1f}", flush=True)
        res.plot(out_dir / f"examples-crosses-{test}.png", max_images=10)
    out["met"] = min(r["cross_rejection_rate"] for r in out["rows"]) >= 0.9
    return out


def block_mnist(n: int, seed: int, batch_size: int, out_dir: Path, ordering_noise: int = 8) -> dict[str, Any]:
    model = models.load("mnist-cnn")
    ref = Reference.from_model(model)
    x, _ = _mnist(n, seed + 4)
    seeds = list(range(seed, seed + n))
    card = model.card  # type: ignore[attr-defined]
    noise = gaussian_noise(card.data_mean, card.data_var)
    out: dict[str, Any] = {"images": n, "methods": {}}
    gen = torch.Generator().manual_seed(seed)
    blocks = block_regions(28, 28, 7)
    random_masks = torch.stack([blocks[torch.randperm(16, generator=gen)[:4]] for _ in range(n)])
    entries: list[tuple[str, Any, str]] = [("random blocks", None, "masks")]
    for method in MAP_METHODS:
        start = time.perf_counter()
        opts: dict[str, Any] = {"progress": False} if method == "rc-rde" else {}
        exp = explain(model, x, method, **opts)
        map_seconds = time.perf_counter() - start
        out["methods"][method] = {"map_seconds_per_image": map_seconds / n}
        entries.append((method, exp, "top-k"))
        if method in ("rc-rde", "h-shap"):
            entries.append((method, exp, "native"))
        curve = relevance_ordering(model, x, exp, step=10, n_samples=ordering_noise, noise=noise, seed=seed)
        out["methods"][method]["ordering_auc"] = curve.auc_distortion
        out["methods"][method]["ordering_auc_se"] = curve.auc_distortion_se
        print(f"mnist {method}: map {map_seconds / n:.2f} s/img, ordering AUC {curve.auc_distortion:.4f}", flush=True)
    for name, exp, kind in entries:
        for test in TESTS:
            kw: dict[str, Any] = {"reference": ref, "test": test, "fdr": True, "seed": seeds, "batch_size": batch_size}
            if kind == "masks":
                res, sec = _run(model, x, regions=random_masks, **kw)
            elif kind == "top-k":
                res, sec = _run(model, x, exp, regions="top-k", k=4, grid=7, **kw)
            else:
                res, sec = _run(model, x, exp, regions="auto", max_regions=4, **kw)
            valid = res.valid
            entry = out["methods"].setdefault(name, {}).setdefault(kind, {})
            entry[test] = {
                "fraction_significant": float(res.rejected[valid].double().mean()) if bool(valid.any()) else math.nan,
                "regions_per_image": float(valid.sum(1).double().mean()),
                "region_area": float(res.masks[valid].flatten(1).sum(1).double().mean()) if bool(valid.any()) else 0,
                "images_with_a_significant_region": float((res.n_rejected > 0).double().mean()),
                "calls_per_region": float(res.model_calls[valid].double().mean()),
                "seconds": sec,
                "region_kind": res.settings["regions"]["kind"],
            }
            print(f"mnist {name} {kind} {test}: {entry[test]['fraction_significant']:.3f} significant", flush=True)
            if test == "xrt" and kind != "masks":
                res.plot(out_dir / f"examples-mnist-{name}-{kind}.png", max_images=10, title=f"{name} ({kind}): xrt")
    return out


# ----- figures and tables -----


def _fig_validity(res: dict[str, Any], path: Path) -> None:
    rows = res["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for ax, model in zip(axes, ("mnist-cnn", "crosses-cnn")):
        sub = [r for r in rows if r["model"] == model]
        labels = [f"{r['test']}\n{r['context']}" for r in sub if r["which"] == "blind"]
        xs = np.arange(len(labels))
        for off, which, colour in ((-0.2, "blind", "tab:blue"), (0.2, "original", "tab:gray")):
            vals = [r["rate"] for r in sub if r["which"] == which]
            bars = ax.bar(xs + off, vals, 0.4, color=colour, label=f"{which} model")
            ax.bar_label(bars, [f"{v:.3f}" for v in vals], fontsize=7)
        ax.axhline(ALPHA, color="k", lw=1, ls="--", label="alpha")
        ax.axhline(ALPHA + res["slack"], color="tab:red", lw=1, ls=":", label="alpha + 3 s.e.")
        ax.set_xticks(xs, labels, fontsize=8)
        ax.set_title(f"{model}: region R, {res['images']} images", fontsize=9)
        ax.set_ylabel("rejection rate of R")
        ax.set_ylim(0, 1.08)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def _fig_calibration(res: dict[str, Any], path: Path) -> None:
    p = np.asarray(res["p_values"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].hist(p, bins=20, range=(0, 1), color="tab:blue")
    axes[0].axhline(len(p) / 20, color="k", ls="--", lw=1, label="uniform")
    axes[0].set_xlabel("p-value")
    axes[0].set_title(f"blind region, context empty, {res['images']} images", fontsize=9)
    axes[0].legend(fontsize=7)
    srt = np.sort(p)
    axes[1].plot(np.arange(1, len(p) + 1) / len(p), srt, lw=1)
    axes[1].plot([0, 1], [0, 1], "k--", lw=1)
    axes[1].set_xlabel("uniform quantile")
    axes[1].set_ylabel("p-value quantile")
    axes[1].set_title(f"rejection rate {res['rate']:.3f}, KS p = {res['ks_pvalue']:.2f}", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _fig_fdr(res: dict[str, Any], path: Path) -> None:
    rows = res["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    labels = [f"{r['test']}\n{r['context']}\n{r['control']}" for r in rows]
    xs = np.arange(len(rows))
    axes[0].bar(
        xs, [r["fdr"] for r in rows], color=["tab:gray" if r["control"] == "none" else "tab:blue" for r in rows]
    )
    axes[0].axhline(ALPHA, color="k", ls="--", lw=1)
    axes[0].set_title(f"FDR over 8 blocks (4 blinded), {res['images']} images", fontsize=9)
    axes[1].bar(xs, [r["power"] for r in rows], color="tab:orange")
    axes[1].set_title("power on the 4 seen blocks", fontsize=9)
    for ax in axes:
        ax.set_xticks(xs, labels, fontsize=6)
    fig.tight_layout()
    _save(fig, path)


def _fig_power(res: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    rows = res["rows"]
    xs = np.arange(len(rows))
    axes[0].bar(xs - 0.2, [r["cross_rejection_rate"] for r in rows], 0.4, label="slot with the cross")
    axes[0].bar(xs + 0.2, [r["other_rejection_rate"] for r in rows], 0.4, label="3 other slots")
    axes[0].axhline(0.9, color="k", ls="--", lw=1, label="goal 0.9")
    axes[0].set_xticks(xs, [r["test"] for r in rows])
    axes[0].set_ylabel("rejection rate")
    axes[0].legend(fontsize=7)
    data, names = [], []
    for test in TESTS:
        for kind in ("cross", "other"):
            data.append(res["calls"][test][kind])
            names.append(f"{test}\n{kind}")
    axes[1].boxplot(data, tick_labels=names)
    axes[1].set_yscale("log")
    axes[1].set_ylabel("model calls per region")
    axes[1].set_title(f"crosses-cnn, {res['images']} images", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _fig_mnist(res: dict[str, Any], path: Path) -> None:
    names = [m for m in ("random blocks", *MAP_METHODS) if m in res["methods"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    xs = np.arange(len(names))
    for off, test in ((-0.2, "xrt"), (0.2, "betting")):
        vals = [res["methods"][m]["top-k"][test]["fraction_significant"] if "top-k" in res["methods"][m] else
                res["methods"][m]["masks"][test]["fraction_significant"] for m in names]  # fmt: skip
        axes[0].bar(xs + off, vals, 0.4, label=test)
    axes[0].set_xticks(xs, names, fontsize=8)
    axes[0].set_ylabel("fraction of top-4 blocks significant")
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    axes[0].set_title(f"mnist-cnn, {res['images']} images, BH / e-BH per image", fontsize=9)
    auc = [res["methods"][m].get("ordering_auc", math.nan) for m in names]
    frac = [
        res["methods"][m].get("top-k", res["methods"][m].get("masks"))["xrt"]["fraction_significant"] for m in names
    ]
    axes[1].scatter(auc, frac)
    for a, f, m in zip(auc, frac, names):
        axes[1].annotate(m, (a, f), fontsize=8)
    axes[1].set_xlabel("relevance-ordering AUC (lower = better)")
    axes[1].set_ylabel("fraction significant (xrt)")
    fig.tight_layout()
    _save(fig, path)


FIGURES = {
    "validity": _fig_validity,
    "calibration": _fig_calibration,
    "fdr": _fig_fdr,
    "power": _fig_power,
    "mnist": _fig_mnist,
}


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _tables(results: dict[str, Any]) -> str:
    parts = ["# Region tests (issue 16)", ""]
    if "validity" in results:
        v = results["validity"]
        parts += [
            f"## Validity: rejection rate of a region the model is blind to ({v['images']} images, alpha = {ALPHA}, "
            f"slack 3 s.e. = {v['slack']:.3f})",
            "",
            "| model | which | context | test | rate | binomial p | calls / region |",
            "|---|---|---|---|---|---|---|",
        ]
        parts += [
            f"| {r['model']} | {r['which']} | {r['context']} | {r['test']} | {r['rate']:.3f} | "
            f"{r['binomial_p']:.3g} | {r['calls_per_region']:.1f} |"
            for r in v["rows"]
        ]
        parts += ["", f"Met (every blind rate <= alpha + slack): {v['met']}", ""]
    if "calibration" in results:
        c = results["calibration"]
        parts += [
            f"## Calibration: XRT p-values of a blind region, context empty ({c['images']} MNIST images, K = {c['K']})",
            "",
            f"Rejection rate at alpha = {ALPHA}: {c['rate']:.4f} ({c['rejected']} of {c['images']}; binomial p "
            f"{c['binomial_p']:.3g}); Kolmogorov-Smirnov p (jittered p-values) {c['ks_pvalue']:.3f}. Met: {c['met']}",
            "",
        ]
    if "fdr" in results:
        f = results["fdr"]
        parts += [
            f"## FDR with known truth (MNIST CNN blind to 4 of 8 tested blocks, {f['images']} images)",
            "",
            "| context | test | control | FDR | FWER | power | null rejection rate | calls / region |",
            "|---|---|---|---|---|---|---|---|",
        ]
        parts += [
            f"| {r['context']} | {r['test']} | {r['control']} | {r['fdr']:.4f} | {r['fwer']:.3f} | {r['power']:.3f} | "
            f"{r['null_rejection_rate']:.4f} | {r['calls_per_region']:.1f} |"
            for r in f["rows"]
        ]
        parts += ["", f"Met (FDR <= alpha under control): {f['met']}", ""]
    if "power" in results:
        p = results["power"]
        parts += [
            f"## Power on crosses ({p['images']} images, one cross; 4 slots per image, BH / e-BH per image)",
            "",
            "| test | cross slot rejected | other slots rejected | calls (cross, mean / median) "
            "| calls (other, mean) |",
            "|---|---|---|---|---|",
        ]
        parts += [
            f"| {r['test']} | {r['cross_rejection_rate']:.3f} | {r['other_rejection_rate']:.3f} | "
            f"{r['calls_cross_mean']:.1f} / {r['calls_cross_median']:.0f} | {r['calls_other_mean']:.1f} |"
            for r in p["rows"]
        ]
        parts += ["", f"Met (cross slot rejected in >= 90% of images): {p['met']}", ""]
    if "mnist" in results:
        m = results["mnist"]
        parts += [
            f"## MNIST faithfulness with error control ({m['images']} test images, BH / e-BH per image)",
            "",
            "| map | regions | per image | area (px) | significant (xrt) | significant (betting) | "
            "calls / region xrt / betting | ordering AUC |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, entry in m["methods"].items():
            for kind in ("masks", "top-k", "native"):
                if kind not in entry:
                    continue
                e = entry[kind]
                auc = entry.get("ordering_auc")
                auc_text = f"{auc:.4f} ± {entry['ordering_auc_se']:.4f}" if auc is not None else "-"
                parts.append(
                    f"| {name} | {e['xrt']['region_kind'] if kind != 'masks' else '4 random blocks'} | "
                    f"{e['xrt']['regions_per_image']:.2f} | {e['xrt']['region_area']:.1f} | "
                    f"{e['xrt']['fraction_significant']:.3f} | {e['betting']['fraction_significant']:.3f} | "
                    f"{e['xrt']['calls_per_region']:.0f} / {e['betting']['calls_per_region']:.0f} | {auc_text} |"
                )
        parts.append("")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="provex benchmark region-tests", description=__doc__)
    p.add_argument("--blocks", default=",".join(BLOCKS), help=f"comma-separated subset of {','.join(BLOCKS)}")
    p.add_argument("--images", type=int, default=None, help="images per block (default 200; --quick 10)")
    p.add_argument(
        "--calibration-images", type=int, default=None, help="images for the calibration block (default 1000; quick 20)"
    )
    p.add_argument("--fdr-images", type=int, default=None, help="images for the fdr block (default 100; quick 10)")
    p.add_argument("--mnist-images", type=int, default=None, help="images for the mnist block (default 50; quick 4)")
    add_quick_argument(p, "10 images per block (4 for mnist; about 10 minutes on 2 cores)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="results/region-tests")
    p.add_argument("--replot", action="store_true", help="only redraw the figures and table from --out/results.json")
    a = p.parse_args(argv)
    blocks = [b.strip() for b in a.blocks.split(",") if b.strip()]
    bad = [b for b in blocks if b not in BLOCKS]
    if bad:
        raise ValueError(f"--blocks: unknown block(s) {bad}; choose from {', '.join(BLOCKS)}")
    n = a.images if a.images is not None else (10 if a.quick else 200)
    n_mnist = a.mnist_images if a.mnist_images is not None else (4 if a.quick else 50)
    n_fdr = a.fdr_images if a.fdr_images is not None else (10 if a.quick else 100)
    n_cal = a.calibration_images if a.calibration_images is not None else (20 if a.quick else 1000)
    if min(n, n_mnist, n_fdr, n_cal, a.threads, a.batch_size) < 1:
        raise ValueError("--images, --*-images, --threads and --batch-size must be positive")
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    if a.replot:
        blocks = []
        for block, fig in FIGURES.items():
            if block in results:
                fig(results[block], out / f"{block}.png")
    for block in blocks:
        start = time.perf_counter()
        if block == "validity":
            results[block] = block_validity(n, a.seed, a.batch_size)
            _fig_validity(results[block], out / "validity.png")
        elif block == "calibration":
            results[block] = block_calibration(n_cal, a.seed, a.batch_size)
            _fig_calibration(results[block], out / "calibration.png")
        elif block == "fdr":
            results[block] = block_fdr(n_fdr, a.seed, a.batch_size)
            _fig_fdr(results[block], out / "fdr.png")
        elif block == "power":
            results[block] = block_power(n, a.seed, a.batch_size, out)
            _fig_power(results[block], out / "power.png")
        else:
            results[block] = block_mnist(n_mnist, a.seed, a.batch_size, out)
            _fig_mnist(results[block], out / "mnist.png")
        results[block]["wall_seconds"] = time.perf_counter() - start
        results[block]["settings"] = {"quick": a.quick, "seed": a.seed, "batch_size": a.batch_size}
        results["environment"] = environment()
        write_json(path, results)
    text = _tables(results)
    with atomic_write(out / "table.md") as tmp:
        tmp.write_text(text + "\n")
    print(text)
    summary = [[b, results[b].get("met", "-"), round(results[b]["wall_seconds"])] for b in BLOCKS if b in results]
    print_table(summary, ["block", "met", "seconds"])
    return 0
