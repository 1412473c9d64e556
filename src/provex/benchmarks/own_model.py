"""Every method on a user's own model: torchvision ResNet-18 (random weights) on 3 x 224 x 224 images.

``provex benchmark own-model [--quick] [--methods NAME ...] [--out DIR]`` explains 8 images
with every registered method at its defaults (``provex.methods()``; a method that fails is
recorded with its error) and reports, per method, seconds per image as a multiple of one
forward+backward pass of the same model in the same run, the model calls and their
forward+backward equivalents per image (a forward-only input counts the measured
forward / forward+backward ratio), and the peak memory of the process that ran it (each
method runs in its own process, so peaks do not mix).

RC-RDE's goals (issue 12), at ``rate=0.05``: at most 2,000 forward+backward equivalents per
image, and its mask's distortion, estimated by an independent Monte Carlo at fresh draws
(``--score-draws`` draws from another seed than the solver's), below that of the top-5%
sensitivity mask on at least 7 of 8 images. Memory: RC-RDE's peak with 1 and 8 images at the
same ``batch_size`` (it must not grow with N beyond the images themselves).

The images are 8 of the shipped MNIST samples, upsampled to 224 x 224 and tinted into three
channels (a structured foreground on a dark background); the reference is each image's own
statistics (no card, no data given: the default a new user gets). ``--quick`` runs the same
code on 1 image at 32 x 32. Writes ``results.json``, ``own_model.png`` and ``table.md``
into ``--out``. Each method runs on one image per process (an image's explanation does not
depend on its batch-mates, so this is the batched result) and the results are written after
every image; ``--merge`` continues an interrupted run (keeps what is done, runs the rest).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from provex.benchmarks.common import add_quick_argument, environment, write_json
from provex.io import atomic_write
from provex.viz.heatmap import save_figure

__all__ = ["benchmark_images", "benchmark_model", "main"]

TINT = (0.9, 0.6, 0.3)
BUDGET = 2000  # forward+backward equivalents per image (issue 12)


def benchmark_model(seed: int = 0) -> torch.nn.Module:
    """torchvision's ResNet-18 with random weights drawn from ``seed``, in eval mode."""
    import torchvision

    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).eval()


def benchmark_images(n: int = 8, size: int = 224) -> torch.Tensor:
    """``n`` shipped MNIST samples upsampled to ``size`` and tinted into 3 channels, in [0.05, 0.95]."""
    from provex.data.samples import samples

    x, _ = samples("mnist")
    x = F.interpolate(x[:n], size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return 0.05 + x.repeat(1, 3, 1, 1) * torch.tensor(TINT).view(1, 3, 1, 1)


def _pass_seconds(model: torch.nn.Module, x: torch.Tensor, repeats: int = 3) -> tuple[float, float]:
    """Median seconds per image of a forward and of a forward+backward pass (input gradient) on ``x``."""
    fwd, fb = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            model(x)
        fwd.append(time.perf_counter() - start)
        xg = x.detach().requires_grad_(True)
        start = time.perf_counter()
        out = model(xg).max(1).values.sum()
        torch.autograd.grad(out, xg)
        fb.append(time.perf_counter() - start)
    return sorted(fwd)[repeats // 2] / x.shape[0], sorted(fb)[repeats // 2] / x.shape[0]


def _rss_mb() -> float:
    """Current resident memory of this process in MiB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def _child(job: dict[str, Any], path: str) -> None:
    """Run one explanation in a fresh process; save timings, info and the peak memory to ``path``."""
    try:
        torch.set_num_threads(job["threads"])
        warnings.simplefilter("ignore")
        import provex

        model = benchmark_model(job["seed"])
        first = job.get("first", 0)
        x = benchmark_images(first + job["images"], job["size"])[first:]
        options = dict(job["options"])
        spec = provex.registry.get_method(job["method"])
        if "progress" in spec.options:
            options.setdefault("progress", False)
        base = _rss_mb()
        start = time.perf_counter()
        exp = provex.explain(model, x, job["method"], **options)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        # the unit of this job, timed in this process after the method (so it does not raise the
        # peak), under the same conditions (threads, concurrent jobs) as the explanation itself
        chunk = x[:1].expand(8, *x.shape[1:]).contiguous()
        f_unit, fb_unit = _pass_seconds(model, chunk, repeats=2)
        info = {
            k: exp.info[k]
            for k in (
                "model_calls",
                "model_calls_backward",
                "model_calls_adf",
                "distortion_kind",
                "distortion_reason",
                "components",
                "grid",
                "rate",
                "rates",
                "n_samples",
                "max_iter",
                "init",
                "step",
            )
            if k in exp.info
        }
        if "iterations" in exp.info:
            info["iterations"] = torch.as_tensor(exp.info["iterations"]).flatten().tolist()
        result = {
                "ok": True,
                "seconds": seconds,
                "info": info,
                "peak_rss_mb": peak,
                "unit": {"forward_s_per_image": f_unit, "forward_backward_s_per_image": fb_unit},
                "load_average": os.getloadavg()[0],
                "rss_before_mb": base,
                "relevance": exp.relevance.cpu() if job.get("keep") else None,
                "target": exp.target.cpu(),
        }  # fmt: skip
    except Exception as err:  # a failing method is a result, not a crash of the benchmark
        first = str(err).splitlines()[0] if str(err) else ""
        result = {"ok": False, "error": f"{type(err).__name__}: {first}", "traceback": traceback.format_exc(limit=3)}
    torch.save(result, path)


def _run(job: dict[str, Any]) -> dict[str, Any]:
    """``job`` in a fresh Python process (so its peak memory is its own)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "result.pt")
        code = "import json, sys; from provex.benchmarks.own_model import _child; _child(json.loads(sys.argv[1]), sys.argv[2])"  # noqa: E501
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(job), path], capture_output=True, text=True)
        if not Path(path).exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return {"ok": False, "error": f"the process exited with {proc.returncode}: {tail[0]}"}
        return torch.load(path, weights_only=False)


def _ratio(r: dict[str, Any], default: float) -> float:
    """The forward / forward+backward time ratio timed with image result ``r`` (else ``default``)."""
    u = r.get("unit") or {}
    return u["forward_s_per_image"] / u["forward_backward_s_per_image"] if u else default


def _fb_equivalents(info: dict[str, Any], ratio: float, n: int) -> float | None:
    """Forward+backward equivalents per image: inputs with backward + forward-only inputs x ratio."""
    if "model_calls" not in info:
        return None
    back = info.get("model_calls_backward", 0)
    return (back + (info["model_calls"] - back) * ratio) / n


def _score_rc(a: argparse.Namespace, first: int, relevance: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    """RC-RDE's mask of image ``first`` against the top-k sensitivity mask, by Monte Carlo at fresh draws."""
    import provex
    from provex.rde import Components, GaussianNoise, MonteCarloDistortion, auto_grid
    from provex.reference import Reference

    model = benchmark_model(a.seed)
    x = benchmark_images(first + 1, a.size)[first:]
    comps = Components(tuple(x.shape[1:]), auto_grid(tuple(x.shape[1:])))
    area = comps.reduce(torch.ones(1, *x.shape[1:]))
    masks = comps.reduce(relevance) / area  # the component values of RC-RDE's masks
    k = max(1, round(a.rate * comps.n))
    sens = provex.explain(model, x, "sensitivity", target=target)
    score = comps.reduce(sens.relevance.abs())
    top = torch.zeros_like(score).scatter_(1, score.topk(k, 1).indices, 1.0)
    noise = GaussianNoise.from_reference(Reference.per_image_statistics(x))
    scorer = MonteCarloDistortion(model, x, target, noise, comps, a.score_draws, 64, seed=a.score_seed, fixed=True)
    image = torch.arange(x.shape[0])
    with torch.no_grad():
        d_rc = scorer(masks, image, False)[0]
        d_sens = scorer(top, image, False)[0]
    return {
        "rate": k,
        "rc_rde_distortion": float(d_rc[0]),
        "sensitivity_top_k_distortion": float(d_sens[0]),
        "rc_rde_lower": bool(d_rc[0] < d_sens[0]),
        "mask_sum": float(masks.sum()),
        "masks": masks,
        "top": top,
        "grid": comps.grid,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="provex benchmark own-model", description=__doc__)
    add_quick_argument(p, "1 image at 32 x 32")
    p.add_argument("--out", default="results/own-model")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    p.add_argument("--rate", type=float, default=0.05, help="RC-RDE's rate for the goals (a fraction)")
    p.add_argument("--score-draws", type=int, default=256, help="fresh Monte Carlo draws to score the masks")
    p.add_argument("--score-seed", type=int, default=987654)
    p.add_argument("--seed", type=int, default=0, help="the model's weights")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--jobs", type=int, default=1, help="explanations run at once, one process each (one per core at most)"
    )
    p.add_argument("--memory-check", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--merge",
        action="store_true",
        help="continue an existing results.json: keep its methods and images, run only what is missing",
    )
    a = p.parse_args(argv)
    if a.quick:
        a.images, a.size, a.score_draws = 1, 32, 64
    for name in ("images", "size", "score_draws", "threads", "jobs"):
        if getattr(a, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive")
    if not 0 < a.rate < 1:
        raise ValueError(f"--rate must be a fraction in (0, 1), got {a.rate}")
    import provex

    torch.set_num_threads(a.threads)
    out = Path(a.out)
    methods = a.methods or provex.methods()
    unknown = sorted(set(methods) - set(provex.methods()))
    if unknown:
        raise ValueError(f"--methods: unknown method(s) {unknown}")
    results: dict[str, Any] = {}
    if a.merge and (out / "results.json").exists():
        results = json.loads((out / "results.json").read_text())
        earlier = results.get("unit")
        for entry in results.get("methods", {}).values():  # older images keep their own run's unit
            for r in entry.get("per_image", {}).values():
                if earlier and "unit" not in r:
                    r["unit"] = {k: earlier[k] for k in ("forward_s_per_image", "forward_backward_s_per_image")}
                    r["unit_from"] = "the run that produced it (pass timed at that run's start and end)"
        results.pop("unit_end", None)
    settings = vars(a)
    if a.merge:  # the methods of every run merged so far, not only this one's
        settings = {**settings, "methods": sorted({*results.get("settings", {}).get("methods", []), *methods})}
    results.update({"settings": settings, "environment": environment(), "budget_fb_per_image": BUDGET})
    results.setdefault("methods", {})
    model = benchmark_model(a.seed)
    x = benchmark_images(a.images, a.size)
    chunk = x[:1].expand(16, *x.shape[1:]).contiguous()  # per-image pass times are flat beyond ~8 images
    f0, fb0 = _pass_seconds(model, chunk)
    results["unit_start"] = {"forward_s_per_image": f0, "forward_backward_s_per_image": fb0}
    print(f"one forward+backward pass: {fb0 * 1e3:.1f} ms per image (forward {f0 / fb0:.2f} of it)", flush=True)

    def unit() -> tuple[float, float]:
        """The pass times: the mean of this run's measurements so far."""
        f = [results["unit_start"]["forward_s_per_image"]]
        fb = [results["unit_start"]["forward_backward_s_per_image"]]
        if "unit_end" in results:
            f.append(results["unit_end"]["forward_s_per_image"])
            fb.append(results["unit_end"]["forward_backward_s_per_image"])
        return sum(f) / len(f), sum(fb) / len(fb)

    # one process per (method, image): results accumulate image by image (an image's explanation does
    # not depend on its batch-mates), the RC-RDE goal first, so a long run reports what it finished
    jobs = []
    if "rc-rde" in methods:
        jobs.append(("rc-rde@rate", "rc-rde", {"rate": a.rate}))
    slow = ("ord-rde", "l-rde", "mr-rde", "rc-rde")  # the rate-distortion methods last, the cheapest first
    order = sorted(methods, key=lambda m: (m != "sensitivity", slow.index(m) if m in slow else -1, m))
    jobs += [(name, name, {}) for name in order]
    goal: dict[str, Any] = {"rate_fraction": a.rate, "score_draws": a.score_draws, "score_seed": a.score_seed}
    if a.merge and "rc_rde_goal" in results:
        goal["per_image"] = dict(results["rc_rde_goal"].get("per_image", {}))
    goal_done = set(goal.get("per_image", {}))
    shown: dict[str, torch.Tensor] = {}
    todo = []
    for key, method, options in jobs:
        entry = results["methods"].setdefault(key, {"method": method, "options": options, "per_image": {}})
        if not a.merge:
            entry["per_image"] = {}
        for i in range(a.images):
            if entry["per_image"].get(str(i), {}).get("ok") and (key != "rc-rde@rate" or str(i) in goal_done):
                continue  # --merge: this image was done by an earlier run with the same settings
            todo.append((key, method, options, i))

    # the cheap methods image after image, then the rate-distortion ones image-major (every method's
    # first image before any second one), so a run cut short still covers every method
    todo.sort(key=lambda t: (t[1] in slow, t[3] if t[1] in slow else 0))

    def one(item: tuple[str, str, dict[str, Any], int]) -> dict[str, Any]:
        key, method, options, i = item
        print(f"{key} image {i} ...", flush=True)
        t0 = time.time()
        job = {"threads": a.threads, "seed": a.seed, "first": i, "images": 1, "size": a.size}
        res = _run({**job, "method": method, "options": options, "keep": key == "rc-rde@rate"})
        res["wall_s"] = time.time() - t0
        return res

    memory_after = "sensitivity" if a.memory_check and "rc-rde" in methods else None
    # results are gathered and written in this thread only, in the order the jobs finish
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        running = {pool.submit(one, item): item for item in todo}
        for fut in as_completed(running):
            key, _, _, i = running[fut]
            res, entry = fut.result(), results["methods"][key]
            if key == "rc-rde@rate" and res.get("ok"):
                scored = _score_rc(a, i, res["relevance"], res["target"])
                kept = {k: v for k, v in scored.items() if k not in ("masks", "top")}
                goal.setdefault("per_image", {})[str(i)] = kept
                if i == 0:
                    shown = {"masks": scored["masks"], "top": scored["top"], "grid": scored["grid"]}
                    # kept for the figure of later --merge runs that do not redo image 0
                    results["figure_masks"] = {
                        "masks": shown["masks"][:1].tolist(),
                        "top": shown["top"][:1].tolist(),
                        "grid": shown["grid"],
                    }
            res.pop("relevance", None)
            res.pop("target", None)
            entry["per_image"][str(i)] = res
            _summarise(results, unit(), goal)
            write_json(out / "results.json", results)
            print(f"  {_line(key, entry)}", flush=True)
    if memory_after and "memory" not in results:
        results["memory"] = _memory(a)
        write_json(out / "results.json", results)
    if not shown and "figure_masks" in results:
        kept = results["figure_masks"]
        shown = {"masks": torch.tensor(kept["masks"]), "top": torch.tensor(kept["top"]), "grid": kept["grid"]}
    if shown:
        _figure(results, x, shown["masks"], shown["top"], shown["grid"], out / "own_model.png")
    f1, fb1 = _pass_seconds(model, chunk)
    results["unit_end"] = {"forward_s_per_image": f1, "forward_backward_s_per_image": fb1}
    _summarise(results, unit(), goal)
    results["load_average_end"] = os.getloadavg()
    write_json(out / "results.json", results)
    table = _table(results)
    with atomic_write(out / "table.md") as tmp:
        Path(tmp).write_text(table + "\n")
    if not shown:
        _figure(results, x, None, None, None, out / "own_model.png")
    print(table)
    print(f"wrote {out / 'results.json'}, {out / 'table.md'} and {out / 'own_model.png'}")
    return 0


def _memory(a: argparse.Namespace) -> dict[str, Any]:
    """RC-RDE's peak memory for 1 and all images at batch_size 16, and all images at 64 (2 iterations)."""
    rows = {}
    for n, bs in ((1, 16), (a.images, 16), (a.images, 64)):
        job = {"threads": a.threads, "seed": a.seed, "images": n, "size": a.size, "method": "rc-rde",
               "options": {"rate": a.rate, "n_samples": 8, "max_iter": 1, "batch_size": bs}}  # fmt: skip
        res = _run(job)
        rows[f"images={n},batch_size={bs}"] = {
            k: res.get(k) for k in ("ok", "peak_rss_mb", "rss_before_mb", "seconds", "error")
        }
        print(f"memory images={n} batch_size={bs}: peak {res.get('peak_rss_mb', float('nan')):.0f} MiB", flush=True)
    return rows


def _summarise(results: dict[str, Any], unit: tuple[float, float], goal: dict[str, Any]) -> None:
    """Per method, over the images done so far: seconds per image in forward+backward passes,
    fb-equivalents and model calls per image, peak memory; and the RC-RDE goal."""
    f, fb = unit
    results["unit"] = {"forward_s_per_image": f, "forward_backward_s_per_image": fb, "forward_ratio": f / fb}
    for entry in results["methods"].values():
        runs = list(entry.get("per_image", {}).values())
        done = [r for r in runs if r.get("ok")]
        entry["images_done"] = len(done)
        entry["ok"] = bool(runs) and len(done) == len(runs)
        if not entry["ok"]:
            entry["error"] = next((r["error"] for r in runs if not r.get("ok")), "not run")
        if not done:
            continue
        n = len(done)
        calls = [r["info"].get("model_calls") for r in done]
        entry["seconds_per_image"] = sum(r["seconds"] for r in done) / n
        # each image against the pass time timed in its own process (older results: their run's)
        entry["fb_multiple_per_image"] = (
            sum(r["seconds"] / r.get("unit", {}).get("forward_backward_s_per_image", fb) for r in done) / n
        )
        entry["model_calls_per_image"] = None if None in calls else sum(calls) / n
        # each image with the forward / forward+backward ratio timed in its own process
        per = [] if None in calls else [_fb_equivalents(r["info"], _ratio(r, f / fb), 1) for r in done]
        entry["fb_per_image"] = sum(per) / n if per else None  # type: ignore[arg-type]
        entry["fb_per_image_max"] = max(per) if per else None  # type: ignore[type-var]
        entry["peak_rss_mb"] = max(r["peak_rss_mb"] for r in done)
        entry["info"] = done[0]["info"]
    rc = results["methods"].get("rc-rde@rate")
    if rc and goal.get("per_image"):
        per = goal["per_image"]
        goal["images_scored"] = len(per)
        goal["images_rc_rde_lower"] = sum(v["rc_rde_lower"] for v in per.values())
        goal["images_needed"] = math.ceil(7 / 8 * results["settings"]["images"])  # 7 of 8
        goal["fb_per_image"] = rc.get("fb_per_image")
        goal["fb_per_image_max"] = rc.get("fb_per_image_max")
        goal["within_budget"] = rc.get("fb_per_image_max") is not None and rc["fb_per_image_max"] <= BUDGET
        goal["complete"] = goal["images_scored"] == results["settings"]["images"]
        goal["goal_met"] = goal["within_budget"] and goal["images_rc_rde_lower"] >= goal["images_needed"]
        results["rc_rde_goal"] = goal


def _line(key: str, res: dict[str, Any]) -> str:
    if not res.get("ok"):
        return f"{key}: FAILED {res.get('error')}"
    fbe = res.get("fb_per_image")
    if not res.get("images_done"):
        return f"{key}: FAILED {res.get('error')}"
    return (
        f"{key} ({res['images_done']} images): {res['seconds_per_image']:.1f} s/image = "
        f"{res['fb_multiple_per_image']:.0f} fb passes; "
        f"{'-' if fbe is None else f'{fbe:.0f}'} fb-equivalents/image; peak {res['peak_rss_mb']:.0f} MiB"
    )


def _table(results: dict[str, Any]) -> str:
    u, st = results["unit"], results["settings"]
    lines = [
        f"ResNet-18 (random weights), 3x{st['size']}x{st['size']} images, {st['threads']} thread(s) per process, "
        f"one process per method and image, {st.get('jobs', 1)} at once; 'x fb pass' divides each image's seconds by "
        f"a forward+backward pass timed in the same process after the method (older images: their run's pass); "
        f"this run's pass at start/end = {u['forward_backward_s_per_image'] * 1e3:.0f} ms per image "
        f"(forward = {u['forward_ratio']:.2f} of it, the ratio used for fb-equivalents)",
        "",
        "| method | images | s / image | x fb pass | fb-equivalents / image (max) | model calls / image | peak MiB | "
        "estimator |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, res in sorted(results["methods"].items()):
        if not res.get("images_done"):
            lines.append(f"| {key} | 0 | failed: {res.get('error')} | | | | | |")
            continue
        fbe, calls = res.get("fb_per_image"), res.get("model_calls_per_image")
        fbe_s = "" if fbe is None else f"{fbe:.0f} ({res['fb_per_image_max']:.0f})"
        lines.append(
            f"| {key} | {res['images_done']} | {res['seconds_per_image']:.2f} | {res['fb_multiple_per_image']:.0f} | "
            f"{fbe_s} | {'' if calls is None else f'{calls:.0f}'} | "
            f"{res['peak_rss_mb']:.0f} | {res['info'].get('distortion_kind', '')} |"
        )
    goal = results.get("rc_rde_goal")
    if goal and goal.get("images_scored"):
        rate = next(iter(goal["per_image"].values()))["rate"]
        lines += [
            "",
            f"RC-RDE at rate {goal['rate_fraction']} ({rate} components): {goal['fb_per_image']:.0f} fb-equivalents "
            f"per image, at most {goal['fb_per_image_max']:.0f} (goal <= {results['budget_fb_per_image']}); Monte "
            f"Carlo distortion at {goal['score_draws']} fresh draws below the top-k sensitivity mask on "
            f"{goal['images_rc_rde_lower']} of {goal['images_scored']} images scored (goal >= "
            f"{goal['images_needed']} of {st['images']}). Goal met: {goal['goal_met']}"
            f"{'' if goal['complete'] else ' (incomplete run)'}.",
        ]
    mem = results.get("memory")
    if mem:
        peaks = "; ".join(f"{k}: {v.get('peak_rss_mb') or float('nan'):.0f} MiB" for k, v in mem.items())
        lines += ["", f"RC-RDE peak memory (2 iterations, 8 draws): {peaks}"]
    return "\n".join(lines)


def _figure(
    results: dict[str, Any],
    x: torch.Tensor,
    masks: torch.Tensor | None,
    top: torch.Tensor | None,
    grid: int | None,
    path: Path,
) -> None:
    ok = {k: v for k, v in results["methods"].items() if v.get("images_done")}
    fig = plt.figure(figsize=(13, 7))
    grid_spec = fig.add_gridspec(2, 6)
    ax = fig.add_subplot(grid_spec[0, :3])
    names = sorted(ok)
    # model calls (in forward+backward equivalents) where a method reports them: wall-clock ratios
    # move with the machine's load, counted calls do not
    counted = [ok[k]["fb_per_image"] is not None for k in names]
    values = [ok[k]["fb_per_image"] if c else ok[k]["fb_multiple_per_image"] for k, c in zip(names, counted)]
    ax.barh(names, values, color=["C0" if c else "C7" for c in counted])
    ax.axvline(BUDGET, color="k", ls=":", lw=1)
    ax.set_xscale("log")
    grey = "" if all(counted) else " (grey: wall time / one pass)"
    ax.set_xlabel(f"forward+backward equivalents per image{grey}")
    ax.set_title("cost at the defaults (dotted: RC-RDE's budget)", fontsize=9)
    goal = results.get("rc_rde_goal")
    if goal and goal.get("per_image"):
        ax = fig.add_subplot(grid_spec[0, 3:])
        d_rc = [v["rc_rde_distortion"] for v in goal["per_image"].values()]
        d_s = [v["sensitivity_top_k_distortion"] for v in goal["per_image"].values()]
        ax.scatter(d_s, d_rc, s=20)
        lim = [min(d_rc + d_s) / 1.5, max(d_rc + d_s) * 1.5]
        ax.plot(lim, lim, "k:", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("top-k sensitivity mask: distortion (fresh MC)")
        ax.set_ylabel("RC-RDE mask: distortion (fresh MC)")
        ax.set_title(f"RC-RDE lower on {goal['images_rc_rde_lower']}/{len(d_rc)} images", fontsize=9)
    if masks is not None and top is not None:
        from provex.rde import Components

        comps = Components(tuple(x.shape[1:]), grid)
        for col, (img, name, m) in enumerate(
            [(0, "image 0", None), (0, "RC-RDE mask", masks), (0, "top-k sensitivity", top)]
        ):
            ax = fig.add_subplot(grid_spec[1, 2 * col : 2 * col + 2])
            if m is None:
                ax.imshow(x[img].permute(1, 2, 0).clamp(0, 1))
            else:
                ax.imshow(comps.expand(m[img : img + 1])[0, 0], cmap="magma", vmin=0, vmax=1)
            ax.set_title(name, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    save_figure(fig, path)
