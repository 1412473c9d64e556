"""Reproduce the shipped ``lpn-mnist``: a convolutional LPN denoiser for MNIST at sigma = 0.1.

Architecture (reference MNIST LPN): hidden 64, beta 10, alpha 0.01. Schedule: l1 pre-training,
then proximal matching with gamma falling from 8 * gamma_min to gamma_min = 0.08 * sqrt(784)
in 4 stages (the reference halves gamma per stage). The reference trains 20k + 20k steps at
batch 200 on a GPU; on one CPU thread a step at batch 64 costs ~0.6 s, so the default here is
1.5k + 1.5k steps at batch 64 (see notes/issue-6.md for the measured time).

``provex train lpn-mnist [--pretrain-steps N] [--steps N] [--batch-size B] [--checkpoint F] [--out F]``
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from torch import nn

from provex.data.mnist import load_mnist
from provex.inverse.losses import proximal_matching_schedule
from provex.inverse.lpn import LPN, build_lpn
from provex.inverse.metrics import psnr
from provex.inverse.train import tensor_sampler, train_lpn
from provex.models import WEIGHTS_DIR, ModelCard, save_weights

__all__ = ["CONFIG", "SIGMA", "evaluate", "main", "train_mnist_lpn"]

SIGMA = 0.1
CONFIG = {"arch": "conv", "in_channels": 1, "image_size": 28, "hidden": 64, "dense": 64, "beta": 10.0, "alpha": 0.01}
GAMMA_MIN = 0.08 * math.sqrt(28 * 28)


@torch.no_grad()
def denoising_psnr(
    lpn: nn.Module, x: torch.Tensor, sigma: float = SIGMA, seed: int = 0, batch: int = 250
) -> dict[str, float]:
    """Mean PSNR of noisy inputs and of the LPN's denoised outputs on ``x`` (noise seeded)."""
    gen = torch.Generator().manual_seed(seed)
    device = next(lpn.parameters()).device
    noisy_db, out_db = [], []
    for i in range(0, x.shape[0], batch):
        xb = x[i : i + batch]
        yb = xb + sigma * torch.randn(xb.shape, generator=gen)
        out = lpn(yb.to(device)).cpu()
        noisy_db.append(psnr(yb, xb))
        out_db.append(psnr(out, xb))
    return {"noisy_psnr": float(torch.cat(noisy_db).mean()), "denoised_psnr": float(torch.cat(out_db).mean())}


def train_mnist_lpn(
    pretrain_steps: int = 1500,
    steps: int = 1500,
    batch_size: int = 64,
    seed: int = 0,
    root: str | Path | None = None,
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    n_eval: int = 1000,
) -> tuple[LPN, ModelCard]:
    """Train the MNIST LPN; returns it (eval mode) with its card, and saves it if ``out`` is given."""
    torch.manual_seed(seed)
    x_train, _ = load_mnist("train", root=root)
    x_test, _ = load_mnist("test", root=root)
    lpn = build_lpn(**CONFIG)
    stages = proximal_matching_schedule(
        pretrain_steps, steps, gamma_start=8 * GAMMA_MIN, gamma_end=GAMMA_MIN, stages=4, pretrain_lr=1e-3, lr=1e-4
    )
    start = time.perf_counter()
    res = train_lpn(
        lpn,
        tensor_sampler(x_train),
        SIGMA,
        stages,
        batch_size=batch_size,
        seed=seed,
        checkpoint=checkpoint,
        device=device,
        progress=progress,
    )
    lpn = lpn.cpu().eval()
    metrics = denoising_psnr(lpn, x_test[:n_eval])
    card = ModelCard(
        name="lpn-mnist",
        description="Learned proximal network (convolutional ICNN gradient) denoising MNIST at sigma=0.1",
        config=dict(CONFIG),
        metrics={**metrics, "n_eval": float(n_eval)},
        training={
            "seed": seed,
            "sigma": SIGMA,
            "batch_size": batch_size,
            "stages": [s.to_dict() for s in stages],
            "optimizer": "Adam, hidden-path weights clamped >= 0 after each step",
            "seconds_this_run": round(res.seconds, 1),
            "seconds_total": round(res.seconds_total, 1),
            "seconds_per_step": round(res.seconds_per_step, 4),
            "resumed_from_step": res.resumed_from,
            "wall_seconds_including_eval": round(time.perf_counter() - start, 1),
            "threads": torch.get_num_threads(),
            "history": res.history,
            "torch": str(torch.__version__),
            "command": f"provex train lpn-mnist --pretrain-steps {pretrain_steps} --steps {steps} "
            f"--batch-size {batch_size} --seed {seed}",
        },
    )
    if out is not None:
        save_weights(lpn, card, out)
    return lpn, card


def evaluate(model: nn.Module, root: str | Path | None = None, device: str | torch.device = "cpu") -> dict[str, float]:
    """Denoising PSNR at sigma = 0.1 on the first 1000 MNIST test images (``provex models eval lpn-mnist``)."""
    x, _ = load_mnist("test", root=root)
    return {**denoising_psnr(model.to(device), x[:1000]), "n_images": 1000.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="provex train lpn-mnist", description=__doc__)
    p.add_argument("--pretrain-steps", type=int, default=1500, help="l1 steps (lr 1e-3)")
    p.add_argument("--steps", type=int, default=1500, help="proximal-matching steps (4 gamma stages, lr 1e-4)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--data", default=None, help="folder with the MNIST IDX files (default: $PROVEX_DATA/mnist)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint", default="provex-out/lpn-mnist.ckpt", help="resumable checkpoint file")
    p.add_argument(
        "--out", default="provex-out/lpn-mnist.pt", help=f"weights file (shipped: {WEIGHTS_DIR / 'lpn-mnist.pt'})"
    )
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    _, card = train_mnist_lpn(a.pretrain_steps, a.steps, a.batch_size, a.seed, a.data, a.device, a.checkpoint, a.out)
    m = card.metrics
    print(
        f"lpn-mnist: denoising PSNR {m['denoised_psnr']:.2f} dB (noisy {m['noisy_psnr']:.2f} dB), "
        f"{card.training['seconds_per_step']:.3f} s/step -> {a.out}"
    )
    return 0
