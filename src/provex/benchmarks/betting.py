"""Statistical importance with error control, measured on problems with a known answer.

``provex benchmark betting [--repeats R] [--tau-max T] [--fdr-repeats F] [--xrt-repeats X]
[--no-sweep] [--blocks synthetic,sweep,fdr,xrt] [--out DIR]`` runs the blocks below. Each
block draws from its own random stream, so ``--blocks xrt`` reruns one block alone and merges it
into an existing ``results.json`` made with the same settings:

1. Testing by betting on the synthetic experiment of Teneggi & Sulam (2024) with exact
   conditionals (Z1 ~ N(1,1), Z2 ~ N(-1,1), Z3 = Z1 + N(0,1);
   Y = sigmoid(0.3 z1 + b2 z3 z2 + 0.3 z3) + N(0, 0.01^2)): SKIT, cSKIT and xSKIT on Z2 at
   b2 = 0 (null) and b2 = 0.1, linear and RBF kernels, R repeats: rejection rate and mean
   rejection time tau / tau_max; a sweep over b2 in [0, 0.2] (figure ``sweep.png``) and
   example wealth paths (``wealth.png``); the time of a batched run against one-by-one runs.
2. FDR over the three concepts with e-BH, F repeats, in two settings: b2 = 0 (Z2 null, Z1 and
   Z3 not) and the global null (b = 0: every concept null), for SKIT and cSKIT.
3. SHAP-XRT on a problem with a known answer (independent N(0,1) features,
   f = sigmoid(3 x0 + 3 x1)): Kolmogorov-Smirnov uniformity of the p-values of unimportant
   features over X repeats, power on an important one against M, and, for a binary f, the
   expected p-value against its closed form and the bound 1 - K/(K+1) gamma (``xrt.png``).

Writes ``results.json`` and the figures into ``--out``.
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
from scipy.stats import kstest, norm
from tqdm.auto import tqdm

from provex.benchmarks.common import add_progress_argument, add_quick_argument, environment, print_table, write_json
from provex.stats import (
    GaussianSampler,
    cskit,
    fdr_betting,
    sample_synthetic,
    shap_xrt,
    skit,
    synthetic_model,
    synthetic_sampler,
    xskit,
)
from provex.viz.heatmap import save_figure

__all__ = ["main"]

BASE_BETA = (0.3, 0.0, 0.3)
BLOCKS = ("synthetic", "sweep", "fdr", "xrt")
XSKIT_POINT = (0.0, 1.0, 1.0)  # z2 = 1, z3 = 1 (z1 is redrawn given z3)


def _beta(b2: float, b1: float = 0.3, b3: float = 0.3) -> tuple[float, float, float]:
    return (b1, b2, b3)


def run_tests(
    b2: float, kernel: str, repeats: int, tau_max: int, alpha: float, gen: torch.Generator, seed: int
) -> dict[str, Any]:
    """SKIT, cSKIT and xSKIT on Z2 at this b2: batch results over repeats."""
    beta = _beta(b2)
    z, y = sample_synthetic(2 * tau_max, beta, repeats=repeats, generator=gen)
    out = {}
    t0 = time.perf_counter()
    out["skit"] = skit(y, z[..., 1], kernel, alpha, tau_max, seed)
    t1 = time.perf_counter()
    out["cskit"] = cskit(y[:, :tau_max], z[:, :tau_max], 1, synthetic_sampler(), kernel, alpha, tau_max, seed)
    t2 = time.perf_counter()
    f = lambda x: synthetic_model(x, beta)  # noqa: E731
    out["xskit"] = xskit(
        torch.tensor(XSKIT_POINT), 1, [2], synthetic_sampler(), f, kernel, alpha, tau_max, seed, repeats=repeats
    )
    t3 = time.perf_counter()
    out["seconds"] = {"skit": t1 - t0, "cskit": t2 - t1, "xskit": t3 - t2}
    return out


def synthetic_block(a: argparse.Namespace, gen: torch.Generator) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows, paths = [], {}
    for b2 in (0.0, 0.1):
        for kernel in ("linear", "rbf"):
            res = run_tests(b2, kernel, a.repeats, a.tau_max, a.alpha, gen, a.seed)
            for test in ("skit", "cskit", "xskit"):
                r = res[test]
                rows.append(
                    {
                        "b2": b2,
                        "kernel": kernel,
                        "test": test,
                        "rejection_rate": float(r.rejection_rate()),
                        "mean_tau": float(r.mean_tau()),
                        "seconds": res["seconds"][test],
                    }
                )
            paths[(b2, kernel)] = res["skit"]
    return rows, paths


def speed_block(a: argparse.Namespace, gen: torch.Generator) -> dict[str, Any]:
    """Batched R repeats against single runs (median of 3) times R, same data size, RBF SKIT at b2 = 0.1."""
    z, y = sample_synthetic(2 * a.tau_max, _beta(0.1), repeats=a.repeats, generator=gen)
    t0 = time.perf_counter()
    skit(y, z[..., 1], "rbf", a.alpha, a.tau_max, a.seed)
    batched = time.perf_counter() - t0
    singles = []
    for i in range(3):
        t0 = time.perf_counter()
        skit(y[i], z[i, :, 1], "rbf", a.alpha, a.tau_max, a.seed)
        singles.append(time.perf_counter() - t0)
    one = float(np.median(singles))
    return {
        "batched_seconds": batched,
        "single_seconds": one,
        "loop_estimate_seconds": one * a.repeats,
        "speedup": one * a.repeats / batched,
    }


def sweep_block(a: argparse.Namespace, gen: torch.Generator) -> dict[str, Any]:
    b2s = [round(v, 3) for v in np.linspace(0.0, 0.2, 11)]
    out: dict[str, Any] = {"b2": b2s}
    for kernel in ("linear", "rbf"):
        for test in ("skit", "cskit", "xskit"):
            out[f"{test}/{kernel}"] = {"rejection_rate": [], "mean_tau": []}
    for b2 in tqdm(b2s, desc="sweep b2", disable=not a.progress):
        for kernel in ("linear", "rbf"):
            res = run_tests(b2, kernel, a.repeats, a.tau_max, a.alpha, gen, a.seed)
            for test in ("skit", "cskit", "xskit"):
                out[f"{test}/{kernel}"]["rejection_rate"].append(float(res[test].rejection_rate()))
                out[f"{test}/{kernel}"]["mean_tau"].append(float(res[test].mean_tau()))
    return out


def fdr_block(a: argparse.Namespace, gen: torch.Generator) -> list[dict[str, Any]]:
    """e-BH over (Z1, Z2, Z3) per repeat; FDR = mean of false rejections / max(rejections, 1)."""
    rows = []
    k = 3
    for setting, beta, nulls in (
        ("b2 = 0", _beta(0.0), [False, True, False]),
        ("global null", (0.0, 0.0, 0.0), [True, True, True]),
    ):
        null = torch.tensor(nulls)
        for kernel in ("linear", "rbf"):
            for test in ("skit", "cskit"):
                t0 = time.perf_counter()
                z, y = sample_synthetic(2 * a.tau_max, beta, repeats=a.fdr_repeats, generator=gen)
                if test == "skit":
                    r = skit(y[:, None, :], z.transpose(1, 2), kernel, a.alpha, a.tau_max, a.seed, stop_at=k / a.alpha)
                else:
                    r = cskit(
                        y[:, : a.tau_max],
                        z[:, : a.tau_max],
                        [0, 1, 2],
                        synthetic_sampler(),
                        kernel,
                        a.alpha,
                        a.tau_max,
                        a.seed,
                        stop_at=k / a.alpha,
                    )
                e = fdr_betting(r)
                row: dict[str, Any] = {"setting": setting, "test": test, "kernel": kernel, "repeats": a.fdr_repeats}
                for name, rej in (("ebh", e.rejected), ("uncorrected", r.rejected)):
                    false = (rej & null).sum(1).double()
                    total = rej.sum(1).double().clamp_min(1)
                    row[f"fdr_{name}"] = float((false / total).mean())
                    row[f"fwer_{name}"] = float((rej & null).any(1).double().mean())
                    if (~null).any():
                        row[f"power_{name}"] = float(rej[:, ~null].double().mean())
                row["seconds"] = time.perf_counter() - t0
                rows.append(row)
    return rows


def _seed(a: argparse.Namespace, setting: int, repeat: int) -> int:
    """Distinct seeds per setting: shared seeds would couple the settings' p-values."""
    return a.seed + 100_000 * setting + repeat


def _null_row(j: int, c: list[int], ps: list[float], alpha: float) -> dict[str, Any]:
    return {
        "j": j,
        "C": c,
        "ks_pvalue": float(kstest(ps, "uniform").pvalue),
        "rejection_rate": float(np.mean(np.array(ps) <= alpha)),
    }


def xrt_block(a: argparse.Namespace) -> dict[str, Any]:
    d = 5
    sampler = GaussianSampler(torch.zeros(d), torch.eye(d))

    def f(xs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(3 * xs[:, 0] + 3 * xs[:, 1])

    gen = block_generator(a.seed, "xrt")
    xs = torch.randn(a.xrt_repeats, d, generator=gen, dtype=torch.float64)
    xs[:, 0] = 1.5  # the important feature sits at a value that raises f
    null_rows, power_rows = [], []
    null_p = {}
    for s_id, (j, c) in enumerate(((3, []), (3, [0]), (4, [0, 2]), (2, [1]))):
        ps = [
            shap_xrt(f, sampler, xs[r], j, c, K=a.xrt_k, M=1, seed=_seed(a, s_id, r), shapley=False).p_value
            for r in tqdm(range(a.xrt_repeats), desc=f"xrt null j={j}", disable=not a.progress)
        ]
        null_p[f"j={j}, C={c}"] = ps
        null_rows.append(_null_row(j, c, ps, a.alpha))
    for s_id, (m, c) in enumerate([(m, c) for m in (1, 5, 20) for c in ([], [2])], start=10):
        ps = [
            shap_xrt(f, sampler, xs[r], 0, c, K=a.xrt_k, M=m, seed=_seed(a, s_id, r), shapley=False).p_value
            for r in range(a.xrt_repeats)
        ]
        power = float(np.mean(np.array(ps) <= a.alpha))
        power_rows.append({"j": 0, "C": c, "M": m, "power": power, "mean_p": float(np.mean(ps))})
    # correlated features: x2 (corr. 0.8 with x0) is unused by f; given x0 it is a null, alone it is not
    cov = torch.eye(3, dtype=torch.float64)
    cov[0, 2] = cov[2, 0] = 0.8
    corr = GaussianSampler(torch.zeros(3), cov)
    f2 = lambda t: torch.sigmoid(3 * t[:, 0] + 3 * t[:, 1])  # noqa: E731
    x2 = corr.draw(a.xrt_repeats, gen)
    x2[:, 2] = 1.5
    corr_rows = []
    for s_id, c in enumerate(([0], []), start=20):
        ps = [
            shap_xrt(f2, corr, x2[r], 2, c, K=a.xrt_k, seed=_seed(a, s_id, r), shapley=False).p_value
            for r in range(a.xrt_repeats)
        ]
        corr_rows.append(_null_row(2, c, ps, a.alpha))
    # binary f: closed form E[p] = 1 - K/(K+1) a (1 - b) and the bound 1 - K/(K+1) gamma
    s2 = GaussianSampler(torch.zeros(2), torch.eye(2))
    thr = 2.0

    def fb(t: torch.Tensor) -> torch.Tensor:
        return ((t[:, 0] + 0.5 * t[:, 1]) > thr).double()

    b = float(1 - norm.cdf(thr / math.sqrt(1.25)))
    k = a.xrt_k
    bound_rows = []
    for s_id, x0 in enumerate(np.linspace(0.0, 4.5, 10), start=30):
        av = float(1 - norm.cdf((thr - x0) / 0.5))
        gamma = av - b
        x = torch.tensor([x0, 0.0], dtype=torch.float64)
        ps = [
            shap_xrt(fb, s2, x, 0, [], K=k, seed=_seed(a, s_id, r), shapley=False).p_value
            for r in range(a.bound_repeats)
        ]
        bound_rows.append(
            {
                "x0": float(x0),
                "gamma": gamma,
                "mean_p": float(np.mean(ps)),
                "se": float(np.std(ps) / math.sqrt(len(ps))),
                "closed_form": 1 - k / (k + 1) * av * (1 - b),
                "bound": 1 - k / (k + 1) * gamma,
                "gamma_ge_1_minus_alpha": gamma >= 1 - a.alpha,
            }
        )
    high = [r["mean_p"] for r in bound_rows if r["gamma_ge_1_minus_alpha"]]
    check = {
        "bound_holds_within_3se": all(r["mean_p"] <= r["bound"] + 3 * r["se"] for r in bound_rows),
        "closed_form_within_3se": all(
            abs(r["mean_p"] - r["closed_form"])
            <= 3 * math.sqrt(r["closed_form"] * (1 - r["closed_form"]) / a.bound_repeats)
            for r in bound_rows
        ),
        "max_mean_p_where_gamma_ge_1_minus_alpha": max(high) if high else None,
        "finite_K_guarantee": a.alpha + (1 - a.alpha) / (k + 1),
    }
    return {
        "null": null_rows,
        "power": power_rows,
        "correlated": corr_rows,
        "binary_bound": bound_rows,
        "binary_bound_check": check,
        "null_p_values": null_p,
    }


def _plot_wealth(out: Path, a: argparse.Namespace, paths: dict) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, kernel in zip(axes, ("linear", "rbf")):
        for b2, color in ((0.0, "tab:blue"), (0.1, "tab:red")):
            w = paths[(b2, kernel)].wealth.numpy()
            for r in range(min(20, w.shape[0])):
                ok = np.isfinite(w[r])
                ax.plot(
                    np.arange(w.shape[1])[ok],
                    w[r][ok],
                    color=color,
                    alpha=0.35,
                    lw=0.8,
                    label=f"b2 = {b2}" if r == 0 else None,
                )
        ax.axhline(1 / a.alpha, color="k", ls="--", lw=1, label="1/alpha")
        ax.set_yscale("log")
        ax.set_title(f"SKIT on Z2, {kernel} kernel")
        ax.set_xlabel("step t")
    axes[0].set_ylabel("wealth")
    axes[0].legend(fontsize=8)
    return save_figure(fig, out / "wealth.png").name


def _plot_sweep(out: Path, a: argparse.Namespace, sweep: dict) -> str:
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), sharey=True)
    for ax, test in zip(axes, ("skit", "cskit", "xskit")):
        for kernel, color in (("linear", "tab:blue"), ("rbf", "tab:red")):
            s = sweep[f"{test}/{kernel}"]
            ax.plot(sweep["b2"], s["rejection_rate"], "o-", color=color, label=f"rejection rate ({kernel})")
            ax.plot(sweep["b2"], s["mean_tau"], "o--", color=color, alpha=0.6, label=f"tau / tau_max ({kernel})")
        ax.axhline(a.alpha, color="k", ls=":", lw=1, label="alpha")
        ax.set_xlabel("b2")
        ax.set_title(
            {
                "skit": "SKIT: Y indep. Z2",
                "cskit": "cSKIT: Y indep. Z2 | Z1, Z3",
                "xskit": "xSKIT at z2 = 1, z3 = 1, C = {Z3}",
            }[test]
        )
    axes[0].legend(fontsize=7)
    return save_figure(fig, out / "sweep.png").name


def _plot_xrt(out: Path, a: argparse.Namespace, xrt: dict) -> str:
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, ps in xrt["null_p_values"].items():
        ax0.hist(ps, bins=20, range=(0, 1), histtype="step", density=True, label=name)
    ax0.axhline(1.0, color="k", ls=":", lw=1)
    ax0.set_title("SHAP-XRT p-values of unimportant features")
    ax0.legend(fontsize=7)
    br = xrt["binary_bound"]
    g = [r["gamma"] for r in br]
    ax1.errorbar(g, [r["mean_p"] for r in br], yerr=[2 * r["se"] for r in br], fmt="o", label="mean p (MC)")
    ax1.plot(g, [r["closed_form"] for r in br], "x", label="closed form")
    gg = np.linspace(0, 1, 50)
    ax1.plot(gg, 1 - a.xrt_k / (a.xrt_k + 1) * gg, "--", label="bound 1 - K/(K+1) gamma")
    ax1.axvline(1 - a.alpha, color="gray", ls=":", lw=1)
    ax1.axhline(a.alpha, color="gray", ls=":", lw=1)
    ax1.set_xlabel("gamma_{j,C}")
    ax1.set_ylabel("E[p]")
    ax1.set_title("binary f: expected p-value")
    ax1.legend(fontsize=7)
    return save_figure(fig, out / "xrt.png").name


def block_generator(seed: int, block: str) -> torch.Generator:
    """Each block draws from its own stream, so a block run alone reproduces the full run's numbers."""
    return torch.Generator().manual_seed(seed + 1_000_003 * BLOCKS.index(block))


def _parse_blocks(text: str) -> list[str]:
    names = [b.strip() for b in text.split(",") if b.strip()]
    bad = [b for b in names if b not in BLOCKS]
    if bad or not names:
        raise ValueError(f"--blocks must be a comma-separated subset of {','.join(BLOCKS)}, got {text!r}")
    return [b for b in BLOCKS if b in names]


# settings that change no block's numbers
_RUN_ONLY = ("blocks", "progress", "out", "quick")  # quick: its effect is in the repeat counts


def _previous(path: Path, a: argparse.Namespace) -> dict[str, Any]:
    """The results file to merge a partial run into; its settings must match this run's."""
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    mine = {k: v for k, v in vars(a).items() if k not in _RUN_ONLY}
    theirs = {k: v for k, v in old.get("settings", {}).items() if k not in _RUN_ONLY}
    if mine != theirs:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise ValueError(f"--blocks: {path} was made with other settings ({', '.join(diff)}); use another --out")
    return old


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="provex benchmark betting", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--tau-max", type=int, default=1000)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--fdr-repeats", type=int, default=1000)
    p.add_argument("--xrt-repeats", type=int, default=500)
    p.add_argument("--xrt-k", type=int, default=100)
    p.add_argument("--bound-repeats", type=int, default=2000)
    p.add_argument("--no-sweep", action="store_true", help="skip the b2 sweep")
    p.add_argument(
        "--blocks",
        default=",".join(BLOCKS),
        help="comma-separated blocks to run (default all); the others are kept from --out/results.json, "
        "which must have been made with the same settings",
    )
    p.add_argument("--seed", type=int, default=0)
    add_progress_argument(p)
    add_quick_argument(p, "10 repeats of the tests (and of FDR), 50 SHAP-XRT repeats, 200 bound repeats")
    p.add_argument("--out", default="results/betting")
    a = p.parse_args(argv)
    if a.quick:
        a.repeats, a.fdr_repeats, a.xrt_repeats, a.bound_repeats = 10, 10, 50, 200
    for name in ("repeats", "tau_max", "fdr_repeats", "xrt_repeats", "xrt_k", "bound_repeats"):
        if getattr(a, name) < 2:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 2")
    if not 0 < a.alpha < 1:
        raise ValueError(f"--alpha must be in (0, 1), got {a.alpha}")
    blocks = _parse_blocks(a.blocks)
    if a.no_sweep:
        blocks = [b for b in blocks if b != "sweep"]
    out = Path(a.out)
    results = _previous(out / "results.json", a) if len(blocks) < len(BLOCKS) else {}
    results.update({"settings": vars(a), "environment": environment()})
    timings: dict[str, float] = dict(results.get("timings_seconds", {}))
    figures: set[str] = set(results.get("figures", []))
    start = time.perf_counter()

    if "synthetic" in blocks:
        t0 = time.perf_counter()
        gen = block_generator(a.seed, "synthetic")
        rows, paths = synthetic_block(a, gen)
        print(f"\nSynthetic experiment, tests on Z2: {a.repeats} repeats, tau_max = {a.tau_max}, alpha = {a.alpha}")
        print_table(
            [[r["b2"], r["test"], r["kernel"], r["rejection_rate"], r["mean_tau"], r["seconds"]] for r in rows],
            ["b2", "test", "kernel", "rejection rate", "mean tau/tau_max", "seconds"],
        )
        speed = speed_block(a, gen)
        print(
            f"\nbatched {a.repeats} repeats: {speed['batched_seconds']:.2f} s; "
            f"one test {speed['single_seconds']:.2f} s "
            f"(x{a.repeats} = {speed['loop_estimate_seconds']:.1f} s): speed-up {speed['speedup']:.1f}x"
        )
        figures.add(_plot_wealth(out, a, paths))
        results.update({"synthetic": rows, "speed": speed})
        timings["synthetic"] = time.perf_counter() - t0

    if "sweep" in blocks:
        t0 = time.perf_counter()
        sweep = sweep_block(a, block_generator(a.seed, "sweep"))
        figures.add(_plot_sweep(out, a, sweep))
        results["sweep"] = sweep
        timings["sweep"] = time.perf_counter() - t0

    if "fdr" in blocks:
        t0 = time.perf_counter()
        fdr_rows = fdr_block(a, block_generator(a.seed, "fdr"))
        timings["fdr"] = time.perf_counter() - t0
        print(f"\nFDR over (Z1, Z2, Z3) with e-BH, {a.fdr_repeats} repeats, alpha = {a.alpha}")
        print_table(
            [
                [
                    r["setting"],
                    r["test"],
                    r["kernel"],
                    r["fdr_ebh"],
                    r["fdr_uncorrected"],
                    r.get("power_ebh", "-"),
                    r["seconds"],
                ]
                for r in fdr_rows
            ],
            ["setting", "test", "kernel", "FDR e-BH", "FDR uncorrected", "power e-BH", "seconds"],
        )
        results["fdr"] = fdr_rows

    if "xrt" in blocks:
        t0 = time.perf_counter()
        xrt = xrt_block(a)
        timings["xrt"] = time.perf_counter() - t0
        print(f"\nSHAP-XRT null p-values ({a.xrt_repeats} repeats, K = {a.xrt_k})")
        print_table(
            [[r["j"], str(r["C"]), r["ks_pvalue"], r["rejection_rate"]] for r in xrt["null"] + xrt["correlated"]],
            ["j", "C", "KS p-value", "rejection rate"],
        )
        print_table(
            [[r["j"], str(r["C"]), r["M"], r["power"], r["mean_p"]] for r in xrt["power"]],
            ["j", "C", "M", "power", "mean p"],
        )
        print_table(
            [[r["gamma"], r["mean_p"], r["closed_form"], r["bound"]] for r in xrt["binary_bound"]],
            ["gamma", "mean p", "closed form", "bound 1-K/(K+1)gamma"],
        )
        print(xrt["binary_bound_check"])
        figures.add(_plot_xrt(out, a, xrt))
        results["shap_xrt"] = {k: v for k, v in xrt.items() if k != "null_p_values"}

    results["timings_seconds"] = timings
    results["figures"] = sorted(figures)
    write_json(out / "results.json", results)
    print(f"\nwrote {out / 'results.json'} ({', '.join(blocks)}) in {time.perf_counter() - start:.0f} s")
    return 0
