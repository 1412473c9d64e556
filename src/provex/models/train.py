"""Reproduce the shipped MNIST CNN from the IDX files with a seed, and measure accuracy.

``provex train mnist-cnn --seed 0`` calls :func:`train_mnist_cnn`; ``provex models eval``
calls :func:`accuracy`. The per-pixel mean and variance of the training images are stored
in the model card because the rate-distortion methods draw their noise from them.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from provex.data.mnist import load_mnist
from provex.models import WEIGHTS_DIR, MnistCNN, ModelCard, save_weights

__all__ = ["accuracy", "train_mnist_cnn"]


@torch.no_grad()
def accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 1000,
    device: str | torch.device = "cpu",
) -> float:
    """Fraction of ``images`` whose arg-max logit equals ``labels``."""
    model.eval()
    correct = 0
    for i in range(0, images.shape[0], batch_size):
        xb = images[i : i + batch_size].to(device)
        correct += int((model(xb).argmax(1).cpu() == labels[i : i + batch_size]).sum())
    return correct / images.shape[0]


def train_mnist_cnn(
    epochs: int = 6,
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 1e-3,
    root: str | Path | None = None,
    device: str | torch.device = "cpu",
    out: str | Path | None = None,
    progress: bool = True,
    max_steps: int | None = None,
) -> tuple[nn.Module, ModelCard]:
    """Train the paper's MNIST CNN with Adam and a one-cycle schedule; save it if ``out`` is given.

    Returns the trained model (eval mode) and its card with test accuracy and data statistics.
    ``max_steps`` stops early (for tests of reproducibility).
    """
    if epochs <= 0:
        raise ValueError(f"epochs must be positive, got {epochs}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x_train, y_train = load_mnist("train", root=root)
    x_test, y_test = load_mnist("test", root=root)
    model = MnistCNN().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((x_train.shape[0] + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    bar = tqdm(total=steps, desc="train mnist-cnn", disable=not progress)
    step = 0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(x_train.shape[0], generator=gen)
        for i in range(0, perm.numel(), batch_size):
            if max_steps is not None and step >= max_steps:
                break
            step += 1
            idx = perm[i : i + batch_size]
            xb, yb = x_train[idx].to(device), y_train[idx].to(device)
            # Small random shifts (+-2 px) make the model robust and lift test accuracy.
            shift = torch.randint(-2, 3, (2,), generator=gen).tolist()
            xb = torch.roll(xb, shifts=shift, dims=(2, 3))
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    seconds = time.perf_counter() - start
    model.eval()
    acc = accuracy(model, x_test, y_test, device=device)
    card = ModelCard(
        name="mnist-cnn",
        description="FW-RDE paper MNIST CNN (conv32-pool-conv64-pool-conv64-pool-fc1024-fc10, ReLU)",
        config={},
        data_mean=x_train.mean(0),
        data_var=x_train.var(0),
        metrics={"test_accuracy": acc},
        training={
            "seed": seed,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "optimizer": "Adam + one-cycle",
            "augmentation": "random roll by up to 2 px",
            "seconds": round(seconds, 1),
            "torch": str(torch.__version__),
            "command": f"provex train mnist-cnn --epochs {epochs} --seed {seed}",
        },
    )
    if out is not None:
        save_weights(model.cpu(), card, out)
    return model.cpu(), card


def evaluate(model: nn.Module, root: str | Path | None = None, device: str | torch.device = "cpu") -> dict[str, float]:
    """Accuracy on all 10,000 MNIST test images (``provex models eval mnist-cnn``)."""
    x, y = load_mnist("test", root=root)
    return {"test_accuracy": accuracy(model.to(device), x, y, device=device), "n_images": float(x.shape[0])}


def main(argv: list[str] | None = None) -> int:
    """``provex train mnist-cnn [--epochs E] [--seed S] [--out FILE]``."""
    import argparse

    p = argparse.ArgumentParser(prog="provex train mnist-cnn", description=__doc__)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--data", default=None, help="folder with the MNIST IDX files (default: $PROVEX_DATA/mnist)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--out",
        default="provex-out/mnist-cnn.pt",
        help=f"weights file to write (the shipped one is {WEIGHTS_DIR / 'mnist-cnn.pt'})",
    )
    a = p.parse_args(argv)
    _, card = train_mnist_cnn(a.epochs, a.seed, a.batch_size, a.lr, a.data, a.device, a.out)
    print(f"mnist-cnn: test accuracy {card.metrics['test_accuracy']:.4f} after {card.training['seconds']} s -> {a.out}")
    return 0
