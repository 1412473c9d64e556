"""Betting tests (SKIT, cSKIT, xSKIT): payoffs, wealth, validity, power, no peeking, bad input.

Independent truths: a scalar NumPy/scikit-learn re-implementation of the payoff, bet and
online-Newton-step recursion written from the formulas; the binomial bound on the type I error;
closed forms of the linear-kernel witnesses.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics.pairwise import rbf_kernel

from provex.stats import (
    BatchBettingResult,
    BettingResult,
    RBFKernel,
    cskit,
    sample_synthetic,
    skit,
    synthetic_model,
    synthetic_sampler,
    wealth_process,
    xskit,
    xskit_scores,
)
from provex.stats.betting import RunningQuantiles


def _ref_wealth(g: np.ndarray) -> np.ndarray:
    """Scalar reference: tanh bet scaled by q90 - q10 of past payoffs, ONS fraction."""
    v, a, w, past, out = 0.0, 1.0, 1.0, [], [1.0]
    for gt in g:
        scale = 1.0 if len(past) < 2 else max(np.quantile(past, 0.9) - np.quantile(past, 0.1), 1e-4)
        kappa = math.tanh(gt / scale)
        past.append(gt)
        w *= 1 + v * kappa
        out.append(w)
        z = kappa / (1 + v * kappa)
        a += z * z
        v = min(0.5, max(0.0, v + 2 / (2 - math.log(3)) * z / a))
    return np.array(out)


def _ref_hsic_payoffs(y: np.ndarray, z: np.ndarray, q: float = 0.5) -> np.ndarray:
    """Scalar reference HSIC payoffs (RBF, bandwidth = quantile of past pairwise distances, refitted
    every step up to 32 past points, then when they grew by 10%, frozen beyond 100)."""

    def bw(p: np.ndarray) -> float:
        d = np.abs(p[:, None] - p[None, :])[np.triu_indices(len(p), 1)]
        s = np.quantile(d, q)
        return s if s > 0 else (d.max() if d.max() > 0 else 1.0)

    out, sy, sz, last = [], None, None, 0
    for t in range(1, len(y) // 2):
        n = 2 * t
        py, pz = y[:n], z[:n]
        if sy is None or (n <= 100 and (n <= 32 or n >= 1.1 * last)):
            sy, sz, last = bw(py), bw(pz), n

        def w(a: float, b: float, py=py, pz=pz, sy=sy, sz=sz) -> float:
            ky = rbf_kernel([[a]], py[:, None], gamma=1 / (2 * sy**2))[0]
            kz = rbf_kernel([[b]], pz[:, None], gamma=1 / (2 * sz**2))[0]
            return float(np.mean(ky * kz) - np.mean(ky) * np.mean(kz))

        y1, y2, z1, z2 = y[n], y[n + 1], z[n], z[n + 1]
        out.append(w(y1, z1) + w(y2, z2) - w(y1, z2) - w(y2, z1))
    return np.array(out)


def test_running_quantiles_match_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    vals = torch.randn(3, 40, generator=g, dtype=torch.float64)
    rq = RunningQuantiles(3, 40)
    for t in range(40):
        rq.insert(vals[:, t])
        for q in (0.1, 0.5, 0.9):
            ref = np.quantile(vals[:, : t + 1].numpy(), q, axis=1)
            assert np.allclose(rq.quantile(q).numpy(), ref)


def test_wealth_process_matches_scalar_reference() -> None:
    g = torch.Generator().manual_seed(1)
    pay = 0.05 + torch.randn(4, 60, generator=g, dtype=torch.float64) * 0.3
    ours = wealth_process(pay)
    for i in range(4):
        assert np.allclose(ours[i].numpy(), _ref_wealth(pay[i].numpy()), rtol=1e-12)


def test_skit_rbf_payoffs_and_wealth_match_reference() -> None:
    gen = torch.Generator().manual_seed(2)
    z, y = sample_synthetic(160, (0.3, 0.5, 0.3), generator=gen)
    res = skit(y, z[:, 1], kernel="rbf", tau_max=80, seed=None, stop_at=float("inf"))
    ref_g = _ref_hsic_payoffs(y.numpy(), z[:, 1].numpy())
    assert isinstance(res, BettingResult)
    assert np.allclose(res.payoffs[1:].numpy(), ref_g, rtol=1e-9, atol=1e-12)
    assert math.isnan(float(res.payoffs[0]))  # warm-up step: no bet
    assert np.allclose(res.wealth[1:].numpy(), _ref_wealth(ref_g), rtol=1e-9)


def test_skit_linear_closed_form_equals_generic_product_kernel() -> None:
    """The running-sum linear path equals the HSIC witness evaluated with explicit dot products."""
    gen = torch.Generator().manual_seed(3)
    z, y = sample_synthetic(100, (0.3, 0.5, 0.3), generator=gen)
    res = skit(y, z[:, 1], kernel="linear", tau_max=50, seed=None, stop_at=float("inf"))
    yy, zz = y.numpy(), z[:, 1].numpy()
    for t in range(1, 50):
        n = 2 * t

        def w(a: float, b: float, n=n) -> float:
            ky, kz = a * yy[:n], b * zz[:n]
            return float(np.mean(ky * kz) - np.mean(ky) * np.mean(kz))

        y1, y2, z1, z2 = yy[n], yy[n + 1], zz[n], zz[n + 1]
        assert math.isclose(
            float(res.payoffs[t]), w(y1, z1) + w(y2, z2) - w(y1, z2) - w(y2, z1), rel_tol=1e-9, abs_tol=1e-12
        )


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_cskit_linear_and_rbf_payoff_definition(kernel: str) -> None:
    """cSKIT payoff = w(y, zj, zc) - w(y, z~j, zc) with product kernels, checked by brute force."""
    gen = torch.Generator().manual_seed(4)
    z, y = sample_synthetic(40, (0.3, 0.5, 0.3), generator=gen)
    kern = RBFKernel(bandwidth=0.7) if kernel == "rbf" else "linear"
    res = cskit(y, z, 1, synthetic_sampler(), kernel=kern, tau_max=40, seed=5, stop_at=float("inf"))
    # replay the sampler draws with the same generator use
    g2 = torch.Generator().manual_seed(5)
    perm = torch.argsort(torch.rand(1, 40, generator=g2), dim=1)[0]
    yy, zz = y[perm].numpy(), z[perm].numpy()
    null = synthetic_sampler().sample(z[perm], [0, 2], g2)[:, 1].numpy()

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = np.atleast_2d(a), np.atleast_2d(b)
        return a @ b.T if kernel == "linear" else rbf_kernel(a, b, gamma=1 / (2 * 0.7**2))

    for t in range(1, 40):
        y_p, zj_p, zn_p, zc_p = yy[:t, None], zz[:t, 1:2], null[:t, None], zz[:t][:, [0, 2]]

        def w(a: float, t=t, y_p=y_p, zj_p=zj_p, zn_p=zn_p, zc_p=zc_p) -> float:
            base = k([[yy[t]]], y_p)[0] * k(zz[t, [0, 2]][None], zc_p)[0]
            return float(np.mean(base * (k([[a]], zj_p)[0] - k([[a]], zn_p)[0])))

        assert math.isclose(float(res.payoffs[t]), w(zz[t, 1]) - w(null[t]), rel_tol=1e-8, abs_tol=1e-12)


def test_xskit_scores_linear_closed_form() -> None:
    gen = torch.Generator().manual_seed(6)
    a = torch.randn(30, generator=gen, dtype=torch.float64)
    b = torch.randn(30, generator=gen, dtype=torch.float64) + 0.2
    res = xskit_scores(a, b, "linear", tau_max=30, stop_at=float("inf"))
    for t in range(1, 30):
        ref = (a[t] - b[t]) * (a[:t].mean() - b[:t].mean())
        assert math.isclose(float(res.payoffs[t]), float(ref), rel_tol=1e-9, abs_tol=1e-14)


def test_result_shapes_and_single_api() -> None:
    gen = torch.Generator().manual_seed(7)
    z, y = sample_synthetic(400, (0.3, 0.1, 0.3), repeats=5, generator=gen)
    r = skit(y[:, None, :], z.transpose(1, 2), kernel="linear", tau_max=200)  # (5, 3) tests
    assert isinstance(r, BatchBettingResult)
    assert r.rejected.shape == (5, 3) and r.tau.shape == (5, 3) and r.wealth.shape == (5, 3, 201)
    one = r[2, 0]
    assert isinstance(one, BettingResult)
    assert (one.tau is None) == (not one.rejected)
    if one.rejected:
        assert one.wealth[one.tau] >= 20 and bool((one.wealth[: one.tau] < 20).all())
    assert bool((r.tau[~r.rejected] == 200).all())
    single = skit(y[0], z[0, :, 0], kernel="linear", tau_max=200)
    assert isinstance(single, BettingResult) and isinstance(single.rejected, bool)


def test_batched_equals_one_by_one() -> None:
    """Vectorising over repeats and concepts (with early-stop compaction) changes nothing."""
    gen = torch.Generator().manual_seed(8)
    z, y = sample_synthetic(240, (0.3, 0.3, 0.3), repeats=2, generator=gen)
    batch = skit(y[:, None, :], z.transpose(1, 2), kernel="rbf", tau_max=120, seed=None)
    for i in range(2):
        for j in range(3):
            one = skit(y[i], z[i, :, j], kernel="rbf", tau_max=120, seed=None)
            assert one.rejected == bool(batch.rejected[i, j])
            assert np.allclose(one.wealth.numpy(), batch[i, j].wealth.numpy())


def test_never_peeks_beyond_the_current_step_or_tau_max() -> None:
    gen = torch.Generator().manual_seed(9)
    z, y = sample_synthetic(300, (0.3, 0.1, 0.3), generator=gen)
    base = skit(y, z[:, 1], "rbf", tau_max=70, seed=None, stop_at=float("inf"))
    y2 = y.clone()
    y2[140:] = 1e6  # beyond 2 * tau_max observations: never read
    assert torch.equal(skit(y2, z[:, 1], "rbf", tau_max=70, seed=None, stop_at=float("inf")).wealth, base.wealth)
    y3 = y.clone()
    y3[110:] = -5.0  # from step 56 on (past the bandwidth freeze): the first 55 steps must not change
    changed = skit(y3, z[:, 1], "rbf", tau_max=70, seed=None, stop_at=float("inf")).wealth
    assert torch.equal(changed[:56], base.wealth[:56]) and not torch.equal(changed, base.wealth)


def test_cskit_reads_and_samples_only_the_first_tau_max_observations() -> None:
    calls: list[int] = []

    def sampler(z: torch.Tensor, keep: list[int], gen: torch.Generator | None) -> torch.Tensor:
        calls.append(z.shape[0])
        return synthetic_sampler().sample(z, keep, gen)

    gen = torch.Generator().manual_seed(13)
    z, y = sample_synthetic(100, (0.3, 0.3, 0.3), generator=gen)
    torch.manual_seed(0)  # seed=None: data in the given order, sampler on the global generator
    base = cskit(y, z, 1, sampler, "linear", tau_max=40, seed=None, stop_at=float("inf"))
    assert calls == [40]
    z2, y2 = z.clone(), y.clone()
    z2[40:], y2[40:] = 1e3, -1e3
    torch.manual_seed(0)
    again = cskit(y2, z2, 1, synthetic_sampler(), "linear", tau_max=40, seed=None, stop_at=float("inf"))
    assert torch.equal(again.wealth, base.wealth)


@pytest.mark.parametrize("test", ["skit", "cskit", "xskit"])
def test_type_one_error_under_the_null(test: str) -> None:
    """Rejection rate at b2 = 0 (Z2 unimportant everywhere) stays within alpha's binomial band."""
    reps, tau_max = 200, 150
    gen = torch.Generator().manual_seed(10)
    z, y = sample_synthetic(2 * tau_max, (0.3, 0.0, 0.3), repeats=reps, generator=gen)
    if test == "skit":
        r = skit(y, z[..., 1], "linear", tau_max=tau_max)
    elif test == "cskit":
        r = cskit(y, z, 1, synthetic_sampler(), "linear", tau_max=tau_max)
    else:
        f = lambda x: synthetic_model(x, (0.3, 0.0, 0.3))  # noqa: E731
        r = xskit(
            torch.tensor([0.0, 1.0, 1.0]), 1, [2], synthetic_sampler(), f, "linear", tau_max=tau_max, repeats=reps
        )
    # P(Bin(200, 0.05) > 19) < 0.3%
    assert int(r.rejected.sum()) <= 19


def test_power_under_the_alternative() -> None:
    gen = torch.Generator().manual_seed(11)
    z, y = sample_synthetic(800, (0.3, 0.1, 0.3), repeats=10, generator=gen)
    r = skit(y, z[..., 1], "rbf", tau_max=400)
    assert float(r.rejection_rate()) >= 0.9
    z, y = sample_synthetic(300, (0.3, 0.5, 0.3), repeats=10, generator=gen)
    c = cskit(y, z, 1, synthetic_sampler(), "rbf", tau_max=300)
    assert float(c.rejection_rate()) >= 0.9
    f = lambda x: synthetic_model(x, (0.3, 0.1, 0.3))  # noqa: E731
    x = xskit(torch.tensor([0.0, 1.0, 1.0]), 1, [2], synthetic_sampler(), f, "rbf", tau_max=300, repeats=10)
    assert float(x.rejection_rate()) == 1.0 and float(x.mean_tau()) < 0.5


def test_wealth_is_a_martingale_under_the_null() -> None:
    """E[K_t] = 1 under H0 (fixed t, no stopping): checked on the mean of 1000 tests."""
    gen = torch.Generator().manual_seed(12)
    z, y = sample_synthetic(60, (0.3, 0.0, 0.3), repeats=1000, generator=gen)
    r = skit(y, z[..., 1], "linear", tau_max=30, stop_at=float("inf"))
    final = r.wealth[:, -1]
    se = float(final.std()) / math.sqrt(1000)
    assert abs(float(final.mean()) - 1.0) < 4 * se + 0.02


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"kernel": "poly"}, "kernel"),
        ({"tau_max": 1}, "tau_max"),
        ({"tau_max": 5, "warmup": 5}, "warm-up"),
        ({"tau_max": 500}, "tau_max"),
        ({"stop_at": 2.0}, "stop_at"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    y, z = torch.randn(200), torch.randn(200)
    with pytest.raises(ValueError, match=match):
        skit(y, z, **kwargs)


def test_bad_data() -> None:
    y, z = torch.randn(200), torch.randn(200)
    with pytest.raises(ValueError, match="same length"):
        skit(y, z[:150], tau_max=50)
    bad = y.clone()
    bad[3] = float("nan")
    with pytest.raises(ValueError, match="y contains NaN"):
        skit(bad, z, tau_max=50)
    with pytest.raises(ValueError, match="z contains NaN"):
        cskit(y, torch.full((200, 3), float("nan")), 0, synthetic_sampler(), tau_max=50)
    with pytest.raises(ValueError, match="j must hold"):
        cskit(y, torch.randn(200, 3), 3, synthetic_sampler(), tau_max=50)
    with pytest.raises(ValueError, match="same length"):
        cskit(y, torch.randn(100, 3), 0, synthetic_sampler(), tau_max=50)
    with pytest.raises(ValueError, match="C must not contain"):
        xskit(torch.zeros(3), 1, [1, 2], synthetic_sampler(), lambda x: x[:, 0], tau_max=50)
    with pytest.raises(ValueError, match="one score per sample"):
        xskit(torch.zeros(3), 1, [2], synthetic_sampler(), lambda x: x, tau_max=50)
