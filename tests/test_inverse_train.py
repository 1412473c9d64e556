"""Training: projection after every step, resumable checkpoints, schedules, and the short
MNIST run that stands in CI for the full (shipped) training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import provex
from provex.inverse import Stage, build_lpn, laplace_qmc_sampler, laplace_sampler, tensor_sampler, train_lpn


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


def test_ema_of_weights_matches_hand_computed_average(tmp_path: Path) -> None:
    """ema_decay / ema_start: the final weights are the EMA of the per-step weights after ema_start."""
    decay, start = 0.8, 3
    stages = [Stage(1, "l1", 5e-2) for _ in range(8)]  # 1-step stages: on_stage_end sees every step

    def run(**ema):
        torch.manual_seed(0)
        lpn = build_lpn("vector", dim=1, hidden=6, layers=1)
        seen: list[dict[str, torch.Tensor]] = []
        train_lpn(
            lpn,
            laplace_sampler(),
            1.0,
            stages,
            batch_size=32,
            seed=1,
            progress=False,
            on_stage_end=lambda k, m: seen.append({n: v.detach().clone() for n, v in m.state_dict().items()}),
            **ema,
        )
        return lpn, seen

    _, steps = run()  # plain run: the weights after steps 1..8
    averaged, steps_ema = run(ema_decay=decay, ema_start=start)
    for a, b in zip(steps, steps_ema):  # the average does not change the trajectory
        for n in a:
            torch.testing.assert_close(a[n], b[n])
    for name in steps[0]:
        avg = steps[start][name].double()  # the weights after step start + 1
        for t in range(start + 1, len(steps)):
            avg = decay * avg + (1 - decay) * steps[t][name].double()
        torch.testing.assert_close(averaged.state_dict()[name], avg.float(), rtol=1e-5, atol=1e-6, msg=name)
    moved = [not torch.allclose(averaged.state_dict()[n], steps[-1][n]) for n in steps[0]]
    assert sum(moved) >= 3  # it is not the last iterate
    assert _min_hidden(averaged) >= 0.0
    # the average is checkpointed: a run stopped and resumed gives the same averaged weights
    ckpt = tmp_path / "ema.ckpt"
    torch.manual_seed(0)
    part = build_lpn("vector", dim=1, hidden=6, layers=1)
    train_lpn(
        part,
        laplace_sampler(),
        1.0,
        stages,
        batch_size=32,
        seed=1,
        checkpoint=ckpt,
        progress=False,
        stop_after=5,
        ema_decay=decay,
        ema_start=start,
    )
    resumed = build_lpn("vector", dim=1, hidden=6, layers=1)
    train_lpn(
        resumed,
        laplace_sampler(),
        1.0,
        stages,
        batch_size=32,
        seed=1,
        checkpoint=ckpt,
        progress=False,
        ema_decay=decay,
        ema_start=start,
    )
    for name, v in averaged.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], v, msg=name)
    with pytest.raises(ValueError, match="ema_decay"):
        train_lpn(build_lpn("vector", dim=1, hidden=4, layers=1), laplace_sampler(), 1.0, stages, ema_decay=1.0)


def test_grid_training_matches_the_direct_gradient() -> None:
    """grid=(lo, hi, n): interpolating f from a fine grid gives the loss and weight gradients of
    evaluating f at every sample (up to the interpolation error), and only for 1-D inputs."""
    from provex.inverse.losses import lpn_loss
    from provex.inverse.train import _grid_forward

    torch.manual_seed(0)
    lpn = build_lpn("vector", dim=1, hidden=8, layers=2, beta=5.0).double().train()
    gen = torch.Generator().manual_seed(1)
    x = laplace_sampler()(500, gen).double()
    y = x + torch.randn(x.shape, generator=gen, dtype=torch.float64)
    fwd = _grid_forward(lpn, (-12.0, 12.0, 24001), "cpu")

    def grads(out: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
        loss = lpn_loss("proximal_matching", out, x, 0.3)
        gs = torch.autograd.grad(loss, list(lpn.parameters()), allow_unused=True)  # psi's constant: unused
        return float(loss.detach()), [g.clone() for g in gs if g is not None]

    direct_loss, direct = grads(lpn(y))
    grid_loss, via_grid = grads(fwd(y))
    assert grid_loss == pytest.approx(direct_loss, rel=1e-5)
    for a, b in zip(direct, via_grid):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-6)
    # grid nodes themselves are exact
    nodes = torch.linspace(-12, 12, 24001, dtype=torch.float64)[::997].unsqueeze(1)
    torch.testing.assert_close(fwd(nodes), lpn(nodes), rtol=0, atol=1e-12)
    # it trains, and keeps the projection
    stages = [Stage(20, "l1", 1e-2), Stage(20, "proximal_matching", 1e-2, 0.5)]
    res = train_lpn(lpn.float(), laplace_sampler(), 1.0, stages, batch_size=20000, progress=False, grid=(-12, 12, 2001))
    assert res.steps == 40 and _min_hidden(lpn) >= 0.0
    with pytest.raises(ValueError, match=r"grid must be \(lo, hi, points\)"):
        train_lpn(lpn, laplace_sampler(), 1.0, stages, progress=False, grid=(1.0, -1.0, 10))
    with pytest.raises(ValueError, match="grid training needs 1-D inputs"):
        train_lpn(
            build_lpn("vector", dim=2, hidden=4, layers=1),
            laplace_sampler(dim=2),
            1.0,
            stages,
            progress=False,
            grid=(-5, 5, 100),
        )


def test_laplace_qmc_sampler_is_exact_and_lower_variance() -> None:
    """Scrambled-Sobol pairs: Laplace(b) and N(0, 1) marginals, independent, and a much smaller
    spread of batch means than i.i.d. draws of the same size (what small gammas need)."""
    from scipy import stats

    gen = torch.Generator().manual_seed(0)
    x, noise = laplace_qmc_sampler(2.0)(2**14, gen)
    assert x.shape == noise.shape == (2**14, 1)
    assert stats.kstest(x[:, 0].numpy(), "laplace", args=(0, 2.0)).pvalue > 0.01
    assert stats.kstest(noise[:, 0].numpy(), "norm").pvalue > 0.01
    assert abs(float(torch.corrcoef(torch.cat([x, noise], 1).T)[0, 1])) < 0.03

    def spread(sampler, n: int = 4096, reps: int = 40) -> float:
        g = torch.Generator().manual_seed(1)
        means = []
        for _ in range(reps):
            d = sampler(n, g)
            xs, ns = d if isinstance(d, tuple) else (d, torch.randn(d.shape, generator=g))
            means.append(float(torch.exp(-((xs - (xs + ns) / 2) ** 2)).mean()))
        return float(torch.tensor(means).std())

    assert spread(laplace_qmc_sampler()) < 0.2 * spread(laplace_sampler())
    # a pair sampler's noise must match its samples
    bad = lambda n, g: (torch.zeros(n, 1), torch.zeros(n, 2))  # noqa: E731
    with pytest.raises(ValueError, match="the sampler's noise has shape"):
        train_lpn(build_lpn("vector", dim=1, hidden=4, layers=1), bad, 1.0, [Stage(1, "l1", 1e-3)], progress=False)


def test_laplace_recipe_short_run_improves_and_records_how_it_trained(tmp_path: Path) -> None:
    """A few hundred steps of the shipped recipe (quasi-random pairs, grid, EMA) in CI; the full
    schedule (6 500 steps, about 15 minutes on one core) made the shipped weights."""
    from provex.inverse.recipes.laplace import laplace_errors, train_laplace_lpn

    stages = [Stage(150, "l1", 3e-3, batch_size=2**14), Stage(100, "proximal_matching", 1e-3, 0.3, 2**14)]
    torch.manual_seed(0)
    before = laplace_errors(build_lpn("vector", dim=1, hidden=16, layers=2, beta=20.0, alpha=0.0))
    lpn, card = train_laplace_lpn(
        stages=stages, hidden=16, layers=2, grid_points=801, out=tmp_path / "lap.pt", progress=False
    )
    assert card.metrics["prox_max_error"] < 0.5 * before["prox_max_error"]
    assert card.training["sampler"] == "qmc" and card.training["grid"] == [-16.0, 16.0, 801]
    assert card.training["ema_decay"] == pytest.approx(0.998) and card.training["ema_start"] == 150
    assert _min_hidden(lpn) >= 0.0
    loaded = provex.models.load("lpn-laplace", path=tmp_path / "lap.pt")
    x = torch.linspace(-3, 3, 7).unsqueeze(1)
    torch.testing.assert_close(loaded(x), lpn(x))
    with pytest.raises(ValueError, match="sampler must be"):
        train_laplace_lpn(stages=stages, sampler="sobol", progress=False)
