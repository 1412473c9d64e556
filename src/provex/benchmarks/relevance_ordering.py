"""The FW-RDE paper's comparison on MNIST: every method through the relevance ordering test.

``provex benchmark ordering [--images 50] [--n-noise 64] [--step 5] [--methods ...] [--quick]
[--out DIR]`` computes each method's maps on the shipped MNIST samples with the shipped
``mnist-cnn``, runs :func:`provex.evaluate.relevance_ordering` on them (same seed, so every
method meets the same noise) and writes into ``--out``:

* ``results.json``: ``{"settings": {...}, "methods": {NAME: {"auc_distortion",
  "auc_accuracy", "seconds_per_image", "curve": {...}}}}``; the settings include the method
  options, the environment, and the throughput of the evaluation against plain forward passes
  of the same model measured in the same run (``provex.benchmarks.model_speed``);
* ``ordering.png``: distortion and accuracy against the fraction of components kept;
* ``maps.png``: the maps of every method (rows) on the first 8 images (columns);
* ``summary.txt``: the printed table, paired comparisons and the check of the paper's claim
  (MR-RDE and Ord-RDE have a lower distortion area than L-RDE and every classic baseline);
* ``maps/NAME.pt``: each method's :class:`~provex.Explanation` (not meant for version control).

Settings follow the papers (step 5; 512 draws in the paper, 64 by default here for time;
``--n-noise 512`` restores the protocol). Where the RDE reference code post-processed a
baseline, the benchmark does the same (sensitivity: magnitude; SmoothGrad: mean squared
gradient, 64 draws, noise 0.3 of the range); see ``BENCHMARK_OPTIONS``. ``-O METHOD:KEY=VALUE``
overrides a method option; ``--maps-from DIR`` re-evaluates the maps an earlier run saved
(a run folder such as ``OUT/run``, or a folder of ``NAME.pt`` explanations) instead of
computing them; ``--noise gaussian`` evaluates under the rate-distortion methods' noise model
(per-pixel training mean and variance of the model card) instead of the papers' uniform
noise. ``--quick``: one image, every setting as in the full run (the shared meaning,
``provex.benchmarks.common.QUICK``).

The work runs on the dataset-run engine (:func:`provex.run`): maps and curves go into the
run folder ``OUT/run`` shard by shard, so an interrupted benchmark resumes where it stopped
when the same command is run again (other settings are refused unless ``--new``), and
``--engine ray`` / ``--workers N`` spread the methods' maps and the evaluation over worker
processes or a Ray cluster. Each image is seeded with ``seed + its index`` (methods that take
a seed and the ordering test alike), so every method meets the same noise on an image.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import torch

from provex import models
from provex.benchmarks.common import add_progress_argument, add_quick_argument, environment, print_table, write_json
from provex.benchmarks.model_speed import forward_backward_seconds
from provex.data.samples import sample_indices, samples
from provex.evaluate import OrderingCurve, plot_map_grid, plot_ordering_curves
from provex.explanation import Explanation
from provex.io import atomic_write
from provex.options import parse_options
from provex.registry import methods
from provex.runs import Run, load_run, run

__all__ = ["BENCHMARK_OPTIONS", "FW_METHODS", "PAPER_METHODS", "QUICK", "claim_check", "main"]

PAPER_METHODS = [
    "sensitivity",
    "smoothgrad",
    "guided-backprop",
    "lrp-alpha-beta",
    "deep-taylor",
    "kernel-shap",
    "lime",
    "l-rde",
    "mr-rde",
    "ord-rde",
]
"""Every method of the FW-RDE comparison (the default of ``--methods``)."""

FW_METHODS = ("mr-rde", "ord-rde")
"""The methods the paper's claim is about."""

BENCHMARK_OPTIONS: dict[str, dict[str, Any]] = {
    # RDE reference code: gradient with postprocess "square" -> ordered by magnitude
    "sensitivity": {"absolute": True},
    # RDE reference code: iNNvestigate SmoothGrad, 64 draws, noise 0.3 * range, "square"
    "smoothgrad": {"n_samples": 64, "noise_level": 0.3, "square": True},
}
"""Options the benchmark passes where the paper's settings differ from a method's defaults."""

QUICK = {"images": 1}
"""``--quick``: the same methods and settings on one image (see ``provex.benchmarks.common.QUICK``)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="provex benchmark ordering",
        description="Relevance ordering test of every method on the shipped MNIST images (FW-RDE comparison).",
    )
    p.add_argument("--model", default="mnist-cnn", help="zoo model (default: mnist-cnn)")
    p.add_argument("--images", type=int, default=None, help="number of shipped samples (default 50; quick 1)")
    p.add_argument("--n-noise", type=int, default=64, help="noise draws per step (default 64; paper 512)")
    p.add_argument("--step", type=int, default=5, help="components replaced per step (default 5)")
    p.add_argument("--methods", nargs="+", default=PAPER_METHODS, metavar="NAME", help="methods (default: paper's)")
    p.add_argument("-O", "--option", action="append", metavar="METHOD:KEY=VALUE", help="method option, repeatable")
    p.add_argument(
        "--noise",
        choices=["uniform", "gaussian"],
        default="uniform",
        help="replacement noise: uniform in [x.min, x.max] (the papers') or N(data mean, data var) of the model card",
    )
    p.add_argument(
        "--maps-from",
        default=None,
        metavar="DIR",
        help="evaluate the maps saved by an earlier run (DIR/NAME.pt) instead of computing them",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=512, help="rows per model call in the evaluation")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True, help="torch.compile the model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--grid-images", type=int, default=8, help="columns of the map figure")
    add_quick_argument(p, "1 image")
    add_progress_argument(p)
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="dataset-run engine (default local)")
    p.add_argument("--workers", type=int, default=None, help="worker processes / Ray tasks (default: in-process)")
    p.add_argument("--address", default=None, help="ray: auto or HOST:PORT of a running cluster")
    p.add_argument("--shard-size", type=int, default=8, help="images per task of the engine (default 8)")
    p.add_argument("--new", action="store_true", help="delete OUT/run if it holds a run with other settings")
    p.add_argument("--out", default="results/ordering", help="output folder (the run's store is OUT/run)")
    return p


def _method_options(names: list[str], pairs: list[str] | None) -> dict[str, dict[str, Any]]:
    opts: dict[str, dict[str, Any]] = {name: dict(BENCHMARK_OPTIONS.get(name, {})) for name in names}
    for pair in pairs or []:
        if ":" not in pair:
            raise ValueError(f"--option must look like METHOD:KEY=VALUE, got {pair!r}")
        name, kv = pair.split(":", 1)
        if name not in opts:
            raise ValueError(f"--option {pair!r}: method {name!r} is not among --methods {names}")
        opts[name].update(parse_options([kv]))
    return opts


def _check_methods(names: list[str]) -> None:
    registered = methods()
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise ValueError(f"method(s) not registered: {', '.join(unknown)}; registered methods: {', '.join(registered)}")
    if len(set(names)) != len(names):
        raise ValueError(f"--methods lists a method twice: {names}")


def _map_seconds(maps_from: str, name: str, images: int) -> float:
    """Seconds per image the saved maps of ``name`` took (NaN when unknown)."""
    folder = Path(maps_from)
    if (folder / "manifest.json").is_file():
        table = load_run(folder).table
        return float(table[table.method == name].seconds.head(images).mean())
    exp = Explanation.load(folder / f"{name}.pt")
    return float(exp.info.get("seconds", float("nan"))) / exp.relevance.shape[0]


def _curve(run: Run, name: str, settings: dict[str, Any]) -> OrderingCurve:
    """The method's :class:`OrderingCurve` from the per-image curves the run stored.

    Standard errors are over images; with a single image they are NaN (the per-draw
    variances are not stored)."""
    c = run.curves[name]
    per_d, per_a, fraction = c["distortion"], c["accuracy"], c["fraction_kept"]
    num = per_d.shape[0]
    rows = run.table[run.table.method == name]
    nan = torch.full_like(fraction, float("nan"))
    curve = OrderingCurve(
        fraction_kept=fraction,
        distortion=per_d.mean(0),
        distortion_se=per_d.std(0) / math.sqrt(num) if num > 1 else nan,
        accuracy=per_a.mean(0),
        accuracy_se=per_a.std(0) / math.sqrt(num) if num > 1 else nan,
        per_image_distortion=per_d,
        per_image_accuracy=per_a,
        auc_distortion=float("nan"),
        auc_distortion_se=float("nan"),
        auc_accuracy=float("nan"),
        auc_accuracy_se=float("nan"),
        settings={**settings, "n_images": num, "target": rows.target.tolist()},
        forward_passes=num * (1 + (len(fraction) - 1) * settings["n_samples"]),
        seconds=float(rows.score_seconds.sum()),
    )
    auc_d, auc_a = curve.per_image_auc_distortion, curve.per_image_auc_accuracy
    curve.auc_distortion, curve.auc_accuracy = float(auc_d.mean()), float(auc_a.mean())
    if num > 1:
        curve.auc_distortion_se = float(auc_d.std() / math.sqrt(num))
        curve.auc_accuracy_se = float(auc_a.std() / math.sqrt(num))
    return curve


def claim_check(curves: dict[str, OrderingCurve]) -> list[str]:
    """Lines on the paper's claim and paired per-image comparisons of the FW methods."""
    lines = []
    present = [m for m in FW_METHODS if m in curves]
    others = [m for m in curves if m not in FW_METHODS and m != "rc-rde"]
    if not present:
        return ["claim check skipped: neither mr-rde nor ord-rde was run"]
    holds = True
    for fw in present:
        a = curves[fw].per_image_auc_distortion
        for other in others:
            b = curves[other].per_image_auc_distortion
            diff = a - b
            se = float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else float("nan")
            lower = curves[fw].auc_distortion < curves[other].auc_distortion
            holds &= lower
            lines.append(
                f"{fw} vs {other}: area {curves[fw].auc_distortion:.4f} vs {curves[other].auc_distortion:.4f}, "
                f"paired difference {float(diff.mean()):+.4f} +- {se:.4f} (SE), "
                f"{fw} lower on {int((diff < 0).sum())}/{len(diff)} images"
            )
    missing = [m for m in FW_METHODS if m not in curves]
    verdict = "HOLDS" if holds else "DOES NOT HOLD"
    lines.append(
        f"paper's claim (MR-RDE and Ord-RDE below L-RDE and every classic baseline): {verdict}"
        + (f" for the methods run (missing: {', '.join(missing)})" if missing else "")
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    images = a.images if a.images is not None else (QUICK["images"] if a.quick else 50)
    n_noise, step, use_compile = a.n_noise, a.step, a.compile
    if a.threads is not None and a.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {a.threads}")
    in_process = a.engine == "local" and (a.workers or 1) == 1
    threads = a.threads or (torch.get_num_threads() if in_process else 1)
    _check_methods(a.methods)
    opts = _method_options(a.methods, a.option)
    model = models.load(a.model, device=a.device)
    sample_set = models.entry(a.model).samples
    if sample_set is None:
        raise ValueError(f"model {a.model!r} has no shipped samples to benchmark on")
    xs, _ = samples(sample_set)
    if not 1 <= images <= xs.shape[0]:
        raise ValueError(f"--images must be in 1..{xs.shape[0]}, got {images}")
    positive = {"--n-noise": n_noise, "--step": step, "--batch-size": a.batch_size, "--grid-images": a.grid_images}
    for name, v in positive.items():
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    x = xs[:images].to(a.device)
    if a.noise == "gaussian":
        card = model.card
        if getattr(card, "data_mean", None) is None or getattr(card, "data_var", None) is None:
            raise ValueError(f"--noise gaussian needs data_mean and data_var on model {a.model!r}'s card")
        noise_text = "gaussian N(data mean, data var) per pixel (model card)"
    else:
        noise_text = "uniform in [x.min(), x.max()] per image"
    out = Path(a.out)
    start = time.perf_counter()
    torch.set_num_threads(threads)

    probe = torch.rand(a.batch_size, *x.shape[1:], device=a.device)
    repeats = 3
    fwd_before, fb_before = forward_backward_seconds(model, probe, repeats=repeats)

    score = {
        "step": step,
        "n_samples": n_noise,
        "noise": "reference" if a.noise == "gaussian" else "uniform",
        "batch_size": a.batch_size,
        "compile": use_compile,
    }
    result = run(
        model,
        f"samples:{sample_set}",
        opts,
        out=out / "run",
        limit=images,
        score={"ordering": score},
        seed=a.seed,
        shard_size=a.shard_size,
        engine=a.engine,
        workers=a.workers,
        threads=threads,
        address=a.address,
        device=a.device,
        maps_from=a.maps_from,
        new=a.new,
        progress=a.progress,
    )
    if not result.complete:
        for f in result.failed:
            print(f"failed: shard {f['shard']} (images {f['indices']}): {f['error']}")
        print(f"{len(result.index)}/{images} images done; rerun the same command to retry the failed shards")
        return 1

    n_components = int(x[0].numel())
    curve_settings = {
        "step": step,
        "n_samples": n_noise,
        "n_noise": n_noise,
        "noise": a.noise,
        "seed": a.seed,
        "per_image_seeds": "seed + image index",
        "n_components": n_components,
        "tie_channels": False,
        "batch_size": a.batch_size,
        "compiled": use_compile,
    }
    curves: dict[str, OrderingCurve] = {}
    maps: dict[str, torch.Tensor] = {}
    results: dict[str, Any] = {}
    for name in a.methods:
        curve = _curve(result, name, curve_settings)
        curves[name], maps[name] = curve, result.maps[name]
        if a.maps_from is None:
            result.explanation(name).save(out / "maps" / f"{name}.pt")
            seconds = float(result.table[result.table.method == name].seconds.mean())
        else:
            seconds = _map_seconds(a.maps_from, name, images)
        results[name] = {
            "auc_distortion": curve.auc_distortion,
            "auc_accuracy": curve.auc_accuracy,
            "seconds_per_image": seconds,
            "curve": curve.to_dict(per_image=False),
        }

    fwd_after, fb_after = forward_backward_seconds(model, probe, repeats=repeats)
    ref_rate = a.batch_size / ((fwd_before + fwd_after) / 2)
    passes = sum(c.forward_passes for c in curves.values())
    eval_seconds = sum(c.seconds for c in curves.values())
    eval_rate = passes / eval_seconds
    total = time.perf_counter() - start
    settings = {
        "model": a.model,
        "images": images,
        "sample_indices": sample_indices(sample_set)[:images],
        "step": step,
        "n_noise": n_noise,
        "noise": noise_text,
        "seed": a.seed,
        "batch_size": a.batch_size,
        "compile": use_compile,
        "device": a.device,
        "quick": a.quick,
        "methods": a.methods,
        "maps_from": a.maps_from,
        "method_options": opts,
        "engine": {"engine": a.engine, "workers": a.workers, "threads": threads, "shard_size": a.shard_size},
        "run": str(out / "run"),
        "environment": environment(),
        "throughput": {
            "model_speed_forward_s": [fwd_before, fwd_after],
            "model_speed_forward_backward_s": [fb_before, fb_after],
            "model_speed_batch": a.batch_size,
            "reference_forward_passes_per_s": ref_rate,
            "evaluation_forward_passes": passes,
            "evaluation_seconds": eval_seconds,
            "evaluation_forward_passes_per_s": eval_rate,
            "evaluation_vs_reference": eval_rate / ref_rate,
            "evaluation_seconds_per_image_and_method": eval_seconds / (images * len(curves)),
        },
        "total_seconds": total,
    }
    write_json(out / "results.json", {"settings": settings, "methods": results})
    plot_ordering_curves(curves, out / "ordering.png")
    k = min(a.grid_images, images)
    preds = model(x[:k]).argmax(1).tolist() if k else []
    plot_map_grid({n: m[:k] for n, m in maps.items()}, x[:k].cpu(), out / "maps.png", [f"pred {p}" for p in preds])

    rows = [
        [
            n,
            c.auc_distortion,
            c.auc_distortion_se,
            c.auc_accuracy,
            results[n]["seconds_per_image"],
            c.seconds / images,
        ]
        for n, c in curves.items()
    ]
    table = print_table(rows, ["method", "dist. AUC", "+- SE", "acc. AUC", "map s/img", "eval s/img"])
    lines = [
        f"{images} images, step {step}, {n_noise} {a.noise} draws, seed {a.seed} (+ image index), "
        f"compile {use_compile}, {threads} thread(s) per worker, engine {a.engine} ({a.workers or 1} worker(s)); "
        f"total {total:.0f} s",
        f"evaluation: {passes} forward passes in {eval_seconds:.1f} s = {eval_rate:.0f}/s; plain forward of "
        f"batches of {a.batch_size}: {ref_rate:.0f}/s (ratio {eval_rate / ref_rate:.2f})",
        *claim_check(curves),
    ]
    print("\n".join(lines))
    with atomic_write(out / "summary.txt") as tmp:
        tmp.write_text(table + "\n\n" + "\n".join(lines) + "\n")
    print(f"wrote {out / 'results.json'}, {out / 'ordering.png'}, {out / 'maps.png'}, {out / 'summary.txt'}")
    return 0
