"""Every registered method, default options, on classifiers this project has never used.

``provex benchmark unseen-models [--quick] [--images N] [--timeout S] [--out DIR]`` builds
classifiers with random weights that no zoo model, test or benchmark of provex uses, runs
every method of ``provex.methods()`` on them with its default options (``progress=False``
only) and records, per (model, method): ``ok`` (a finite map of the input's shape),
``refused`` (a one-line ``ValueError`` naming the argument: the method cannot serve that
model, and says why), ``error`` (any other exception: a bug) or ``timeout``. No reference
distribution is given, so the methods that need one fall back to each image's own
statistics, as they would for a new user.

Models: torchvision ``mobilenet_v3_small`` and ``efficientnet_b0`` (64 x 64), a torchvision
``VisionTransformer`` (GELU, LayerNorm, attention; 32 x 32, patch 8), a DenseNet-style model
with concatenated features and pre-activation BatchNorm (32 x 32), and a 1-channel 20 x 20
CNN with LeakyReLU, MaxPool and Dropout. ``--quick`` runs the two smallest (the ViT and the
1-channel CNN) on one image. Writes ``results.json``, ``unseen_models.png`` (the status
matrix) and ``table.md``.
"""

from __future__ import annotations

import argparse
import signal
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

import provex
from provex.benchmarks.common import add_quick_argument, environment, print_table, write_json

__all__ = ["MODELS", "main"]


class DenseBlock(nn.Module):
    """Pre-activation dense block: each layer sees the concatenation of all earlier outputs."""

    def __init__(self, channels: int, growth: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.BatchNorm2d(channels + i * growth), nn.ReLU(), nn.Conv2d(channels + i * growth, growth, 3, padding=1)
            )
            for i in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class DenseNetLike(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block1 = DenseBlock(8, 6, 3)
        self.trans = nn.Sequential(nn.BatchNorm2d(26), nn.ReLU(), nn.Conv2d(26, 12, 1), nn.AvgPool2d(2))
        self.block2 = DenseBlock(12, 6, 3)
        self.norm = nn.BatchNorm2d(30)
        self.head = nn.Linear(30, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block2(self.trans(self.block1(self.stem(x))))
        h = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.norm(h)), 1)
        return self.head(torch.flatten(h, 1))


def _gray_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 5, padding=2),
        nn.LeakyReLU(0.1),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.LeakyReLU(0.1),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(16 * 5 * 5, 7),
    )


def _vit() -> nn.Module:
    from torchvision.models import VisionTransformer

    return VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=5
    )


def _tv(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return getattr(torchvision.models, name)(weights=None, num_classes=10)

    return build


# name -> (builder, input shape (C, H, W))
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, int, int]]] = {
    "gray-cnn-20": (_gray_cnn, (1, 20, 20)),
    "tiny-vit-32": (_vit, (3, 32, 32)),
    "densenet-like-32": (DenseNetLike, (3, 32, 32)),
    "mobilenet_v3_small-64": (_tv("mobilenet_v3_small"), (3, 64, 64)),
    "efficientnet_b0-64": (_tv("efficientnet_b0"), (3, 64, 64)),
}
QUICK_MODELS = ("gray-cnn-20", "tiny-vit-32")


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    def stop(_signum: int, _frame: Any) -> None:
        raise TimeoutError(f"no result within {seconds:g} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_one(model: nn.Module, x: torch.Tensor, method: str, timeout: float) -> dict[str, Any]:
    """Status, message and costs of one method on one model at default options."""
    spec = provex.registry.get_method(method)
    opts = {"progress": False} if "progress" in spec.options else {}
    start = time.perf_counter()
    row: dict[str, Any] = {"method": method}
    try:
        with warnings.catch_warnings(), _time_limit(timeout):
            warnings.simplefilter("ignore")
            exp = provex.explain(model, x, method, **opts)
        rel = exp.relevance
        finite = bool(torch.isfinite(rel).all())
        row.update(
            status="ok" if finite and rel.shape == x.shape else "error",
            message="" if finite else "non-finite relevance",
            model_calls=exp.info.get("model_calls"),
            nonzero_fraction=float((rel != 0).float().mean()),
        )
    except ValueError as err:
        row.update(status="refused", message=str(err).splitlines()[0])
    except TimeoutError as err:
        row.update(status="timeout", message=str(err))
    except Exception as err:  # a crash: record it with its place
        where = traceback.extract_tb(err.__traceback__)[-1]
        row.update(status="error", message=f"{type(err).__name__}: {err} ({Path(where.filename).name}:{where.lineno})")
    row["seconds"] = time.perf_counter() - start
    return row


def _plot(results: dict[str, list[dict[str, Any]]], methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from provex.viz.heatmap import save_figure

    codes = {"ok": 0, "refused": 1, "timeout": 2, "error": 3}
    names = list(results)
    grid = [[codes[next(r for r in results[m] if r["method"] == meth)["status"]] for meth in methods] for m in names]
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(methods), 1 + 0.45 * len(names)))
    ax.imshow(grid, cmap=ListedColormap(["#4caf50", "#ffb300", "#9e9e9e", "#e53935"]), vmin=0, vmax=3)
    ax.set_xticks(range(len(methods)), methods, rotation=60, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, ["ok", "ref", "t/o", "ERR"][v], ha="center", va="center", fontsize=7)
    ax.set_title("default options, random weights: ok / refused / timeout / error")
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="provex benchmark unseen-models", description=__doc__)
    add_quick_argument(p, "the two smallest models, one image")
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=None)
    p.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    p.add_argument("--images", type=int, default=2, help="images per model (default 2)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per (model, method) before giving up")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="benchmarks/unseen_models/results")
    a = p.parse_args(argv)
    if a.images < 1:
        raise ValueError("--images must be a positive integer")
    if a.timeout <= 0:
        raise ValueError("--timeout must be positive")
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    names = list(QUICK_MODELS) if a.quick and a.models is None else (a.models or list(MODELS))
    images = 1 if a.quick else a.images
    methods = a.methods or provex.methods()
    unknown = sorted(set(methods) - set(provex.methods()))
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}")
    results: dict[str, list[dict[str, Any]]] = {}
    rows = []
    for name in names:
        build, shape = MODELS[name]
        torch.manual_seed(0)
        model = build().eval()
        x = torch.rand(images, *shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            t0 = time.perf_counter()
            model(x)
            forward = time.perf_counter() - t0
        results[name] = []
        for method in methods:
            row = run_one(model, x, method, a.timeout)
            row["seconds_over_forward"] = row["seconds"] / max(forward, 1e-9)
            results[name].append(row)
            rows.append(
                [name, method, row["status"], round(row["seconds"], 2), row.get("model_calls"), row["message"][:90]]
            )
            print(
                f"{name:24s} {method:16s} {row['status']:8s} {row['seconds']:8.2f} s  {row['message'][:100]}",
                flush=True,
            )
    out = Path(a.out)
    counts = {
        s: sum(r["status"] == s for rs in results.values() for r in rs) for s in ("ok", "refused", "timeout", "error")
    }
    settings = {**vars(a), "images": images, "models": {n: list(MODELS[n][1]) for n in names}}
    write_json(
        out / "results.json", {"settings": settings, "environment": environment(), "counts": counts, "results": results}
    )
    _plot(results, methods, out / "unseen_models.png")
    text = print_table(rows, ["model", "method", "status", "seconds", "model_calls", "message"])
    header = f"# unseen models: {counts}\n\n`provex benchmark unseen-models {' '.join(argv or [])}`\n\n```\n"
    (out / "table.md").write_text(header + text + "\n```\n")
    print(f"{counts}; wrote {out / 'results.json'}, {out / 'unseen_models.png'}, {out / 'table.md'}")
    return 0
