"""How dataset runs scale: throughput against workers, Ray's overhead, and the cost of resuming.

``provex benchmark run-scaling [--images 500] [--methods rc-rde] [--workers 1 2]
[--engines local ray] [--quick] [--out DIR]`` explains the first ``--images`` MNIST test
images with ``mnist-cnn`` once per (engine, workers) pair, each into a fresh run folder
(:func:`provex.run`, one torch thread per worker, shards of ``--shard-size``), and records:

* throughput (images per second of wall time, worker start-up included) per engine and
  number of workers, and the speed-up of N workers over one;
* Ray's overhead: its wall time over the local engine's at equal workers (a private Ray is
  started for each Ray run; its start-up time is reported separately). The runs alternate
  engines (local 1, Ray 1, Ray 2, local 2, ...) so that a slow drift of the machine's speed
  falls on both engines alike;
* each run's engine time: worker-seconds not spent in the methods (``wall x workers`` minus the
  sum of the methods' seconds): start-up, shipping images and maps, writing the store, the
  idle tail of the last shards. Unlike wall time, this does not move with the machine's speed;
* a paired check of the compute itself (``--paired-rounds``): the same shard computed in this
  process and in a Ray worker, alternately, so both meet the same machine;
* the time to resume a finished run: the same call again (``provex.run`` in this process)
  and the same command in a fresh interpreter (``python -m provex run``, Python and torch
  imports included); both find every shard done and compute nothing;
* that every run produced bit-identical maps;
* for scale, the seconds of one forward+backward pass of a batch of 64 images measured in
  the same process before and after, and the machine's load average.

Writes ``results.json``, ``scaling.png`` (throughput against workers, ideal linear scaling
dashed) and ``table.md`` into ``--out``. Goals (issue 14): two local workers at least 1.7x one
worker; Ray within 10 % of the local engine. They need a machine whose cores are otherwise
idle: the figures of a loaded machine measure the other jobs. ``--quick``: the same code
path on 8 images in shards of 2 (a smoke test, not a measurement).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from provex import models
from provex.benchmarks.common import add_quick_argument, environment, write_json
from provex.benchmarks.model_speed import forward_backward_seconds
from provex.io import atomic_write
from provex.options import parse_options
from provex.runs import run
from provex.runs.local import PROVEX_ROOT
from provex.runs.ray_engine import private_ray_options

__all__ = ["main"]

GOAL_SPEEDUP = 1.7
GOAL_RAY_OVERHEAD = 0.10
QUICK = {"images": 8, "shard_size": 2}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="provex benchmark run-scaling",
        description="Throughput of dataset runs against workers (local engine and Ray), Ray's overhead, resume time.",
    )
    p.add_argument("--images", type=int, default=None, help="MNIST test images (default 500; quick 8)")
    p.add_argument("--methods", nargs="+", default=["rc-rde"], metavar="NAME", help="methods (default rc-rde)")
    p.add_argument("-O", "--option", action="append", metavar="METHOD:KEY=VALUE", help="method option, repeatable")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    p.add_argument("--engines", nargs="+", choices=["local", "ray"], default=["local", "ray"])
    p.add_argument("--shard-size", type=int, default=None, help="images per shard (default 10; quick 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    p.add_argument(
        "--paired-rounds",
        type=int,
        default=None,
        help="rounds of the paired in-process / Ray-worker shard (default 3; quick 1; 0: skip)",
    )
    p.add_argument("--work", default=None, help="folder for the run stores (default: a temporary folder, removed)")
    add_quick_argument(p, "8 images in shards of 2")
    p.add_argument("--out", default="benchmarks/run_scaling/results", help="output folder")
    return p


def _loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    base = None
    for engine, marker in (("local", "o"), ("ray", "s")):
        rows = [r for r in results["runs"] if r["engine"] == engine]
        if not rows:
            continue
        ax.plot([r["workers"] for r in rows], [r["images_per_s"] for r in rows], marker=marker, label=engine)
        if engine == "local" and rows[0]["workers"] == 1:
            base = rows[0]["images_per_s"]
    if base is not None:
        ws = sorted({r["workers"] for r in results["runs"]})
        ax.plot(ws, [base * w for w in ws], "k--", lw=0.8, label="linear (local, 1 worker)")
    ax.set_xlabel("workers (one torch thread each)")
    ax.set_ylabel("images / s")
    ax.set_xticks(sorted({r["workers"] for r in results["runs"]}))
    s = results["settings"]
    ax.set_title(f"{'+'.join(s['methods'])} on {s['images']} MNIST images", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _resume_cli_seconds(argv: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (PROVEX_ROOT, os.environ.get("PYTHONPATH")) if p)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "provex", *argv], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0 or "0 images explained" not in proc.stdout:
        raise RuntimeError(f"resuming the finished run failed: {proc.stdout[-500:]} {proc.stderr[-1000:]}")
    return seconds


def _paired(model: torch.nn.Module, methods: dict[str, Any], images: int, threads: int, rounds: int) -> dict[str, Any]:
    """The first shard computed in this process and in a private Ray worker, alternately.

    Both compute the same images with the same code, at the same moments of the machine's
    life, so their ratio says whether a Ray worker computes slower, free of the drift between
    runs made minutes apart.
    """
    from provex.runs.data import resolve_data
    from provex.runs.packing import dumps, pack_model
    from provex.runs.ray_engine import _ray_task, import_ray
    from provex.runs.task import RunPlan, ShardJob, compute_context, compute_shard

    ray = import_ray()
    x, y = resolve_data("mnist-test", limit=images).batch(list(range(images)))
    job = ShardJob(0, list(range(images)), x, y)
    plan = RunPlan(methods=methods, score={}, seed=0, threads=threads)
    ray.init(logging_level="WARNING", log_to_driver=False, **private_ray_options(threads))
    try:
        refs = [ray.put(pack_model(model)), ray.put(dumps(plan))]
        remote = ray.remote(num_cpus=threads, max_retries=0)(_ray_task)
        warm = ShardJob(0, [0], x[:1], y[:1])
        ray.get(remote.remote(refs, warm))  # the worker's start-up and model are not timed
        with compute_context(threads):
            compute_shard(model, plan, warm)
        here, there = [], []
        for _ in range(rounds):
            with compute_context(threads):
                here.append(sum(r["seconds"] for r in compute_shard(model, plan, job).rows))
            msg = ray.get(remote.remote(refs, job))
            if msg[0] != "ok":
                raise RuntimeError(f"paired check: the Ray task failed: {msg[2]}")
            there.append(sum(r["seconds"] for r in msg[1].rows))
    finally:
        ray.shutdown()
    ratios = [b / a for a, b in zip(here, there, strict=True)]
    return {
        "images": images,
        "in_process_s": here,
        "ray_worker_s": there,
        "ratios": ratios,
        "median_ratio": sorted(ratios)[len(ratios) // 2],
    }


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    images = a.images if a.images is not None else (QUICK["images"] if a.quick else 500)
    shard = a.shard_size if a.shard_size is not None else (QUICK["shard_size"] if a.quick else 10)
    paired_rounds = a.paired_rounds if a.paired_rounds is not None else (1 if a.quick else 3)
    checks = {"--images": images, "--shard-size": shard, "--threads": a.threads, "--workers": min(a.workers)}
    for name, v in checks.items():
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if paired_rounds < 0:
        raise ValueError(f"--paired-rounds must be >= 0 (0: no paired check), got {paired_rounds}")
    methods: dict[str, dict[str, Any]] = {m: {} for m in a.methods}
    for pair in a.option or []:
        name, _, kv = pair.partition(":")
        if name not in methods or not kv:
            raise ValueError(f"--option must look like METHOD:KEY=VALUE for a method of --methods, got {pair!r}")
        methods[name].update(parse_options([kv]))
    workers = sorted(set(a.workers))
    model = models.load("mnist-cnn")
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="provex-run-scaling-"))
    out = Path(a.out)
    load_before = _loadavg()
    torch.set_num_threads(a.threads)
    probe = torch.rand(64, 1, 28, 28)
    fb_before = forward_backward_seconds(model, probe, repeats=3)[1]
    common = {"limit": images, "shard_size": shard, "threads": a.threads, "progress": False, "new": True}
    runs: list[dict[str, Any]] = []
    maps: dict[str, dict[str, torch.Tensor]] = {}
    ray_start = None
    paired: dict[str, Any] | None = None
    # alternate the engines, reversing their order at each worker count (local 1, Ray 1, Ray 2,
    # local 2, ...), so that a drift of the machine's speed over the hour does not favour one
    order = [
        (engine, w)
        for k, w in enumerate(workers)
        for engine in (a.engines if k % 2 == 0 else list(reversed(a.engines)))
    ]
    try:
        for engine, w in order:
            ray = None
            if engine == "ray":
                from provex.runs.ray_engine import import_ray

                ray = import_ray()
                t0 = time.perf_counter()
                ray.init(logging_level="WARNING", log_to_driver=False, **private_ray_options(w * a.threads))
                ray_start = ray_start if ray_start is not None else time.perf_counter() - t0
            folder = work / f"{engine}-w{w}"
            t0 = time.perf_counter()
            try:
                result = run(model, "mnist-test", methods, out=folder, engine=engine, workers=w, **common)
            finally:
                if ray is not None:
                    ray.shutdown()
            wall = time.perf_counter() - t0
            if not result.complete:
                raise RuntimeError(f"{engine} with {w} workers: failed shards {result.failed}")
            compute = float(result.table.seconds.sum())
            runs.append(
                {
                    "engine": engine,
                    "workers": w,
                    "wall_s": wall,
                    "images_per_s": images / wall,
                    "method_seconds_sum": compute,
                    "engine_seconds": wall * w - compute,
                    "parallel_efficiency": compute / (wall * w),
                    "load_average_after": _loadavg(),
                }
            )
            maps[f"{engine}-w{w}"] = {m: result.maps[m] for m in methods}
            print(f"{engine:5s} {w} worker(s): {wall:7.1f} s, {images / wall:.3f} images/s", flush=True)
        # resuming a finished run: nothing is recomputed
        first = f"{runs[0]['engine']}-w{runs[0]['workers']}"
        t0 = time.perf_counter()
        again = run(
            model, "mnist-test", methods, out=work / first, engine="local", workers=1, **{**common, "new": False}
        )
        resume_api = time.perf_counter() - t0
        assert again.session["shards_done"] == 0
        argv_cli = ["run", "--model", "mnist-cnn", "--data", "mnist-test", "--limit", str(images)]
        argv_cli += ["--methods", *methods, "--shard-size", str(shard), "--no-progress", "--out", str(work / first)]
        argv_cli += [f"-O{m}:{k}={v!r}" for m, o in methods.items() for k, v in o.items()]
        resume_cli = _resume_cli_seconds(argv_cli)
        if "ray" in a.engines and paired_rounds:
            paired = _paired(model, methods, shard, a.threads, paired_rounds)
            print(f"paired shard, Ray worker / in-process: {paired['ratios']}", flush=True)
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    fb_after = forward_backward_seconds(model, probe, repeats=3)[1]
    names = list(maps)
    identical = all(torch.equal(maps[names[0]][m], maps[n][m]) for n in names[1:] for m in methods)

    def wall(engine: str, w: int) -> float | None:
        return next((r["wall_s"] for r in runs if r["engine"] == engine and r["workers"] == w), None)

    speedups = {e: {str(w): wall(e, 1) / wall(e, w) for w in workers if wall(e, 1) and wall(e, w)} for e in a.engines}
    overhead = {str(w): wall("ray", w) / wall("local", w) - 1 for w in workers if wall("ray", w) and wall("local", w)}
    top = max(workers)
    goals = {
        "local_speedup_2_workers": speedups.get("local", {}).get("2"),
        "local_speedup_goal": GOAL_SPEEDUP,
        "local_speedup_met": (speedups.get("local", {}).get("2") or 0) >= GOAL_SPEEDUP,
        "ray_overhead_at_max_workers": overhead.get(str(top)),
        "ray_overhead_goal": GOAL_RAY_OVERHEAD,
        "ray_overhead_met": all(v <= GOAL_RAY_OVERHEAD for v in overhead.values()) if overhead else None,
        "resume_api_s": resume_api,
        "resume_cli_s": resume_cli,
        "identical_maps": identical,
    }
    results = {
        "settings": {
            "images": images,
            "methods": methods,
            "shard_size": shard,
            "threads_per_worker": a.threads,
            "workers": workers,
            "engines": a.engines,
            "quick": a.quick,
            "model": "mnist-cnn",
            "data": "mnist-test",
            "environment": environment(),
            "load_average_before": load_before,
            "load_average_after": _loadavg(),
            "forward_backward_batch64_s": [fb_before, fb_after],
            "ray_start_s": ray_start,
            "ray_worker_niceness": private_ray_options(1)["_system_config"]["worker_niceness"],
        },
        "runs": runs,
        "speedup": speedups,
        "ray_overhead": overhead,
        "paired": paired,
        "goals": goals,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    _plot(results, out / "scaling.png")
    fb = (fb_before + fb_after) / 2
    lines = [
        f"# run scaling: {'+'.join(methods)}, {images} MNIST test images, shards of {shard}, "
        f"{a.threads} thread(s) per worker{' (quick)' if a.quick else ''}",
        "",
        "| engine | workers | wall s | images/s | speed-up | s per image / fwd+bwd(64) | method s (sum) "
        "| engine s (share) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        sp = speedups.get(r["engine"], {}).get(str(r["workers"]))
        per_image = f"{r['wall_s'] * r['workers'] / images / fb:.1f}"
        lines.append(
            f"| {r['engine']} | {r['workers']} | {r['wall_s']:.1f} | {r['images_per_s']:.3f} | "
            f"{f'{sp:.2f}x' if sp else '-'} | {per_image} | {r['method_seconds_sum']:.1f} | "
            f"{r['engine_seconds']:.1f} ({r['engine_seconds'] / (r['wall_s'] * r['workers']) * 100:.1f} %) |"
        )
    lines += [
        "",
        "- Ray overhead against local at equal workers: "
        + ", ".join(f"{w} worker(s) {v * 100:+.1f} %" for w, v in overhead.items())
        + f" (goal <= {GOAL_RAY_OVERHEAD * 100:.0f} %); private Ray start-up {ray_start or 0:.1f} s, not included; "
        f"its workers at nice {results['settings']['ray_worker_niceness']}",
        f"- local speed-up with 2 workers: {goals['local_speedup_2_workers'] or float('nan'):.2f}x "
        f"(goal >= {GOAL_SPEEDUP}x)",
        f"- resume a finished run: {resume_api:.2f} s (provex.run in this process), "
        f"{resume_cli:.1f} s (`provex run` in a fresh interpreter)",
        f"- identical maps across all runs: {identical}",
        "- runs in this order: "
        + ", ".join(f"{r['engine']} {r['workers']}" for r in runs)
        + "; engine s: worker-seconds outside the methods (wall x workers - method s)",
        f"- one forward+backward pass of 64 images: {fb * 1e3:.1f} ms; load average before {load_before}, "
        f"after {results['settings']['load_average_after']} on {os.cpu_count()} cores",
    ]
    if paired:
        lines.append(
            f"- paired: the first {paired['images']} images computed alternately in this process and in a Ray "
            f"worker, {len(paired['ratios'])} rounds: Ray / in-process method seconds "
            + ", ".join(f"{v:.3f}" for v in paired["ratios"])
            + f" (median {paired['median_ratio']:.3f})"
        )
    table = "\n".join(lines) + "\n"
    with atomic_write(out / "table.md") as tmp:
        tmp.write_text(table)
    print(table)
    print(f"wrote {out / 'results.json'}, {out / 'scaling.png'}, {out / 'table.md'}")
    return 0 if identical else 1
