"""Losses (their minimisers: mean, median, mode) and prior evaluation by inversion (closed forms)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from provex.inverse import (
    InversionError,
    Stage,
    build_lpn,
    evaluate_prior,
    l1_loss,
    l2_loss,
    proximal_matching_loss,
    proximal_matching_schedule,
)
from provex.inverse.losses import lpn_loss


@pytest.fixture(autouse=True)
def _threads() -> None:
    """Overrides conftest's: these tensors are tiny, and one thread avoids OpenMP overhead."""
    torch.set_num_threads(1)


def test_loss_values_closed_form() -> None:
    out = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    tgt = torch.zeros(2, 2)
    assert float(l2_loss(out, tgt)) == pytest.approx(12.5)  # (0 + 25) / 2
    assert float(l1_loss(out, tgt)) == pytest.approx(7 / 4)
    assert float(proximal_matching_loss(out, tgt, gamma=5.0)) == pytest.approx((1 - math.exp(-1)) / 2)
    with pytest.raises(ValueError, match="gamma"):
        proximal_matching_loss(out, tgt, gamma=0.0)
    with pytest.raises(ValueError, match="gamma"):
        lpn_loss("proximal_matching", out, tgt)
    with pytest.raises(ValueError, match="unknown loss"):
        lpn_loss("huber", out, tgt)


def test_loss_minimisers_are_mean_median_and_mode() -> None:
    # A constant estimate c of LogNormal(0, 0.5) data (represented by 10k equally weighted
    # quantiles): l2 -> mean exp(1/8), l1 -> median 1, proximal matching with small gamma -> the
    # mode exp(-1/4), the MAP-like estimate.
    from scipy.stats import lognorm

    q = (torch.arange(10_000, dtype=torch.float64) + 0.5) / 10_000
    data = torch.from_numpy(lognorm(s=0.5).ppf(q.numpy())).view(-1, 1)
    grid = torch.linspace(0.6, 1.4, 201, dtype=torch.float64)

    def argmin(loss) -> float:
        vals = torch.stack([loss(torch.full_like(data, float(c)), data) for c in grid])
        return float(grid[vals.argmin()])

    assert argmin(l2_loss) == pytest.approx(math.exp(0.125), abs=0.005)
    assert argmin(l1_loss) == pytest.approx(1.0, abs=0.005)
    assert argmin(lambda o, t: proximal_matching_loss(o, t, 0.05)) == pytest.approx(math.exp(-0.25), abs=0.02)


def test_schedule_halves_gamma_and_validates() -> None:
    stages = proximal_matching_schedule(100, 400, gamma_start=8.0, gamma_end=1.0, stages=4, lr=1e-3, final_lr=1e-4)
    assert [s.loss for s in stages] == ["l1"] + ["proximal_matching"] * 4
    assert [s.gamma for s in stages[1:]] == pytest.approx([8.0, 4.0, 2.0, 1.0])
    assert stages[1].lr == pytest.approx(1e-3) and stages[-1].lr == pytest.approx(1e-4)
    assert sum(s.steps for s in stages) == 500
    with pytest.raises(ValueError, match="gamma"):
        Stage(10, "proximal_matching", 1e-3)
    with pytest.raises(ValueError, match="steps"):
        Stage(0, "l1", 1e-3)
    with pytest.raises(ValueError, match="gamma_end"):
        proximal_matching_schedule(0, 10, gamma_start=1.0, gamma_end=2.0)


class SoftThresholdPotential(torch.nn.Module):
    """psi(y) = 1/2 max(|y| - 1, 0)^2: grad psi is soft-thresholding, the prox of R(x) = |x|."""

    def psi(self, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.relu(y.abs() - 1).pow(2).sum(1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return torch.sign(y) * torch.relu(y.abs() - 1)


def test_prior_of_soft_thresholding_is_abs() -> None:
    x = torch.linspace(-3, 3, 25, dtype=torch.float64).unsqueeze(1)
    res = evaluate_prior(SoftThresholdPotential(), x, tol=1e-10)
    torch.testing.assert_close(res.values, x.abs().squeeze(1), atol=1e-8, rtol=0)
    assert res.all_converged
    torch.testing.assert_close(SoftThresholdPotential()(res.y), x, atol=1e-9, rtol=0)


def test_prior_of_quadratic_lpn_is_ridge() -> None:
    # psi = alpha/2 ||x||^2 only: f(x) = alpha x is the prox of R = lam/2 ||x||^2 with lam = 1/alpha - 1.
    alpha = 0.4
    lpn = build_lpn("vector", dim=3, hidden=4, layers=1, alpha=alpha).double()
    with torch.no_grad():
        lpn.icnn.out.weight.zero_()
        lpn.icnn.out_skip.weight.zero_()
        lpn.icnn.out_skip.bias.zero_()
    x = torch.randn(6, 3, dtype=torch.float64)
    res = evaluate_prior(lpn, x, tol=1e-10)
    lam = 1 / alpha - 1
    torch.testing.assert_close(res.values, 0.5 * lam * x.pow(2).sum(1), atol=1e-8, rtol=1e-8)


def test_inversion_recovers_preimage_batched() -> None:
    torch.manual_seed(0)
    lpn = build_lpn("conv", image_size=8, hidden=4, dense=8, beta=5.0, alpha=0.05).double().eval()
    with torch.no_grad():
        for _, p in lpn.icnn.hidden_path():
            p.mul_(3.0)
    y0 = torch.rand(5, 1, 8, 8, dtype=torch.float64)
    x = lpn(y0)
    res = evaluate_prior(lpn, x, tol=1e-9, batch_size=2)
    assert res.all_converged and float(res.residual.max()) <= 1e-9
    torch.testing.assert_close(res.y, y0, atol=1e-6, rtol=0)
    torch.testing.assert_close(lpn(res.y), x, atol=1e-8, rtol=0)
    # R from the formula at the known preimage
    with torch.no_grad():
        r0 = (y0 * x).flatten(1).sum(1) - 0.5 * x.flatten(1).pow(2).sum(1) - lpn.psi(y0)
    torch.testing.assert_close(res.values, r0, atol=1e-8, rtol=1e-8)
    single = torch.stack([evaluate_prior(lpn, x[i : i + 1], tol=1e-9).values[0] for i in range(5)])
    torch.testing.assert_close(res.values, single, atol=1e-8, rtol=1e-8)


def test_non_convergence_is_reported_per_input() -> None:
    # Without the quadratic term f is bounded; x far outside its range has no preimage.
    lpn = build_lpn("vector", dim=1, hidden=8, layers=1, alpha=0.0).double()
    with torch.no_grad():
        y = torch.linspace(-100, 100, 3, dtype=torch.float64).unsqueeze(1)
        top = float(lpn(y).abs().max())
    x = torch.tensor([[0.0], [top + 50.0]], dtype=torch.float64)
    x[0, 0] = float(lpn(torch.zeros(1, 1, dtype=torch.float64)).detach())  # inside the range: f(0)
    with pytest.warns(RuntimeWarning, match=r"did not converge for 1 of 2 inputs \(indices \[1\]"):
        res = evaluate_prior(lpn, x, max_iter=50, tol=1e-8)
    assert res.converged.tolist() == [True, False]
    assert float(res.residual[1]) > 1.0
    with pytest.raises(InversionError, match="indices"):
        evaluate_prior(lpn, x, max_iter=50, tol=1e-8, on_fail="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate_prior(lpn, x, max_iter=50, tol=1e-8, on_fail="ignore")


def test_prior_bad_input() -> None:
    lpn = build_lpn("vector", dim=1, hidden=4, layers=1)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_prior(lpn, torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match="on_fail"):
        evaluate_prior(lpn, torch.zeros(1, 1), on_fail="maybe")
    with pytest.raises(ValueError, match="psi"):
        evaluate_prior(torch.nn.Linear(1, 1), torch.zeros(1, 1))
