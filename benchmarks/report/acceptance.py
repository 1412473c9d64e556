"""Issue 15 acceptance: a report from real results, opened in headless Chromium, with screenshots.

Inputs: a five-method MNIST run on 20 of the shipped test images (2 per class) (sensitivity, SmoothGrad, MR-RDE,
h-Shap, SHAP-XRT; maps scored by the relevance-ordering test), the committed ordering
benchmark results, a concept-test result and the LPN benchmark results. The run is computed
with the dataset-run engine (``provex.runs``) when it is installed, else with ``provex.explain``
and written in the run-store format by ``provex.benchmarks.report.write_run_store``.

    PYTHONPATH=src python benchmarks/report/acceptance.py [--work DIR] [--concepts DIR]

Writes ``benchmarks/report/{gallery,curves,concepts}.png`` and ``acceptance.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
METHODS = {
    "sensitivity": {"absolute": True},
    "smoothgrad": {"n_samples": 64, "noise_level": 0.3, "square": True, "seed": 0},
    "mr-rde": {"seed": 0, "progress": False},
    "h-shap": {"min_size": 2, "threshold": 1e-6},
    "shap-xrt": {"K": 39, "n_samples": 5, "shapley": False, "seed": 0},
}
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def make_run(folder: Path, step: int, n_noise: int, n_images: int) -> dict:
    import provex
    from provex.benchmarks.report import write_run_store
    from provex.data.samples import sample_indices
    from provex.evaluate import relevance_ordering
    from provex.models.spec import describe_model

    model = provex.load_model("mnist-cnn")
    x, y = provex.data.samples("mnist")
    keep = torch.cat([torch.nonzero(y == c)[: max(1, n_images // 10), 0] for c in range(10)])[:n_images]
    x, y = x[keep], y[keep]
    timing = {}
    exps, curves = {}, {}
    for m, opts in METHODS.items():
        t0 = time.perf_counter()
        exps[m] = provex.explain(model, x, m, **opts)
        timing[f"{m} maps s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        curves[m] = relevance_ordering(model, x, exps[m], step=step, n_samples=n_noise, seed=0)
        timing[f"{m} ordering s"] = time.perf_counter() - t0
        print(m, {k: round(v, 1) for k, v in timing.items() if k.startswith(m)}, flush=True)
    write_run_store(
        folder,
        x,
        y,
        exps,
        model_desc=describe_model(model),
        curves=curves,
        indices=[sample_indices("mnist")[int(i)] for i in keep],
        shard_size=25,
        class_names=DIGITS,
        data_spec="provex.data.samples('mnist')",
    )
    return timing


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--work", default=str(HERE / "results" / "work"))
    p.add_argument("--concepts", default=str(HERE / "inputs" / "concepts"), help="a test-concepts results folder")
    p.add_argument("--images", type=int, default=20, help="shipped samples, as many per class (default 20)")
    p.add_argument("--step", type=int, default=14)
    p.add_argument("--n-noise", type=int, default=16)
    p.add_argument("--skip-run", action="store_true", help="reuse WORK/run")
    a = p.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    old = HERE / "acceptance.json"
    timing = json.loads(old.read_text()).get("run_timing_s", {}) if a.skip_run and old.is_file() else {}
    if not a.skip_run:
        timing = make_run(work / "run", a.step, a.n_noise, a.images)
    concepts = Path(a.concepts)
    from provex.reporting import write_report
    from provex.reporting.browser import open_report

    inputs = [
        work / "run",
        ROOT / "benchmarks" / "relevance_ordering" / "results",
        concepts,
        ROOT / "benchmarks" / "lpn" / "results",
    ]
    t0 = time.perf_counter()
    page = write_report(inputs, work / "report.html", title="provex report: mnist-cnn", labels=DIGITS)
    build_s = time.perf_counter() - t0
    shots = {}
    with open_report(page, width=1500, height=1100) as r:
        pg = r["page"]
        pg.evaluate("window.provexDrawAll()")
        pg.click('#gallery-0-root .card[data-i="8"]')
        pg.wait_for_timeout(1500)
        for name, sel in (("gallery", "#gallery-0"), ("curves", "#ordering-run-0"), ("concepts", "#concepts-0")):
            out = HERE / f"{name}.png"
            pg.locator(sel).screenshot(path=str(out))
            shots[name] = str(out.relative_to(ROOT))
        n_curves = pg.evaluate(
            "[...document.querySelectorAll('[id^=ordering]')].filter(d => d.data)"
            ".map(d => [d.id, d.data.filter(t => t.meta === 'curve').length])"
        )
        result = {
            "inputs": [
                str(Path(i).resolve().relative_to(ROOT)) if ROOT in Path(i).resolve().parents else str(i)
                for i in inputs
            ],
            "file_mb": page.stat().st_size / 1e6,
            "build_s": build_s,
            "ready_s": r["seconds"],
            "console_errors": r["errors"],
            "curves_per_chart": n_curves,
            "screenshots": shots,
            "run_timing_s": timing,
            "load_average": os.getloadavg(),
            "ordering_scoring": {"step": a.step, "n_noise": a.n_noise},
            "images": a.images,
            "methods": METHODS,
        }
    (HERE / "acceptance.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "methods"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
