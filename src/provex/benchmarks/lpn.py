"""Learned proximal networks: the issue-6 acceptance measurements, as JSON and PNG.

``provex benchmark lpn [--images 100] [--out DIR]`` measures

1. the 1-D Laplace toy: max |f - soft-threshold| on [-3, 3] and max |R - |x| - c| for the
   proximal-matching LPN (``lpn-laplace``) and the l2-trained one (``lpn-laplace-l2``);
2. MNIST prior (``lpn-mnist``): R(x) of the first N test images under Gaussian noise
   (std 0 .. 0.3) and blur (std 0 .. 4 px); Spearman correlation of level and R per image;
3. MNIST reconstruction: PnP-ADMM with the LPN against TV on deblurring (Gaussian blur std 1.5 px),
   random inpainting (20, 35, 50 and 70 % of the pixels missing) and compressed sensing (m = 300),
   all with measurement noise std 0.02 (rho and TV lam tuned on the next ``--val-images`` test
   images);
4. PnP-PGD on deblurring at eta = 0.99 / sigma_max(A)^2 (inside the theorem's range): residuals.

Figures: ``laplace.png``, ``prior.png``, ``reconstruct_<task>.png``, ``pgd_residuals.png``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from provex import models
from provex.benchmarks.common import add_quick_argument, environment, print_table, write_json
from provex.viz.heatmap import save_figure

__all__ = ["main", "plot_laplace", "plot_prior_curves", "plot_reconstructions"]


def plot_laplace(curves: dict[str, dict[str, torch.Tensor]], path: str | Path) -> Path:
    """f(x) against soft-thresholding and R(x) against |x| for each Laplace model."""
    from provex.inverse.recipes.laplace import soft_threshold

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    x = next(iter(curves.values()))["x"]
    axes[0].plot(x.numpy(), soft_threshold(x).numpy(), "k--", lw=1.5, label="soft-threshold (MAP)")
    axes[1].plot(x.numpy(), x.abs().numpy(), "k--", lw=1.5, label="|x|")
    for name, c in curves.items():
        axes[0].plot(c["x"].numpy(), c["f"].numpy(), lw=1.2, label=name)
        axes[1].plot(c["x"].numpy(), c["R"].numpy(), lw=1.2, label=f"{name} (constant removed)")
    axes[0].set_title("learned prox f(x)")
    axes[1].set_title("learned prior R(x)")
    for ax in axes:
        ax.set_xlabel("x")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_prior_curves(results: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Per-image R against perturbation level (thin lines) with the mean (thick), one panel per kind."""
    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 3.6), squeeze=False)
    for ax, res in zip(axes[0], results):
        levels, v = res["levels"], res["values"].double().numpy()
        for i in range(v.shape[1]):
            ax.plot(levels, v[:, i], color="tab:blue", alpha=0.12, lw=0.8)
        ax.plot(levels, v.mean(1), color="k", lw=2, marker="o", label="mean")
        ax.set_xlabel(f"{res['kind']} level ({'std' if res['kind'] == 'noise' else 'blur std, px'})")
        ax.set_ylabel("R(x)")
        ax.set_title(f"{res['kind']}: Spearman {float(res['spearman'].mean()):.3f} (mean of {v.shape[1]})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_reconstructions(x: torch.Tensor, res: dict[str, Any], path: str | Path, title: str = "", n: int = 6) -> Path:
    """Rows: truth, A^T y, the solvers' start (if not A^T y), TV, LPN-PnP for the first ``n`` images."""
    n = min(n, x.shape[0])
    from provex.inverse.metrics import psnr

    meas = res["y"]
    shown_meas = meas if meas.shape == x.shape else None
    start = res.get("x_start")
    shown_start = None if start is None or shown_meas is None or torch.equal(start, shown_meas) else start
    rows = [
        ("truth", x),
        ("measured", shown_meas),
        ("start", shown_start),
        ("TV", res["x_tv"]),
        ("LPN " + res["method"], res["x_pnp"]),
    ]
    rows = [(name, t) for name, t in rows if t is not None]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.6 * n, 1.7 * len(rows)), squeeze=False)
    for r, (name, imgs) in enumerate(rows):
        for i in range(n):
            ax = axes[r, i]
            img = imgs[i].detach().clamp(0, 1)
            ax.imshow(img[0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if name != "truth":
                ax.set_title(f"{float(psnr(img[None], x[i : i + 1])):.1f} dB", fontsize=7)
            if i == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def _laplace(out: Path) -> dict[str, Any]:
    from provex.inverse.prior import evaluate_prior
    from provex.inverse.recipes.laplace import laplace_errors

    results, curves = {}, {}
    for name in ("lpn-laplace", "lpn-laplace-l2"):
        model = models.load(name)
        results[name] = laplace_errors(model)
        x = torch.linspace(-3, 3, 301).unsqueeze(1)
        with torch.no_grad():
            f = model(x)
        r = evaluate_prior(model, x, tol=1e-5, max_iter=2000, on_fail="ignore").values
        curves[name] = {"x": x[:, 0], "f": f[:, 0], "R": r - results[name]["prior_constant"]}
    plot_laplace(curves, out / "laplace.png")
    rows = [
        [n, r["prox_max_error"], r["prox_mean_error"], r["prior_max_error"], r["prior_mean_error"]]
        for n, r in results.items()
    ]
    print_table(rows, ["model", "max|f-soft|", "mean|f-soft|", "max|R-|x|-c|", "mean|R-|x|-c|"])
    return results


def _summ(t: torch.Tensor) -> dict[str, float]:
    return {"mean": float(t.mean()), "std": float(t.std()) if t.numel() > 1 else 0.0, "min": float(t.min())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="provex benchmark lpn", description=__doc__)
    p.add_argument("--images", type=int, default=100, help="MNIST test images evaluated (the first N)")
    p.add_argument("--val-images", type=int, default=20, help="next test images, for tuning rho and TV lam")
    p.add_argument("--data", default=None, help="MNIST folder (default: $PROVEX_DATA/mnist)")
    p.add_argument(
        "--parts",
        nargs="+",
        default=["laplace", "prior", "reconstruct", "pgd"],
        choices=["laplace", "prior", "reconstruct", "pgd"],
    )
    p.add_argument("--iters", type=int, default=100, help="PnP-ADMM iterations")
    p.add_argument("--pgd-iters", type=int, default=300)
    p.add_argument("--rho-grid", type=float, nargs="+", default=None, help="PnP-ADMM rho values tried on validation")
    p.add_argument("--prior-tol", type=float, default=1e-4)
    p.add_argument("--missing", type=float, nargs="+", default=[0.2, 0.35, 0.5, 0.7], help="inpainting rates")
    p.add_argument(
        "--tasks",
        nargs="+",
        default=["blur", "inpaint", "cs"],
        choices=["blur", "inpaint", "cs"],
        help="reconstruction tasks",
    )
    p.add_argument("--cs-measurements", type=int, default=300, help="compressed sensing m (0: skip that task)")
    p.add_argument("--levels", type=int, default=None, help="use only the first K perturbation levels (quick runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/lpn")
    add_quick_argument(p, "5 test images and 5 validation images")
    a = p.parse_args(argv)
    if a.quick:
        a.images, a.val_images = 5, 5
    if a.images <= 0 or a.val_images <= 0:
        raise ValueError("--images and --val-images must be positive")
    if a.cs_measurements < 0 or not all(0 < m < 1 for m in a.missing):
        raise ValueError("--cs-measurements must be >= 0 and every --missing rate in (0, 1)")
    out = Path(a.out)
    report: dict[str, Any] = {"settings": vars(a), "environment": environment()}
    start = time.perf_counter()
    if "laplace" in a.parts:
        report["laplace"] = _laplace(out)
    if {"prior", "reconstruct", "pgd"} & set(a.parts):
        from provex.data import load_mnist
        from provex.inverse.experiments import PERTURBATIONS, compare_reconstruction, prior_curves
        from provex.inverse.operators import CompressedSensing, GaussianBlur, RandomInpainting

        lpn = models.load("lpn-mnist")
        xt, _ = load_mnist("test", root=a.data)
        x, x_val = xt[: a.images], xt[a.images : a.images + a.val_images]
        report["lpn_mnist_card"] = {
            "metrics": lpn.card.metrics,
            "training": {k: v for k, v in lpn.card.training.items() if k != "history"},
        }
    if "prior" in a.parts:
        curves = []
        report["prior"] = {}
        for kind in ("noise", "blur"):
            levels = PERTURBATIONS[kind][: a.levels] if a.levels else None
            res = prior_curves(lpn, x, kind, levels, seed=a.seed, tol=a.prior_tol)
            curves.append(res)
            report["prior"][kind] = {
                "levels": res["levels"],
                "mean_R": res["values"].mean(1).tolist(),
                "spearman_mean": float(res["spearman"].mean()),
                "spearman_min": float(res["spearman"].min()),
                "fraction_spearman_1": float((res["spearman"] >= 1 - 1e-9).float().mean()),
                "inversion_converged_fraction": float(res["converged"].float().mean()),
                "inversion_max_residual": float(res["residual"].max()),
            }
            print(
                f"prior under {kind}: Spearman {report['prior'][kind]['spearman_mean']:.3f}, "
                f"mean R {[round(v, 3) for v in report['prior'][kind]['mean_R']]}"
            )
        plot_prior_curves(curves, out / "prior.png")
    shape = (1, 28, 28)
    if "reconstruct" in a.parts:
        tasks: dict[str, tuple[Any, float]] = {}
        if "blur" in a.tasks:
            tasks["blur"] = (GaussianBlur(shape, sigma=1.5), 0.02)
        for missing in a.missing if "inpaint" in a.tasks else []:
            tasks[f"inpaint-{round(100 * missing)}"] = (RandomInpainting(shape, missing=missing, seed=a.seed), 0.02)
        if a.cs_measurements > 0 and "cs" in a.tasks:
            tasks["cs"] = (CompressedSensing(shape, m=a.cs_measurements, seed=a.seed), 0.02)
        report["reconstruct"] = {}
        rows = []
        fig_rows = []
        for name, (op, noise) in tasks.items():
            grid = {"rho_grid": a.rho_grid} if a.rho_grid else {}
            res = compare_reconstruction(lpn, x, x_val, op, noise, "admm", iters=a.iters, seed=a.seed, **grid)
            gain = res["pnp"]["psnr"] - res["tv"]["psnr"]
            report["reconstruct"][name] = {
                "operator": res["operator"],
                "noise_std": noise,
                "rho": res["param"],
                "tv_lam": res["tv_lam"],
                "psnr_lpn": _summ(res["pnp"]["psnr"]),
                "psnr_tv": _summ(res["tv"]["psnr"]),
                "psnr_initial_guess": _summ(res["initial_guess"]["psnr"]),
                "psnr_tv_from_initial_guess": _summ(res["tv_from_initial_guess"]["psnr"]),
                "tv_start_gap_max": res["tv_start_gap_max"],
                "ssim_lpn": _summ(res["pnp"]["ssim"]),
                "ssim_tv": _summ(res["tv"]["ssim"]),
                "psnr_gain_mean": float(gain.mean()),
                "fraction_images_lpn_better": float((gain > 0).float().mean()),
                "admm_iterations": res["iterations"],
                "admm_final_relative_change_max": float(res["residuals"][-1].max()),
                "admm_final_primal_residual_max": float(res["primal_residuals"][-1].max()),
                "tuning": res["tuning"],
            }
            rows.append(
                [
                    name,
                    float(res["pnp"]["psnr"].mean()),
                    float(res["tv"]["psnr"].mean()),
                    float(gain.mean()),
                    float(res["initial_guess"]["psnr"].mean()),
                    float(res["pnp"]["ssim"].mean()),
                    float(res["tv"]["ssim"].mean()),
                ]
            )
            fig_rows.append((name, res))
        print_table(rows, ["task", "LPN dB", "TV dB", "gain dB", "start dB", "LPN SSIM", "TV SSIM"])
        for name, res in fig_rows:
            plot_reconstructions(x, res, out / f"reconstruct_{name}.png", title=f"{name}: {res['operator']}")
    if "pgd" in a.parts:
        op, noise = GaussianBlur(shape, sigma=1.5), 0.02
        eta = 0.99 / op.norm_sq()
        res = compare_reconstruction(lpn, x, x_val, op, noise, "pgd", iters=a.pgd_iters, eta=eta, seed=a.seed, tol=1e-6)
        r = res["residuals"]
        report["pgd"] = {
            "operator": res["operator"],
            "eta": eta,
            "eta_bound": 1.0 / op.norm_sq(),
            "iterations": res["iterations"],
            "relative_change_max_at": {str(k): float(r[k - 1].max()) for k in (1, 10, 30, 100, 300) if k <= r.shape[0]},
            "relative_change_max_final": float(r[-1].max()),
            "relative_change_median_final": float(r[-1].median()),
            "converged_fraction_tol_1e-6": float(res["converged"].float().mean()),
            "psnr_tv": _summ(res["tv"]["psnr"]),
            "psnr_pgd": _summ(res["pnp"]["psnr"]),
        }
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.semilogy(range(1, r.shape[0] + 1), r.max(1).values.numpy(), label="max over images")
        ax.semilogy(range(1, r.shape[0] + 1), r.median(1).values.numpy(), label="median")
        ax.set_xlabel("iteration")
        ax.set_ylabel("||x_k+1 - x_k|| / ||x_k||")
        ax.set_title(f"PnP-PGD, blur, eta = {eta:.3g} < 1/sigma_max(A)^2 = {1 / op.norm_sq():.3g}", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend()
        save_figure(fig, out / "pgd_residuals.png")
        print(f"PnP-PGD: relative change {report['pgd']['relative_change_max_at']} (max over images)")
    report["seconds"] = time.perf_counter() - start
    write_json(out / "results.json", report)
    print(f"wrote {out / 'results.json'} and PNGs in {out}")
    return 0
