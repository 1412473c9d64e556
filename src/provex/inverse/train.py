"""Training an LPN as a denoiser: ``train_lpn(lpn, sampler, sigma, stages, ...)``.

Each step draws clean samples x, noisy inputs y = x + sigma * N(0, I), evaluates f(y) by double
backprop, takes an Adam step on the stage's loss and projects the hidden-path weights back to
>= 0 (so psi stays convex after every step). Everything random comes from one seeded
``torch.Generator``, whose state is saved in the checkpoints: a run interrupted and resumed
from its checkpoint follows the same trajectory as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from provex.inverse.losses import Stage, lpn_loss
from provex.inverse.lpn import LPN
from provex.io import atomic_write

__all__ = ["Sampler", "TrainResult", "laplace_qmc_sampler", "laplace_sampler", "tensor_sampler", "train_lpn"]

# A sampler returns n clean samples x, or a pair (x, noise) with its own standard-normal noise draws.
Sampler = Callable[[int, torch.Generator], torch.Tensor | tuple[torch.Tensor, torch.Tensor]]


def _laplace_icdf(u: torch.Tensor, b: float) -> torch.Tensor:
    """Inverse CDF of Laplace(0, b) at u in (0, 1); clamped away from u = 0, 1 where log(0) appears."""
    v = u - 0.5
    return -b * torch.sign(v) * torch.log1p(-2 * v.abs().clamp(max=0.5 - 1e-12))


def laplace_sampler(b: float = 1.0, dim: int = 1) -> Sampler:
    """Draws (n, dim) samples of the Laplace(0, b) distribution (density exp(-|x|/b) / 2b)."""
    if b <= 0:
        raise ValueError(f"b must be positive, got {b}")

    def sample(n: int, gen: torch.Generator) -> torch.Tensor:
        return _laplace_icdf(torch.rand(n, dim, generator=gen, dtype=torch.float64), b).float()

    return sample


def laplace_qmc_sampler(b: float = 1.0) -> Sampler:
    """(x, noise) pairs for the 1-D Laplace toy by randomised quasi-Monte Carlo.

    Each call scrambles a fresh 2-D Sobol sequence (its seed drawn from ``gen``) and maps it by
    inverse CDFs to x ~ Laplace(0, b) and noise ~ N(0, 1). Every draw is still exactly
    distributed, so the loss stays unbiased, but the batch covers the (x, noise) plane evenly:
    far smaller gradient noise than i.i.d. draws of the same size. Small proximal-matching
    gammas need that, since only the few samples within about gamma of f(y) carry gradient.
    """
    if b <= 0:
        raise ValueError(f"b must be positive, got {b}")

    def sample(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        u = torch.quasirandom.SobolEngine(2, scramble=True, seed=seed).draw(n, dtype=torch.float64)
        u = u.clamp(1e-12, 1 - 1e-12)
        x = _laplace_icdf(u[:, :1], b)
        noise = math.sqrt(2.0) * torch.erfinv(2 * u[:, 1:] - 1)
        return x.float(), noise.float()

    return sample


def tensor_sampler(data: torch.Tensor) -> Sampler:
    """Draws rows of ``data`` uniformly with replacement (e.g. MNIST training images)."""
    if not isinstance(data, torch.Tensor) or data.ndim < 2 or data.shape[0] == 0:
        raise ValueError("data must be a non-empty tensor with a leading sample dimension")

    def sample(n: int, gen: torch.Generator) -> torch.Tensor:
        return data[torch.randint(data.shape[0], (n,), generator=gen)]

    return sample


@dataclass
class TrainResult:
    """Loss history (step, stage index, loss) every ``log_every`` steps, and timings.

    ``seconds`` is this call's training time; ``seconds_total`` adds the time recorded in the
    checkpoint it resumed from (the whole run's training time).
    """

    history: list[tuple[int, int, float]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    resumed_from: int = 0
    seconds_before: float = 0.0

    @property
    def seconds_total(self) -> float:
        return self.seconds_before + self.seconds

    @property
    def seconds_per_step(self) -> float:
        done = self.steps - self.resumed_from
        return self.seconds / done if done else math.nan


def _stage_at(stages: Sequence[Stage], step: int) -> tuple[int, Stage]:
    end = 0
    for k, s in enumerate(stages):
        end += s.steps
        if step < end:
            return k, s
    return len(stages) - 1, stages[-1]


def _prefix(stages: Sequence[Stage], steps: int) -> list[tuple[int, str, float, float | None, int | None]]:
    """The first ``steps`` steps of a schedule as (length, loss, lr, gamma, batch size) segments."""
    out, left = [], steps
    for s in stages:
        if left <= 0:
            break
        out.append((min(s.steps, left), s.loss, s.lr, s.gamma, s.batch_size))
        left -= s.steps
    return out


def _grid_forward(
    lpn: LPN, grid: tuple[float, float, int], device: str | torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """f at a batch of scalars by linear interpolation of f on a uniform grid (see ``train_lpn``)."""
    try:
        lo, hi, points = float(grid[0]), float(grid[1]), int(grid[2])
    except (TypeError, ValueError, IndexError) as err:
        raise ValueError(f"grid must be (lo, hi, points), got {grid!r}") from err
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi) or points < 2:
        raise ValueError(f"grid must be (lo, hi, points) with lo < hi finite and points >= 2, got {grid!r}")
    nodes = torch.linspace(lo, hi, points, dtype=torch.float64, device=device).unsqueeze(1)

    def forward(y: torch.Tensor) -> torch.Tensor:
        if y.ndim != 2 or y.shape[1] != 1:
            raise ValueError(f"grid training needs 1-D inputs of shape (N, 1), got samples of shape {tuple(y.shape)}")
        values = lpn(nodes.to(y.dtype)).squeeze(1)
        t = (y.squeeze(1) - lo) / (hi - lo) * (points - 1)
        i0 = t.detach().floor().clamp(0, points - 2).long()
        w = t - i0
        return (values[i0] * (1 - w) + values[i0 + 1] * w).unsqueeze(1)

    return forward


def _check_training(
    lpn: LPN, sigma: float, stages: Sequence[Stage], batch_size: int, ema_decay: float | None, ema_start: int
) -> list[Stage]:
    """The arguments of :func:`train_lpn` checked (one-line errors naming them); the stages as a list."""
    if not isinstance(lpn, LPN):
        raise ValueError(f"lpn must be a provex.inverse.LPN, got {type(lpn).__name__}")
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be positive, got {sigma}")
    stages = list(stages)
    if not stages or not all(isinstance(s, Stage) for s in stages):
        raise ValueError("stages must be a non-empty sequence of provex.inverse.Stage")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if ema_decay is not None and not (0.0 <= ema_decay < 1.0):
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
    if ema_start < 0:
        raise ValueError(f"ema_start must be >= 0, got {ema_start}")
    return stages


@dataclass
class _Checkpoint:
    """The training state a checkpoint file holds: network, optimiser, generator, history, schedule."""

    path: Path
    lpn: LPN
    opt: torch.optim.Optimizer
    gen: torch.Generator
    result: TrainResult
    stages: Sequence[Stage]

    def resume(self, ema_decay: float | None, device: str | torch.device) -> dict[str, torch.Tensor] | None:
        """Load the file into the network, optimiser, generator and result; returns the saved
        parameter average (None without one). Refuses a file whose schedule differs from
        ``stages`` on the steps already taken."""
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        self.lpn.load_state_dict(state["state_dict"])
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"])
        result = self.result
        result.history = [tuple(h) for h in state["history"]]  # type: ignore[misc]
        result.steps = result.resumed_from = int(state["step"])
        result.seconds_before = float(state.get("seconds", 0.0))
        ema = None
        if ema_decay is not None and state.get("ema") is not None:
            ema = {k: v.to(device) for k, v in state["ema"].items()}
        saved = [Stage(**d) for d in state["stages"]]
        if _prefix(saved, result.steps) != _prefix(self.stages, result.steps):
            raise ValueError(
                f"checkpoint {self.path} (step {result.steps}) was written under a schedule that differs from this "
                "one on the steps already taken; use another checkpoint file or resume=False"
            )
        return ema

    def save(self, seconds: float, ema: dict[str, torch.Tensor] | None) -> None:
        """Write everything :meth:`resume` reads, atomically."""
        blob: dict[str, Any] = {
            "state_dict": {k: v.detach().cpu() for k, v in self.lpn.state_dict().items()},
            "optimizer": self.opt.state_dict(),
            "generator": self.gen.get_state(),
            "history": [list(h) for h in self.result.history],
            "step": self.result.steps,
            "stages": [st.to_dict() for st in self.stages],
            "seconds": seconds,
            "ema": None if ema is None else {k: v.detach().cpu() for k, v in ema.items()},
        }
        with atomic_write(self.path) as tmp:
            torch.save(blob, tmp)


def _draw(
    sampler: Sampler, n: int, gen: torch.Generator, device: str | torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` clean samples and their unit noise: the sampler's own pair, or Gaussian noise drawn after them."""
    drawn = sampler(n, gen)
    if isinstance(drawn, tuple):
        x, noise = drawn[0].to(device), drawn[1].to(device)
        if noise.shape != x.shape:
            raise ValueError(f"the sampler's noise has shape {tuple(noise.shape)}, its samples {tuple(x.shape)}")
        return x, noise
    x = drawn.to(device)
    return x, torch.randn(x.shape, generator=gen).to(device)


@torch.no_grad()
def _update_average(ema: dict[str, torch.Tensor] | None, lpn: LPN, decay: float) -> dict[str, torch.Tensor]:
    """avg <- decay * avg + (1 - decay) * theta (started at theta)."""
    if ema is None:
        return {k: v.detach().clone() for k, v in lpn.state_dict().items()}
    for name, v in lpn.state_dict().items():
        ema[name].mul_(decay).add_(v.detach(), alpha=1.0 - decay)
    return ema


def train_lpn(
    lpn: LPN,
    sampler: Sampler,
    sigma: float,
    stages: Sequence[Stage],
    batch_size: int = 64,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 500,
    resume: bool = True,
    device: str | torch.device = "cpu",
    progress: bool = True,
    log_every: int = 50,
    on_stage_end: Callable[[int, LPN], None] | None = None,
    stop_after: int | None = None,
    ema_decay: float | None = None,
    ema_start: int = 0,
    grid: tuple[float, float, int] | None = None,
) -> TrainResult:
    """Train ``lpn`` in place through ``stages``; returns the loss history and timings.

    ``checkpoint`` (a file) is written atomically every ``checkpoint_every`` steps and at the
    end; with ``resume=True`` an existing checkpoint is loaded and training continues from it
    (under any schedule that agrees with the checkpoint's on the steps already taken).
    ``on_stage_end(stage_index, lpn)`` is called after each stage (e.g. to validate); it must
    leave ``lpn`` in training mode. ``stop_after`` ends the run after that many steps in total
    (a time-boxed run; the checkpoint lets a later call with the same schedule continue).

    ``ema_decay`` (e.g. 0.999) keeps an exponential moving average of the parameters over the
    steps after ``ema_start`` (step counts are global: after step t > ema_start, avg <- d * avg +
    (1 - d) * theta_t, started at avg = theta_{ema_start + 1}); when the schedule is complete
    ``lpn`` gets the averaged parameters. The average of projected (hidden-path >= 0) weights
    is itself projected, so psi stays convex. The average is saved in the checkpoint.

    ``grid = (lo, hi, points)``, for LPNs on 1-D inputs (N, 1) only: each step evaluates f on
    ``points`` equally spaced inputs in [lo, hi] and interpolates it linearly at the batch (the
    loss still averages over every sampled pair; gradients flow through the interpolation). A
    step then costs one pass over the grid, not over the batch, so batches of 10^6 samples are
    affordable, which small proximal-matching gammas need: at gamma = 0.035 only a few percent of
    the samples carry gradient. Keep the grid fine (spacing << gamma) and wide (samples beyond
    it use the end segments' lines).
    """
    stages = _check_training(lpn, sigma, stages, batch_size, ema_decay, ema_start)
    forward = lpn if grid is None else _grid_forward(lpn, grid, device)
    total = sum(s.steps for s in stages)
    lpn.to(device).train()
    lpn.project_()
    opt = torch.optim.Adam(lpn.parameters(), lr=stages[0].lr)
    gen = torch.Generator().manual_seed(seed)
    result = TrainResult()
    ema: dict[str, torch.Tensor] | None = None
    ckpt = None if checkpoint is None else _Checkpoint(Path(checkpoint), lpn, opt, gen, result, stages)
    if ckpt is not None and resume and ckpt.path.is_file():
        ema = ckpt.resume(ema_decay, device)

    def save() -> None:
        if ckpt is not None:
            ckpt.save(result.seconds_before + time.perf_counter() - start, ema)

    bar = tqdm(total=total, initial=result.steps, desc="train lpn", disable=not progress)
    start = time.perf_counter()
    running = None
    end = total if stop_after is None else min(total, int(stop_after))
    while result.steps < end:
        k, stage = _stage_at(stages, result.steps)
        for g in opt.param_groups:
            g["lr"] = stage.lr
        x, noise = _draw(sampler, stage.batch_size or batch_size, gen, device)
        y = x + sigma * noise
        loss = lpn_loss(stage.loss, forward(y), x, stage.gamma)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {float(loss)} at step {result.steps} (stage {k}); lower the lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lpn.project_()
        result.steps += 1
        if ema_decay is not None and result.steps > ema_start:
            ema = _update_average(ema, lpn, ema_decay)
        value = float(loss.detach())
        running = value if running is None else 0.95 * running + 0.05 * value
        if result.steps % log_every == 0 or result.steps == total:
            result.history.append((result.steps, k, running))
        bar.update(1)
        if result.steps % 10 == 0:
            bar.set_postfix(stage=k, loss=f"{running:.4g}", gamma=stage.gamma, lr=stage.lr)
        if result.steps % checkpoint_every == 0:
            save()
        if on_stage_end is not None and (result.steps == total or _stage_at(stages, result.steps)[0] != k):
            on_stage_end(k, lpn)
            lpn.train()
    bar.close()
    result.seconds = time.perf_counter() - start
    save()
    if ema is not None and result.steps == total:
        lpn.load_state_dict(ema)
    lpn.eval()
    return result
