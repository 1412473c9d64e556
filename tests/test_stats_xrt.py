"""SHAP-XRT and the samplers, against closed forms and known distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import kstest

import provex
from provex.stats import (
    GaussianSampler,
    KDESampler,
    RegionSampler,
    ebh,
    fdr_betting,
    grid_regions,
    paint,
    quadrant_regions,
    rank_concepts,
    shap_xrt,
    skit,
    synthetic_sampler,
    xrt_features,
)


def test_gaussian_sampler_matches_closed_form_conditional() -> None:
    """Synthetic concepts: Z1 | Z3 = z3 ~ N((z3 + 1) / 2, 1/2); Z2 independent N(-1, 1)."""
    s = synthetic_sampler()
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([[9.0, 9.0, 3.0]], dtype=torch.float64).expand(40000, 3)
    out = s.sample(x, [2], g)
    assert bool((out[:, 2] == 3.0).all())
    assert abs(float(out[:, 0].mean()) - 2.0) < 0.02 and abs(float(out[:, 0].var()) - 0.5) < 0.02
    assert abs(float(out[:, 1].mean()) + 1.0) < 0.02 and abs(float(out[:, 1].var()) - 1.0) < 0.03
    joint = s.draw(40000, g)
    assert np.allclose(np.cov(joint.T.numpy()), s.cov.numpy(), atol=0.05)


def test_kde_sampler_hits_target_neff_and_approximates_conditional() -> None:
    """Bivariate normal, rho = 0.8: Z1 | Z2 = 1 ~ N(0.8, 0.36) (KDE smoothing adds a little)."""
    g = torch.Generator().manual_seed(1)
    gs = GaussianSampler([0.0, 0.0], [[1.0, 0.8], [0.8, 1.0]])
    table = gs.draw(20000, g)
    kde = KDESampler(table, n_eff=500)
    w = kde._weights(torch.tensor([[1.0]], dtype=torch.float64), [1])
    assert abs(float(1.0 / w.square().sum()) - 500) < 75  # tuned on a 4096-row subset of the table
    out = kde.sample(torch.tensor([[5.0, 1.0]], dtype=torch.float64).expand(20000, 2), [1], g)
    assert bool((out[:, 1] == 1.0).all())
    assert abs(float(out[:, 0].mean()) - 0.8) < 0.05
    assert 0.33 < float(out[:, 0].var()) < 0.45


def test_kde_nearest_neighbour_lift() -> None:
    g = torch.Generator().manual_seed(2)
    table = torch.randn(300, 3, generator=g, dtype=torch.float64)
    emb = torch.randn(300, 7, generator=g)
    kde = KDESampler(table, embeddings=emb, n_eff=30)
    z = torch.randn(50, 3, generator=g, dtype=torch.float64)
    idx = kde.nearest(z)
    brute = torch.tensor([int(np.argmin(((table.numpy() - zi) ** 2).sum(1))) for zi in z.numpy()])
    assert torch.equal(idx, brute)
    h = kde.sample_embedding(z, [0, 1], g)
    assert h.shape == (50, 7)
    assert all(any(torch.equal(row, e) for e in emb) for row in h[:5])


def test_regions_and_region_sampler() -> None:
    r = grid_regions(28, 28, 2)
    assert r.shape == (4, 28, 28) and bool((r.sum(0) == 1).all())
    assert torch.equal(quadrant_regions(28, 28, 1), r)
    assert quadrant_regions(28, 28, 2).shape == (16, 28, 28)
    assert torch.equal(paint(torch.arange(4.0), r)[0, 0], torch.tensor(0.0))
    assert float(paint(torch.arange(4.0), r)[27, 27]) == 3.0
    x = torch.ones(5, 1, 28, 28)
    s = RegionSampler(r, fill=(torch.zeros(1, 28, 28), torch.zeros(1, 28, 28)))
    out = s.sample(x, [1], torch.Generator().manual_seed(0))
    assert bool((out[:, :, r[1]] == 1).all()) and bool((out[:, :, ~r[1]] == 0).all())
    with pytest.raises(ValueError, match="keep has indices"):
        s.sample(x, [4])


def test_null_p_values_are_uniform_and_important_feature_has_power() -> None:
    """Independent N(0, 1) features, f = sigmoid(3 x0 + 3 x1): x3 is unimportant for every C."""
    d = 5
    s = GaussianSampler(torch.zeros(d), torch.eye(d))

    def f(xs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(3 * xs[:, 0] + 3 * xs[:, 1])

    g = torch.Generator().manual_seed(3)
    p_null, p_imp = [], []
    for r in range(200):
        x = torch.randn(d, generator=g, dtype=torch.float64)
        x[0] = 1.5
        p_null.append(shap_xrt(f, s, x, 3, [2], K=50, seed=r, shapley=False).p_value)
        p_imp.append(shap_xrt(f, s, x, 0, [2], K=50, M=10, seed=r, shapley=False).p_value)
    assert kstest(p_null, "uniform").pvalue > 0.01
    assert np.mean(np.array(p_imp) <= 0.05) > 0.8


def test_shapley_from_the_same_value_function_matches_closed_form() -> None:
    """Linear f, independent features: phi_j = w_j (x_j - mu_j); efficiency sum = f(x) - E f."""
    d = 4
    mu = torch.tensor([0.5, -1.0, 2.0, 0.0])
    s = GaussianSampler(mu, torch.eye(d) * 0.25)
    w = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    x = torch.tensor([1.5, 0.0, 1.0, 3.0], dtype=torch.float64)
    res = xrt_features(lambda xs: xs @ w, s, x, K=400, M=5, seed=0)
    exact = w * (x - mu.double())
    assert torch.allclose(res["shapley"], exact, atol=0.06)
    assert math.isclose(float(res["shapley"].sum()), float(x @ w - mu.double() @ w), abs_tol=0.06)
    one = shap_xrt(lambda xs: xs @ w, s, x, 1, [0], K=400, M=5, seed=0)
    assert math.isclose(one.gamma, float(exact[1]), abs_tol=0.06) and one.p_value > 0.5  # negative effect


def test_binary_f_expected_p_value_closed_form_and_bound() -> None:
    """Binary f, M = 1: E[p] = 1 - K/(K+1) v(C+j)(1 - v(C)) <= 1 - K/(K+1) gamma."""
    s = GaussianSampler(torch.zeros(2), torch.eye(2))

    def f(xs: torch.Tensor) -> torch.Tensor:
        return ((xs[:, 0] + 0.5 * xs[:, 1]) > 1.0).double()

    x = torch.tensor([2.5, 0.0], dtype=torch.float64)
    K = 20
    # exact value function: v({0}) = P(2.5 + 0.5 X1 > 1) , v({}) = P(X0 + 0.5 X1 > 1)
    from scipy.stats import norm

    a = float(norm.cdf(1.5 / 0.5))
    b = float(1 - norm.cdf(1.0 / math.sqrt(1.25)))
    ps = [shap_xrt(f, s, x, 0, [], K=K, seed=r, shapley=False).p_value for r in range(3000)]
    expected = 1 - K / (K + 1) * a * (1 - b)
    assert abs(np.mean(ps) - expected) < 4 * np.std(ps) / math.sqrt(3000)
    assert expected <= 1 - K / (K + 1) * (a - b) + 1e-12


def test_shap_xrt_region_method_on_mnist(mnist_model: torch.nn.Module, mnist_samples) -> None:
    x, _ = mnist_samples
    exp = provex.explain(mnist_model, x[:1], "shap-xrt", grid=14, K=30, progress=False)
    assert exp.relevance.shape == (1, 1, 28, 28)
    p = exp.info["p_values"]
    assert p.shape == (1, 4) and bool(((p > 0) & (p <= 1)).all())
    # the value function is shared: Shapley values of the 4 regions sum to v(all) - v(empty)
    assert math.isfinite(float(exp.info["shapley"].sum()))
    assert exp.info["reference"]["source"].startswith("model card")
    # default grid: the four quadrants (the same regions as grid=14 on 28 x 28)
    auto = provex.explain(mnist_model, x[:1], "shap-xrt", K=30, progress=False)
    assert torch.equal(auto.info["regions"], exp.info["regions"]) and torch.equal(auto.relevance, exp.relevance)
    # 16 subsets x K draws, plus the registry's prediction pass
    assert exp.info["model_calls"] == 16 * 30 + 1


def test_shap_xrt_images_have_their_own_streams_and_reference() -> None:
    """An image gets the same draws alone and in a batch; the fill is the reference's Gaussian."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 3),
    ).eval()
    x = torch.rand(3, 1, 8, 8)
    ref = provex.Reference(torch.full((1, 8, 8), 0.1), torch.full((1, 8, 8), 0.05))
    kw = {"K": 12, "reference": ref, "progress": False, "seed": 5}
    batch = provex.explain(model, x, "shap-xrt", **kw)
    alone = provex.explain(model, x[2:3], "shap-xrt", **kw)
    assert torch.equal(alone.relevance[0], batch.relevance[2])
    assert torch.equal(alone.info["p_values"][0], batch.info["p_values"][2])
    assert batch.info["reference"]["digest"] == ref.digest()
    seq = provex.explain(model, x[:2], "shap-xrt", **{**kw, "seed": [5, 9]})
    assert torch.equal(seq.relevance[0], batch.relevance[0]) and not torch.equal(seq.relevance[1], batch.relevance[1])
    with pytest.warns(FutureWarning, match="'M' of 'shap-xrt' is deprecated"):
        old = provex.explain(model, x[2:3], "shap-xrt", M=1, **kw)
    assert torch.equal(old.relevance, alone.relevance)
    with pytest.raises(ValueError, match=r"grid=2 gives 16 regions.*region side in pixels"):
        provex.explain(model, x[:1], "shap-xrt", grid=2)


def test_shap_xrt_shapley_values_match_enumeration() -> None:
    """ValueFunction.shapley_values (via provex.shapley) equals the definition by enumeration."""
    import itertools

    s = GaussianSampler(torch.zeros(4), torch.eye(4))
    x = torch.tensor([1.0, -0.5, 2.0, 0.3], dtype=torch.float64)
    from provex.stats.xrt import ValueFunction

    vf = ValueFunction(
        lambda t: t[:, 0] * t[:, 1] + t[:, 2].sin() + t[:, 3], s, x, 50, 4, torch.Generator().manual_seed(0)
    )
    phi = vf.shapley_values()
    for j in range(4):
        others = [i for i in range(4) if i != j]
        want = sum(
            (vf([*c, j]) - vf(list(c))) / (4 * math.comb(3, r))
            for r in range(4)
            for c in itertools.combinations(others, r)
        )
        assert math.isclose(float(phi[j]), want, rel_tol=1e-12, abs_tol=1e-12)
    assert math.isclose(float(phi.sum()), vf([0, 1, 2, 3]) - vf([]), rel_tol=1e-12)


def test_shap_xrt_bad_input() -> None:
    s = GaussianSampler(torch.zeros(3), torch.eye(3))
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="C must not contain"):
        shap_xrt(lambda t: t[:, 0], s, x, 0, [0])
    with pytest.raises(ValueError, match="K must be"):
        shap_xrt(lambda t: t[:, 0], s, x, 0, [], K=0)
    with pytest.raises(ValueError, match="j must be"):
        shap_xrt(lambda t: t[:, 0], s, x, 5, [])
    with pytest.raises(ValueError, match="one number per sample"):
        shap_xrt(lambda t: t, s, x, 0, [])
    with pytest.raises(ValueError, match="x contains NaN"):
        shap_xrt(lambda t: t[:, 0], s, torch.full((3,), float("nan")), 0, [])


def test_ebh_matches_definition_by_enumeration() -> None:
    g = torch.Generator().manual_seed(4)
    for _ in range(200):
        e = torch.exp(3 * torch.randn(6, generator=g))
        rej = ebh(e, 0.1)
        k = 6
        srt = sorted(e.tolist(), reverse=True)
        kstar = max([i for i in range(1, k + 1) if srt[i - 1] >= k / (0.1 * i)], default=0)
        assert int(rej.sum()) == kstar
        if kstar:
            assert float(e[rej].min()) >= srt[kstar - 1] - 1e-12


def test_fdr_betting_and_ranking_on_synthetic_tests() -> None:
    from provex.stats import sample_synthetic

    g = torch.Generator().manual_seed(5)
    z, y = sample_synthetic(600, (0.3, 0.0, 0.3), repeats=30, generator=g)
    r = skit(y[:, None, :], z.transpose(1, 2), "linear", tau_max=300, stop_at=3 / 0.05)
    fdr = fdr_betting(r)
    assert fdr.rejected.shape == (30, 3)
    assert bool((fdr.rejected <= (r.final_wealth() >= 20)).all())  # e-BH is never looser than 1/alpha
    ranked = rank_concepts(r.rejected, r.tau, 300, ["z1", "z2", "z3"])
    assert ranked[-1].name == "z2" and not ranked[-1].important
    assert ranked[0].important
