"""Train the shipped ``crosses-cnn`` on freshly generated crosses images, and measure it.

``provex train crosses-cnn --seed 0`` calls :func:`train_crosses_cnn`: every step draws a new
batch from :func:`provex.data.crosses` (half negatives, positives with 1-9 crosses) with a seed
derived from ``(seed, step)``, so there is no data folder and no over-fitting to a fixed set.
Accuracy is measured on images generated from seeds the training never uses
(``EVAL_SEED_OFFSET + seed``). The card stores the per-pixel mean and variance of 1,000
training images; h-Shap uses the mean as its default background (the paper's reference is the
mean of 100 training images).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from provex.data.crosses import crosses
from provex.models import WEIGHTS_DIR, ModelCard, save_weights
from provex.models.crosses_cnn import CrossesCNN
from provex.models.train import accuracy

__all__ = ["EVAL_SEED_OFFSET", "evaluate", "fresh_accuracy", "train_crosses_cnn"]

EVAL_SEED_OFFSET = 1_000_000_000
"""Evaluation images come from seeds at or above this offset; training seeds stay below it."""

_STATS_SEED_OFFSET = 999_999_999


def _batch_seed(seed: int, step: int) -> int:
    return seed * 1_000_003 + step


def fresh_accuracy(
    model: nn.Module, n: int = 5000, seed: int = 0, device: str | torch.device = "cpu", chunk: int = 1000
) -> float:
    """Accuracy on ``n`` newly generated images (half negatives, 1-9 crosses otherwise)."""
    correct = 0
    for k, start in enumerate(range(0, n, chunk)):
        m = min(chunk, n - start)
        d = crosses(m, seed=EVAL_SEED_OFFSET + seed * 1000 + k)
        correct += round(accuracy(model, d.images, d.labels, batch_size=500, device=device) * m)
    return correct / n


def train_crosses_cnn(
    steps: int = 1500,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 3e-3,
    device: str | torch.device = "cpu",
    out: str | Path | None = None,
    progress: bool = True,
    eval_images: int = 5000,
) -> tuple[nn.Module, ModelCard]:
    """Train :class:`CrossesCNN` with Adam and a one-cycle schedule; save it if ``out`` is given."""
    if steps <= 0 or batch_size <= 0 or eval_images <= 0:
        raise ValueError("steps, batch_size and eval_images must be positive")
    torch.manual_seed(seed)
    model = CrossesCNN().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    bar = tqdm(range(steps), desc="train crosses-cnn", disable=not progress)
    for step in bar:
        d = crosses(batch_size, seed=_batch_seed(seed, step))
        xb, yb = d.images.to(device), d.labels.to(device)
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        sched.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    seconds = time.perf_counter() - start
    model.eval()
    acc = fresh_accuracy(model, n=eval_images, seed=seed, device=device)
    stats = crosses(1000, seed=_STATS_SEED_OFFSET - seed).images
    card = ModelCard(
        name="crosses-cnn",
        description="cross detector for provex.data.crosses images (3 x 100 x 120, class 1 = contains a cross)",
        config={},
        data_mean=stats.mean(0),
        data_var=stats.var(0),
        metrics={"fresh_accuracy": acc, "eval_images": float(eval_images)},
        training={
            "seed": seed,
            "steps": steps,
            "batch_size": batch_size,
            "lr": lr,
            "optimizer": "Adam + one-cycle",
            "data": "provex.data.crosses, a fresh batch per step (half negatives, 1-9 crosses)",
            "data_mean": "mean of 1000 generated training images",
            "seconds": round(seconds, 1),
            "torch": str(torch.__version__),
            "command": f"provex train crosses-cnn --steps {steps} --seed {seed}",
        },
    )
    model = model.cpu()
    if out is not None:
        save_weights(model, card, out)
    return model, card


def evaluate(model: nn.Module, root: str | Path | None = None, device: str | torch.device = "cpu") -> dict[str, float]:
    """Accuracy on 5,000 freshly generated images (``provex models eval crosses-cnn``); ``root`` is unused."""
    n = 5000
    return {"fresh_accuracy": fresh_accuracy(model.to(device), n=n, seed=0, device=device), "n_images": float(n)}


def main(argv: list[str] | None = None) -> int:
    """``provex train crosses-cnn [--steps S] [--seed S] [--out FILE]``."""
    import argparse

    p = argparse.ArgumentParser(prog="provex train crosses-cnn", description=__doc__)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--out",
        default="provex-out/crosses-cnn.pt",
        help=f"weights file to write (the shipped one is {WEIGHTS_DIR / 'crosses-cnn.pt'})",
    )
    a = p.parse_args(argv)
    _, card = train_crosses_cnn(a.steps, a.seed, a.batch_size, a.lr, a.device, a.out)
    print(
        f"crosses-cnn: accuracy {card.metrics['fresh_accuracy']:.4f} on {int(card.metrics['eval_images'])} fresh "
        f"images after {card.training['seconds']} s -> {a.out}"
    )
    return 0
