"""Training: projection after every step, resumable checkpoints, schedules, and the short
MNIST run that stands in CI for the full (shipped) training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import provex
from provex.inverse import Stage, build_lpn, laplace_sampler, tensor_sampler, train_lpn


@pytest.fixture(autouse=True)
def _threads() -> None:
    """Overrides conftest's: these tensors are tiny, and one thread avoids OpenMP overhead."""
    torch.set_num_threads(1)


def _min_hidden(lpn) -> float:
    return min(float(p.detach().min()) for _, p in lpn.icnn.hidden_path())


def test_hidden_path_stays_nonnegative_after_every_step() -> None:
    torch.manual_seed(0)
    lpn = build_lpn("vector", dim=1, hidden=8, layers=2, beta=5.0)
    seen: list[float] = []
    # a large learning rate pushes many hidden-path weights below zero before the projection
    stages = [Stage(5, "l2", 0.5), Stage(5, "l1", 0.5), Stage(5, "proximal_matching", 0.5, 0.5)]
    train_lpn(
        lpn,
        laplace_sampler(),
        1.0,
        stages,
        batch_size=64,
        progress=False,
        on_stage_end=lambda k, m: seen.append(_min_hidden(m)),
    )
    assert len(seen) == 3 and min(seen) >= 0.0
    assert _min_hidden(lpn) >= 0.0 and min(seen) == 0.0  # some weights were clamped, none negative


def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path: Path) -> None:
    stages = [Stage(6, "l1", 1e-2), Stage(6, "proximal_matching", 1e-2, 1.0)]

    def run(ckpt: Path | None, stop: int | None = None):
        torch.manual_seed(0)
        lpn = build_lpn("vector", dim=1, hidden=6, layers=1)
        res = train_lpn(
            lpn,
            laplace_sampler(),
            1.0,
            stages,
            batch_size=32,
            seed=3,
            checkpoint=ckpt,
            checkpoint_every=4,
            progress=False,
            log_every=1,
            stop_after=stop,
        )
        return lpn, res

    full, _ = run(None)
    ckpt = tmp_path / "run.ckpt"
    _, first = run(ckpt, stop=8)
    assert first.steps == 8 and ckpt.is_file()
    resumed, second = run(ckpt)
    assert second.resumed_from == 8 and second.steps == 12
    for (k, v), w in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(v, w, msg=k)
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]  # atomic writes leave no temp files
    # a schedule that differs on the steps already taken is refused
    with pytest.raises(ValueError, match="differs"):
        train_lpn(
            build_lpn("vector", dim=1, hidden=6, layers=1),
            laplace_sampler(),
            1.0,
            [Stage(12, "l2", 1e-2)],
            checkpoint=ckpt,
            progress=False,
        )


def test_train_rejects_bad_arguments() -> None:
    lpn = build_lpn("vector", dim=1, hidden=4, layers=1)
    with pytest.raises(ValueError, match="sigma"):
        train_lpn(lpn, laplace_sampler(), 0.0, [Stage(1, "l1", 1e-3)])
    with pytest.raises(ValueError, match="stages"):
        train_lpn(lpn, laplace_sampler(), 1.0, [])
    with pytest.raises(ValueError, match="lpn"):
        train_lpn(torch.nn.Linear(1, 1), laplace_sampler(), 1.0, [Stage(1, "l1", 1e-3)])  # type: ignore[arg-type]


def test_laplace_sampler_has_laplace_moments() -> None:
    x = laplace_sampler(b=2.0)(200_000, torch.Generator().manual_seed(0))
    assert x.shape == (200_000, 1)
    assert float(x.mean()) == pytest.approx(0.0, abs=0.03)
    assert float(x.abs().mean()) == pytest.approx(2.0, rel=0.02)  # E|x| = b
    assert float(x.var()) == pytest.approx(8.0, rel=0.03)  # 2 b^2


def test_short_mnist_training_runs_and_improves(tmp_path: Path, mnist_root: Path) -> None:
    """Stands in CI for the full lpn-mnist training (shipped weights; notes/issue-6.md has the timing)."""
    from provex.inverse.recipes.mnist import denoising_psnr, train_mnist_lpn

    x_test, _ = provex.data.load_mnist("test", root=mnist_root)
    torch.manual_seed(0)
    before = denoising_psnr(provex.inverse.build_lpn(**provex.inverse.recipes.mnist.CONFIG).eval(), x_test[:32])
    lpn, card = train_mnist_lpn(
        pretrain_steps=12,
        steps=4,
        batch_size=8,
        root=mnist_root,
        checkpoint=tmp_path / "c.ckpt",
        out=tmp_path / "w.pt",
        progress=False,
        n_eval=32,
    )
    assert card.metrics["denoised_psnr"] > before["denoised_psnr"] + 3.0
    assert [s["loss"] for s in card.training["stages"]] == ["l1"] + ["proximal_matching"] * 4
    loaded = provex.models.load("lpn-mnist", path=tmp_path / "w.pt")
    x = x_test[:2]
    torch.testing.assert_close(loaded(x), lpn(x))
    loaded.check_convex()


def test_tensor_sampler_draws_rows() -> None:
    data = torch.arange(10.0).view(10, 1)
    out = tensor_sampler(data)(50, torch.Generator().manual_seed(0))
    assert out.shape == (50, 1) and set(out.view(-1).tolist()) <= set(range(10))
    with pytest.raises(ValueError):
        tensor_sampler(torch.zeros(0, 2))
