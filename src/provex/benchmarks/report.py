"""The report's size and load time: ``provex benchmark report [--images 200 1000] [--quick]``.

For each image count N: explains N MNIST test images with three cheap methods (sensitivity,
SmoothGrad, deep Taylor; real maps), scores them with the relevance-ordering test (coarse:
``--step``, ``--n-noise``), writes them as a dataset-run folder in the run-store format
(notes/conventions.md, :func:`write_run_store`), builds the report, and opens it in headless
Chromium ``--repeats`` times: the time from navigation to the page's ready mark (every figure
and the first gallery page drawn) and the file size. Baselines measured in the same browser:
an empty page, and a page holding only the Plotly bundle. Writes ``results.json``,
``table.md`` and a screenshot per N into ``--out`` (default ``benchmarks/report/results``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from provex.benchmarks.common import add_quick_argument
from provex.io import atomic_write, write_json

__all__ = ["main", "write_run_store"]


def write_run_store(
    folder: str | os.PathLike,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    explanations: Mapping[str, Any],
    *,
    model_desc: Mapping[str, Any],
    curves: Mapping[str, Any] | None = None,
    indices: Sequence[int] | None = None,
    shard_size: int = 100,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    data_spec: str = "mnist:test",
    reference: Mapping[str, Any] | None = None,
) -> Path:
    """Write explanations (and ordering curves) as a ``provex.run/1`` folder, shard by shard.

    ``explanations``: method -> :class:`~provex.Explanation` of all N images;
    ``curves``: method -> :class:`~provex.evaluate.OrderingCurve` of the same images.
    """
    import pandas as pd
    from safetensors.torch import save_file

    from provex import __version__

    folder = Path(folder)
    n = inputs.shape[0]
    idx = torch.as_tensor(list(indices) if indices is not None else range(n), dtype=torch.int64)
    manifest = {
        "format": "provex.run/1",
        "provex_version": __version__,
        "model": dict(model_desc),
        "reference": dict(reference) if reference is not None else None,
        "data": {"spec": data_spec, "n": n, "shape": list(inputs.shape[1:]), "normalize": None},
        "labels": list(class_names) if class_names is not None else None,
        "methods": {m: dict(e.info.get("options") or {}) for m, e in explanations.items()},
        "score": {"ordering": dict(next(iter(curves.values())).settings)} if curves else {},
        "seed": seed,
        "shard_size": shard_size,
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    manifest["score"] = json.loads(json.dumps(manifest["score"], default=str))
    (folder / "shards").mkdir(parents=True, exist_ok=True)
    write_json(folder / "manifest.json", manifest)
    for start in range(0, n, shard_size):
        sl = slice(start, min(start + shard_size, n))
        k = start // shard_size
        tensors: dict[str, torch.Tensor] = {
            "index": idx[sl].clone(),
            "inputs": inputs[sl].float().contiguous().clone(),
            "label": labels[sl].long().clone(),
        }
        rows = []
        for m, e in explanations.items():
            tensors[f"{m}/relevance"] = e.relevance[sl].float().contiguous().clone()
            if e.ordering is not None:
                tensors[f"{m}/ordering"] = e.ordering[sl].contiguous().clone()
            for name, t in (e.maps or {}).items():
                tensors[f"{m}/maps/{name}"] = t[sl].float().contiguous().clone()
            per_image = dict(e.info.get("per_image") or {})
            if "p_values" in e.info and "p_values" not in per_image:
                per_image["p_values"] = e.info["p_values"]
            for name, t in per_image.items():
                tensors[f"{m}/per_image/{name}"] = torch.as_tensor(t)[sl].contiguous().clone()
            c = (curves or {}).get(m)
            if c is not None:
                tensors[f"{m}/curve_distortion"] = c.per_image_distortion[sl].float().contiguous().clone()
                tensors[f"{m}/curve_accuracy"] = c.per_image_accuracy[sl].float().contiguous().clone()
                tensors["fraction_kept"] = c.fraction_kept.float().contiguous().clone()
            seconds = float(e.info.get("seconds", float("nan"))) / n
            for j in range(sl.start, sl.stop):
                rows.append(
                    {
                        "index": int(idx[j]),
                        "method": m,
                        "target": int(e.target[j]),
                        "prediction": int(e.prediction[j]) if e.prediction is not None else -1,
                        "label": int(labels[j]),
                        "seconds": seconds,
                        "model_calls": float(e.info.get("model_calls", float("nan"))) / n,
                        "seed": seed + int(idx[j]),
                        "auc_distortion": float(c.per_image_auc_distortion[j]) if c is not None else float("nan"),
                        "auc_accuracy": float(c.per_image_auc_accuracy[j]) if c is not None else float("nan"),
                    }
                )
        with atomic_write(folder / "shards" / f"shard-{k:06d}.safetensors") as tmp:
            save_file(tensors, str(tmp))
        with atomic_write(folder / "shards" / f"shard-{k:06d}.parquet") as tmp:
            pd.DataFrame(rows).to_parquet(tmp, index=False)
    return folder


METHODS = {"sensitivity": {}, "smoothgrad": {"n_samples": 8, "seed": 0}, "deep-taylor": {}}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="provex benchmark report", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, nargs="+", default=[200, 1000], help="image counts (default 200 1000)")
    p.add_argument("--step", type=int, default=56, help="ordering test: components replaced per step")
    p.add_argument("--n-noise", type=int, default=2, help="ordering test: noise draws per step")
    p.add_argument("--repeats", type=int, default=3, help="page loads per N (median reported)")
    p.add_argument("--data", default=None, help="MNIST folder (default $PROVEX_DATA/mnist)")
    p.add_argument("--work", default=None, help="where the run folders and pages go (default OUT/work)")
    add_quick_argument(p, "N = 50 only, one page load")
    p.add_argument("--reuse", action="store_true", help="reuse run folders an earlier call left in --work")
    p.add_argument("--out", default="benchmarks/report/results")
    return p


def _load_times(page_path: Path, repeats: int, shot: Path | None) -> dict[str, Any]:
    from provex.reporting.browser import open_report

    times, painted, walls, busy, errors = [], [], [], [], []
    for r in range(repeats):
        with open_report(page_path) as res:
            times.append(res["seconds"])
            painted.append(res["painted_seconds"] if res["painted_seconds"] is not None else res["seconds"])
            walls.append(res["wall_seconds"])
            busy.append(res["busy_seconds"])
            errors += res["errors"]
            if shot is not None and r == 0:
                res["page"].screenshot(path=str(shot))
    return {
        "ready_s": times,
        "ready_median_s": statistics.median(times),
        "painted_s": painted,
        "painted_median_s": statistics.median(painted),
        "busy_s": busy,
        "busy_median_s": statistics.median(busy),
        "wall_s": walls,
        "errors": errors,
    }


def _baseline_pages(folder: Path) -> dict[str, Path]:
    from importlib import resources

    js = resources.files("provex.reporting").joinpath("static", "plotly-cartesian.min.js").read_text()
    mark = "<script>window.provexReady = performance.now();</script>"
    pages = {
        "empty page": f"<!doctype html><html><body><p>empty</p>{mark}</body></html>",
        "Plotly bundle only": f"<!doctype html><html><body><script>{js}</script>{mark}</body></html>",
    }
    out = {}
    for name, html in pages.items():
        p = folder / (name.replace(" ", "-") + ".html")
        p.write_text(html)
        out[name] = p
    return out


def table_lines(results: Mapping[str, Any]) -> list[str]:
    """``table.md``: size, ready time, main-thread task time and build time per page."""
    ratio = "ready / Plotly bundle only"
    bundle = results["baselines"]["Plotly bundle only"]["ready_median_s"]
    lines = [
        "| page | file size (MB) | first screen painted (s, median) | ready (s, median) | main-thread busy (s, "
        f"median) | {ratio} | build (s) |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {name} | - | - | {b['ready_median_s']:.2f} | {b['busy_median_s']:.2f} | "
            f"{b['ready_median_s'] / bundle:.2f} | - |"
            for name, b in results["baselines"].items()
        ),
        *(
            f"| {r['images']} images x {r['methods']} methods | {r['file_mb']:.2f} | "
            f"{r.get('painted_median_s', float('nan')):.2f} | {r['ready_median_s']:.2f} | "
            f"{r['busy_median_s']:.2f} | {r['ready_median_s'] / bundle:.2f} | {r['build_s']:.1f} |"
            for r in results["runs"]
        ),
        "",
        f"Load average (1, 5, 15 min) at start {tuple(round(v, 2) for v in results['load_average_start'])}, "
        f"end {tuple(round(v, 2) for v in results['load_average_end'])}; "
        f"{results['environment'].get('cpu_count')} CPU cores shared with other jobs. ready: navigation start to "
        "the page's ready mark (first gallery page and the figures within the first screen drawn by Plotly); first "
        "screen painted: navigation start to the paint of the cards, the selected image's maps as pictures and the "
        "tables, before plotly.js is evaluated; main-thread "
        "busy: Chromium's TaskDuration when the ready mark was read (time inside tasks, idle waits excluded; also "
        "stretched by load). Medians of the page loads (repeats in results.json).",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    from provex import models
    from provex.benchmarks.common import environment
    from provex.data.mnist import load_mnist
    from provex.evaluate import relevance_ordering
    from provex.models.spec import describe_model
    from provex.registry import explain
    from provex.reporting import write_report

    a = _parser().parse_args(argv)
    counts = [50] if a.quick else a.images
    repeats = 1 if a.quick else a.repeats
    out = Path(a.out)
    work = Path(a.work) if a.work else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    model = models.load("mnist-cnn")
    x_all, y_all = load_mnist("test", root=a.data)
    results: dict[str, Any] = {
        "settings": {**vars(a), "methods": METHODS},
        "environment": environment(),
        "load_average_start": os.getloadavg(),
        "runs": [],
    }
    base = {}
    for name, p in _baseline_pages(work).items():
        base[name] = _load_times(p, repeats, None)
    results["baselines"] = base
    for n in counts:
        x, y = x_all[:n], y_all[:n]
        run = work / f"run-{n}"
        map_s = score_s = float("nan")
        if not (a.reuse and (run / "manifest.json").is_file()):
            t0 = time.perf_counter()
            exps = {m: explain(model, x, m, **opts) for m, opts in METHODS.items()}
            map_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            curves = {
                m: relevance_ordering(model, x, e, step=a.step, n_samples=a.n_noise, seed=0) for m, e in exps.items()
            }
            score_s = time.perf_counter() - t0
            write_run_store(run, x, y, exps, model_desc=describe_model(model), curves=curves, shard_size=100)
        t0 = time.perf_counter()
        page = write_report([run], work / f"report-{n}.html", labels=[str(k) for k in range(10)])
        build_s = time.perf_counter() - t0
        load = _load_times(page, repeats, out / f"page-{n}.png")
        entry = {
            "images": n,
            "methods": len(METHODS),
            "file_bytes": page.stat().st_size,
            "file_mb": page.stat().st_size / 1e6,
            "build_s": build_s,
            "maps_s": map_s,
            "scoring_s": score_s,
            **load,
        }
        results["runs"].append(entry)
        print(
            f"{n} images x {len(METHODS)} methods: {entry['file_mb']:.2f} MB, built in {build_s:.1f} s, "
            f"first screen painted in {entry['painted_median_s']:.2f} s, ready in {entry['ready_median_s']:.2f} s "
            f"(medians of {repeats}); errors: {len(entry['errors'])}"
        )
    results["load_average_end"] = os.getloadavg()
    write_json(out / "results.json", results)
    lines = table_lines(results)
    with atomic_write(out / "table.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0
