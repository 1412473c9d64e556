"""Forward and forward+backward time of a zoo model: the unit other timings are quoted in.

``provex benchmark model-speed [--model mnist-cnn] [--out DIR]`` times batches of 1, 64 and
512 and writes ``results.json`` and ``model_speed.png``. Other benchmarks quote their
timings as ratios to "one forward+backward pass of a batch of 64" measured in the same run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from provex import models
from provex.benchmarks.common import add_quick_argument, environment, print_table, time_call, write_json
from provex.viz.heatmap import save_figure

__all__ = ["forward_backward_seconds", "main"]


def forward_backward_seconds(model: torch.nn.Module, x: torch.Tensor, repeats: int = 5) -> tuple[float, float]:
    """Median seconds of one forward pass and of one forward+backward pass (input gradient)."""

    def fwd() -> None:
        with torch.no_grad():
            model(x)

    def fwd_bwd() -> None:
        xg = x.detach().requires_grad_(True)
        out = model(xg).max(1).values.sum()
        torch.autograd.grad(out, xg)

    return time_call(fwd, repeats), time_call(fwd_bwd, repeats)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="provex benchmark model-speed", description=__doc__)
    p.add_argument("--model", default="mnist-cnn")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default 1 64 512")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="results/model-speed")
    add_quick_argument(p, "batch sizes 1 and 64")
    a = p.parse_args(argv)
    if a.batch_sizes is None:
        a.batch_sizes = [1, 64] if a.quick else [1, 64, 512]
    if any(b <= 0 for b in a.batch_sizes):
        raise ValueError("--batch-sizes must be positive")
    model = models.load(a.model, device=a.device)
    shape = tuple(models.load(a.model).card.data_mean.shape)  # type: ignore[union-attr]
    rows, results = [], []
    for b in a.batch_sizes:
        x = torch.rand(b, *shape, device=a.device)
        f, fb = forward_backward_seconds(model, x, a.repeats)
        results.append({"batch_size": b, "forward_s": f, "forward_backward_s": fb})
        rows.append([b, f * 1e3, fb * 1e3, f / b * 1e3, fb / b * 1e3])
    print_table(rows, ["batch", "fwd ms", "fwd+bwd ms", "fwd ms/img", "fwd+bwd ms/img"])
    out = Path(a.out)
    write_json(out / "results.json", {"settings": vars(a), "environment": environment(), "results": results})
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bs = [r["batch_size"] for r in results]
    ax.loglog(bs, [r["forward_s"] / r["batch_size"] * 1e3 for r in results], "o-", label="forward")
    ax.loglog(bs, [r["forward_backward_s"] / r["batch_size"] * 1e3 for r in results], "s-", label="forward+backward")
    ax.set_xlabel("batch size")
    ax.set_ylabel("ms per image")
    ax.set_title(f"{a.model} on {a.device}")
    ax.legend()
    save_figure(fig, out / "model_speed.png")
    print(f"wrote {out / 'results.json'} and {out / 'model_speed.png'}")
    return 0
