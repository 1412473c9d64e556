"""What ``provex.explain`` adds to a direct library call, and LRP conservation on a ResNet.

``provex benchmark explain-cost [--quick] [--size 224] [--repeats 7] [--out DIR]`` on
torchvision's ``resnet18`` with random weights:

* time of ``provex.explain(model, x, "sensitivity")`` (target: the predicted class) against a
  direct captum ``Saliency(model).attribute(x, target=t, abs=False)`` call (target known) and
  against one forward pass, median of interleaved repeats; the ratio to captum is the cost of
  provex's checks and bookkeeping (it was 1.45x when ``explain`` ran a separate prediction
  pass);
* LRP conservation: sum of the input relevance / target logit for ``deep-taylor`` and
  ``lrp-alpha-beta``, with provex's canonization and with the same zennit composite applied
  to the raw model (what provex did before: each residual addition doubles the total).

``--quick`` uses 64 x 64 images and 3 repeats. Writes ``results.json``, ``explain_cost.png``
and ``table.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import provex
from provex.benchmarks.common import add_quick_argument, environment, print_table, write_json

__all__ = ["main"]


def _timings(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> dict[str, float]:
    from captum.attr import Saliency

    with torch.no_grad():
        target = model(x).argmax(1)

    def direct() -> None:
        Saliency(model).attribute(x, target=target, abs=False)

    def ours() -> None:
        provex.explain(model, x, "sensitivity")

    def forward() -> None:
        with torch.no_grad():
            model(x)

    calls = {"captum": direct, "provex": ours, "forward": forward}
    for fn in calls.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    out = {k: statistics.median(v) for k, v in times.items()}
    # paired ratios (same repeat, back to back): robust to the load drifting during the run
    paired = sorted(p / c for p, c in zip(times["provex"], times["captum"]))
    out["paired_ratio_median"] = statistics.median(paired)
    out["paired_ratio_quartiles"] = [paired[len(paired) // 4], paired[(3 * len(paired)) // 4]]
    return out


def _raw_zennit(model: torch.nn.Module, x: torch.Tensor, method: str) -> torch.Tensor:
    """The composite of ``method`` on the raw model, without provex's canonization."""
    from zennit.composites import LayerMapComposite, SpecialFirstLayerMapComposite, layer_map_base
    from zennit.rules import AlphaBeta, Epsilon, ZBox, ZPlus
    from zennit.types import Convolution
    from zennit.types import Linear as AnyLinear

    if method == "deep-taylor":
        flat = x.flatten(1)
        composite = SpecialFirstLayerMapComposite(
            layer_map=[*layer_map_base(), (AnyLinear, ZPlus(zero_params=["bias"]))],
            first_map=[(AnyLinear, ZBox(low=flat.min(1).values, high=flat.max(1).values))],
        )
    else:
        composite = LayerMapComposite(
            layer_map=[*layer_map_base(), (Convolution, AlphaBeta(2.0, 1.0)), (torch.nn.Linear, Epsilon(0.2))]
        )
    with torch.enable_grad(), composite.context(model) as modified:
        xg = x.detach().clone().requires_grad_(True)
        out = modified(xg)
        t = out.argmax(1)
        start = torch.zeros_like(out).scatter_(1, t[:, None], out.gather(1, t[:, None]))
        (rel,) = torch.autograd.grad(out, xg, grad_outputs=start.detach())
    logit = out.detach().gather(1, t[:, None])[:, 0]
    return rel.flatten(1).sum(1) / logit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="provex benchmark explain-cost", description=__doc__)
    add_quick_argument(p, "64 x 64 images, 3 repeats")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--images", type=int, default=4, help="images for the conservation check")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="benchmarks/explain_cost/results")
    a = p.parse_args(argv)
    for name in ("size", "repeats", "images"):
        if getattr(a, name) < 1:
            raise ValueError(f"--{name} must be a positive integer")
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    size, repeats = (64, 3) if a.quick else (a.size, a.repeats)
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    load_before = os.getloadavg()
    x1 = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    t = _timings(model, x1, repeats)
    with torch.no_grad():
        calls = provex.explain(model, x1, "sensitivity").info["model_calls"]
    timing = {
        **{f"{k}_seconds": v for k, v in t.items() if k in ("captum", "provex", "forward")},
        "provex_over_captum": t["provex"] / t["captum"],
        "provex_over_captum_paired_median": t["paired_ratio_median"],
        "provex_over_captum_paired_quartiles": t["paired_ratio_quartiles"],
        "provex_model_calls_per_image": calls,
        "provex_over_forward": t["provex"] / t["forward"],
        "captum_over_forward": t["captum"] / t["forward"],
        "load_average": [load_before, os.getloadavg()],
    }
    xs = torch.randn(a.images, 3, size, size, generator=torch.Generator().manual_seed(2))
    conservation: dict[str, Any] = {}
    rows = [["sensitivity time", "provex / captum (medians)", round(timing["provex_over_captum"], 3)]]
    rows.append(["sensitivity time", "provex / captum (paired median)", round(t["paired_ratio_median"], 3)])
    rows.append(["sensitivity passes", "model_calls per image", calls])
    rows.append(["sensitivity time", "provex / forward", round(timing["provex_over_forward"], 3)])
    for method in ("deep-taylor", "lrp-alpha-beta"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exp = provex.explain(model, xs, method)
            raw = _raw_zennit(model, xs, method)
        ours = exp.info["per_image"]["conservation"]
        conservation[method] = {"provex": ours.tolist(), "zennit_without_canonization": raw.tolist()}
        rows.append([f"{method} sum R / logit", "provex", [round(v, 4) for v in ours.tolist()]])
        rows.append([f"{method} sum R / logit", "raw zennit", [round(v, 2) for v in raw.tolist()]])
    out = Path(a.out)
    write_json(
        out / "results.json",
        {
            "settings": {**vars(a), "size": size, "repeats": repeats},
            "environment": environment(),
            "timing": timing,
            "conservation": conservation,
        },
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from provex.viz.heatmap import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].bar(["forward", "captum", "provex"], [t["forward"], t["captum"], t["provex"]])
    axes[0].set_ylabel("seconds (median)")
    axes[0].set_title(f"sensitivity, resnet18 {size}x{size}")
    labels, values = [], []
    for method, d in conservation.items():
        for kind, v in d.items():
            labels.append(f"{method}\n{'provex' if kind == 'provex' else 'raw zennit'}")
            values.append(statistics.mean(v))
    axes[1].bar(labels, values)
    axes[1].set_yscale("log")
    axes[1].axhline(1.0, color="k", lw=0.8)
    axes[1].set_title("sum of relevance / logit (1 = conserved)")
    axes[1].tick_params(axis="x", labelsize=7)
    save_figure(fig, out / "explain_cost.png")
    text = print_table(rows, ["measure", "what", "value"])
    (out / "table.md").write_text(
        f"# explain cost (resnet18, random weights, {size}x{size})\n\n"
        f"`provex benchmark explain-cost {' '.join(argv or [])}`; load average {load_before}\n\n```\n{text}\n```\n"
    )
    print(f"wrote {out / 'results.json'}, {out / 'explain_cost.png'}, {out / 'table.md'}")
    return 0
