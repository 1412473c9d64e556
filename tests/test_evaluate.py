"""The relevance ordering test against known answers: a toy model whose relevant pixels are
known, closed-form distortion for a one-pixel model, a brute-force loop, seeds and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate
from torch import nn

import provex
from provex.evaluate import component_ranks, gaussian_noise, relevance_ordering
from provex.explanation import Explanation


class SparseLinear(nn.Module):
    """Logits of 3 classes that depend on 6 known pixels of a 6x6 image only."""

    relevant = (3, 8, 14, 20, 27, 33)

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        w = torch.zeros(3, 36, dtype=torch.float64)
        w[:, list(self.relevant)] = torch.randn(3, 6, dtype=torch.float64) * 4.0
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T


def _truth(n: int) -> torch.Tensor:
    t = torch.zeros(n, 1, 6, 6, dtype=torch.float64)
    t.view(n, -1)[:, list(SparseLinear.relevant)] = 1.0
    return t


def test_true_relevance_has_lowest_distortion_area() -> None:
    model = SparseLinear().eval()
    torch.manual_seed(1)
    x = torch.rand(4, 1, 6, 6, dtype=torch.float64)
    truth = _truth(4)
    gen = torch.Generator().manual_seed(2)
    candidates = {
        "truth": truth,
        "inverted": -truth,
        "constant": torch.zeros_like(truth),
        **{f"random{k}": torch.rand(x.shape, generator=gen, dtype=torch.float64) for k in range(3)},
        "truth+noise": truth * 0.5 + torch.rand(x.shape, generator=gen, dtype=torch.float64),
    }
    curves = {k: relevance_ordering(model, x, r, step=2, n_samples=64) for k, r in candidates.items()}
    areas = {k: c.auc_distortion for k, c in curves.items()}
    assert min(areas, key=areas.get) == "truth"
    assert areas["inverted"] == max(areas.values())
    t = curves["truth"]
    # nothing changes until the first relevant pixel goes: 36 - 6 = 30 irrelevant, 15 steps of 2
    assert bool((t.distortion[:16] == 0).all()) and bool((t.accuracy[:16] == 1).all())
    assert float(t.distortion[16:].min()) > 0
    assert t.fraction_kept[0] == 1.0 and t.fraction_kept[-1] == 0.0 and len(t.fraction_kept) == 19
    assert areas["truth"] < areas["truth+noise"] < areas["constant"]


class OnePixel(nn.Module):
    """Two classes with logits (a * x_0, 0): the softmax probability of class 0 is sigmoid(a x_0)."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.a * x.flatten(1)[:, :1]
        return torch.cat([z, torch.zeros_like(z)], 1)


def test_distortion_and_accuracy_match_closed_form() -> None:
    a, x0 = 3.0, 0.9
    model = OnePixel(a).eval()
    x = torch.linspace(-0.4, 1.0, 16, dtype=torch.float64).view(1, 1, 4, 4).clone()
    x[0, 0, 0, 0] = x0
    lo, hi = float(x.min()), float(x.max())
    relevance = torch.zeros_like(x)
    relevance[0, 0, 0, 0] = 1.0  # pixel 0 goes last
    c = relevance_ordering(model, x, relevance, target=0, step=3, n_samples=20000, seed=7)

    def sig(v: float) -> float:
        return 1.0 / (1.0 + math.exp(-v))

    p0 = sig(a * x0)
    expected_d = integrate.quad(lambda u: (sig(a * u) - p0) ** 2, lo, hi)[0] / (hi - lo)
    expected_acc = hi / (hi - lo)  # class 0 wins iff u > 0
    # steps 0..5 keep pixel 0 (15 others go 3 at a time), step 6 replaces everything
    assert len(c.distortion) == 7
    assert bool((c.distortion[:6] == 0).all()) and bool((c.accuracy[:6] == 1).all())
    assert abs(float(c.distortion[6]) - expected_d) < 4 * float(c.distortion_se[6])
    assert abs(float(c.accuracy[6]) - expected_acc) < 4 * float(c.accuracy_se[6])
    f = c.fraction_kept.numpy()
    assert c.auc_distortion == pytest.approx(float(c.distortion[6]) * 0.5 * (f[5] - f[6]), rel=1e-12)
    assert c.forward_passes == 1 + 6 * 20000


def test_matches_a_brute_force_loop() -> None:
    """With zero noise, every step is deterministic: compare with a plain per-step loop."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(18, 10), nn.Tanh(), nn.Linear(10, 4)).double().eval()
    x = torch.rand(3, 2, 3, 3, dtype=torch.float64)
    rel = torch.randn_like(x)

    def zeros(image: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.zeros(n, *image.shape, dtype=image.dtype)

    c = relevance_ordering(model, x, rel, step=4, n_samples=3, noise=zeros, batch_size=5)
    with torch.no_grad():
        probs = torch.softmax(model(x), 1)
        pred = probs.argmax(1)
        for i in range(3):
            order = torch.argsort(rel[i].flatten())  # no ties in a Gaussian map
            for t in range(len(c.fraction_kept)):
                y = x[i].flatten().clone()
                y[order[: min(4 * t, 18)]] = 0.0
                p = torch.softmax(model(y.view(1, 2, 3, 3)), 1)[0]
                want = float((p[pred[i]] - probs[i, pred[i]]) ** 2)
                assert float(c.per_image_distortion[i, t]) == pytest.approx(want)
                assert float(c.per_image_accuracy[i, t]) == float(p.argmax() == pred[i])


def test_deterministic_with_seed_and_independent_of_batch_size() -> None:
    model = SparseLinear().eval()
    x = torch.rand(3, 1, 6, 6, dtype=torch.float64)
    rel = torch.randn_like(x)
    a = relevance_ordering(model, x, rel, step=3, n_samples=16, seed=5)
    b = relevance_ordering(model, x, rel, step=3, n_samples=16, seed=5, batch_size=7)
    c = relevance_ordering(model, x, rel, step=3, n_samples=16, seed=6)
    assert torch.equal(a.per_image_distortion, b.per_image_distortion)
    assert torch.equal(a.per_image_accuracy, b.per_image_accuracy)
    assert not torch.equal(a.per_image_distortion, c.per_image_distortion)
    # each image has its own stream: an image alone gives what it gave in the batch of 3
    for i in range(3):
        alone = relevance_ordering(model, x[i : i + 1], rel[i : i + 1], step=3, n_samples=16, seed=5)
        assert torch.equal(alone.per_image_distortion[0], a.per_image_distortion[i])
    # one seed per image: image i uses seed[i], wherever it sits
    seq = relevance_ordering(model, x.flip(0), rel.flip(0), step=3, n_samples=16, seed=[7, 5, 5])
    assert torch.equal(seq.per_image_distortion[1:].flip(0), a.per_image_distortion[:2])
    with pytest.warns(FutureWarning, match="n_noise is deprecated"):
        old = relevance_ordering(model, x, rel, step=3, n_noise=16, seed=5)
    assert torch.equal(old.per_image_distortion, a.per_image_distortion) and old.settings["n_samples"] == 16


def test_constant_maps_are_random_orderings() -> None:
    model = SparseLinear().eval()
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    flat = torch.zeros_like(x)
    c1 = relevance_ordering(model, x, flat, step=2, n_samples=8, seed=0)
    c2 = relevance_ordering(model, x, flat, step=2, n_samples=8, seed=1)
    assert math.isfinite(c1.auc_distortion) and not torch.equal(c1.distortion, c2.distortion)
    gen = torch.Generator().manual_seed(0)
    ranks = component_ranks(torch.zeros(50), gen)
    assert sorted(ranks.tolist()) == list(range(50)) and ranks.tolist() != list(range(50))
    tied = torch.tensor([2.0, 1.0, 1.0, 3.0, 1.0, 0.0])
    counts = np.zeros((6, 6))
    for s in range(300):
        r = component_ranks(tied, torch.Generator().manual_seed(s))
        assert r[5] == 0 and r[0] == 4 and r[3] == 5  # distinct values keep their order
        counts[[1, 2, 4], r[[1, 2, 4]].numpy()] += 1
    assert counts[[1, 2, 4]][:, 1:4].min() > 60  # the three tied entries share ranks 1..3 at random


def test_explanation_input_tie_channels_and_dict() -> None:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(32, 3)).double().eval()
    x = torch.rand(2, 2, 4, 4, dtype=torch.float64)
    rel = torch.randn_like(x)
    exp = Explanation(relevance=rel, method="m", target=torch.tensor([2, 1]))
    c = relevance_ordering(model, x, exp, step=3, n_samples=4)
    assert c.settings["target"] == [2, 1] and c.settings["n_components"] == 32
    tied = relevance_ordering(model, x, rel, step=3, n_samples=4, tie_channels=True)
    assert tied.settings["n_components"] == 16 and len(tied.fraction_kept) == math.ceil(16 / 3) + 1
    d = c.to_dict(per_image=False)
    assert "per_image_distortion" not in d and len(d["per_image_auc_distortion"]) == 2
    assert d["auc_distortion"] == pytest.approx(float(c.per_image_auc_distortion.mean()))


def test_one_image_standard_errors_come_from_draws() -> None:
    model = SparseLinear().eval()
    x = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    c = relevance_ordering(model, x, torch.randn_like(x), step=6, n_samples=200)
    assert float(c.distortion_se[0]) == 0.0 and bool((c.distortion_se[1:] > 0).any())
    assert 0 < c.auc_distortion_se < c.auc_distortion


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"relevance": torch.zeros(2, 1, 6, 5)}, r"relevance has shape \(2, 1, 6, 5\) but x has shape"),
        ({"relevance": torch.full((2, 1, 6, 6), float("nan"))}, "relevance contains NaN"),
        ({"relevance": [[0.0]]}, "relevance must be a torch.Tensor"),
        ({"step": 0}, "step must be a positive integer"),
        ({"step": 2.5}, "step must be an integer"),
        ({"step": 36}, "step=36 leaves no intermediate point.*36"),
        ({"n_samples": 0}, "n_samples must be a positive integer"),
        ({"batch_size": -1}, "batch_size must be a positive integer"),
        ({"seed": -3}, "seed must be non-negative"),
        ({"seed": [1, 2, 3]}, "seed has 3 entries for 2 images"),
        ({"noise": "gaussian"}, "noise must be 'uniform', 'reference' or a callable"),
        ({"reference": "ref.safetensors"}, "reference is used by noise='reference' only"),
        ({"target": 7}, "target out of range"),
        ({"x": torch.rand(2, 36)}, r"x must have shape \(N, C, H, W\)"),
    ],
)
def test_bad_input(kwargs: dict, match: str) -> None:
    model = SparseLinear().float().eval()
    args = {"x": torch.rand(2, 1, 6, 6), "relevance": torch.rand(2, 1, 6, 6), "n_samples": 2}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        relevance_ordering(model, **args)


def test_gaussian_noise_has_the_requested_moments() -> None:
    mean = torch.linspace(-1.0, 1.0, 12).view(1, 3, 4)
    var = torch.linspace(0.0, 2.0, 12).view(1, 3, 4)
    draw = gaussian_noise(mean, var)
    z = draw(torch.zeros(1, 3, 4), 40000, torch.Generator().manual_seed(0))
    assert z.shape == (40000, 1, 3, 4)
    torch.testing.assert_close(z.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(z.var(0), var, atol=0.05, rtol=0.05)
    assert bool((z[:, 0, 0, 0] == -1.0).all())  # zero variance: the mean itself
    model = SparseLinear().eval()
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    c = relevance_ordering(model, x, _truth(2), step=3, n_samples=16, noise=gaussian_noise(0.5, 0.04))
    assert c.settings["noise"] == "gaussian" and bool((c.distortion[:11] == 0).all())
    with pytest.raises(ValueError, match="non-negative var"):
        gaussian_noise(0.0, -1.0)


def test_reference_noise_draws_the_reference_per_image() -> None:
    """noise='reference': the replaced components are N(mean, var) draws of the reference (checked
    on a model whose logit is the mean of the image), per image without one (own statistics)."""
    import provex
    from provex.reference import ReferenceWarning

    class MeanModel(torch.nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            m = z.flatten(1).mean(1)
            return torch.stack([m, torch.zeros_like(m)], 1)

    x = torch.full((1, 1, 6, 6), 3.0, dtype=torch.float64)
    rel = torch.arange(36, dtype=torch.float64).view(1, 1, 6, 6)
    ref = provex.Reference(torch.full((1, 6, 6), -1.0), torch.full((1, 6, 6), 0.25))
    c = relevance_ordering(
        MeanModel(), x, rel, target=0, step=36 // 2, n_samples=4000, noise="reference", reference=ref
    )
    # all replaced at the last step: logit = mean of draws ~ -1, so softmax p0 = sigmoid(-1); distortion vs sigmoid(3)
    p_full = torch.sigmoid(torch.tensor(3.0, dtype=torch.float64))
    want = float((torch.sigmoid(torch.tensor(-1.0, dtype=torch.float64)) - p_full) ** 2)
    assert float(c.per_image_distortion[0, -1]) == pytest.approx(want, rel=0.02)
    assert c.settings["reference"]["digest"] == ref.digest()
    with pytest.warns(ReferenceWarning):
        own = relevance_ordering(MeanModel(), x, rel, target=0, step=18, n_samples=8, noise="reference")
    # each image's own statistics: a constant image has variance 0 and mean 3 -> no distortion at all
    assert float(own.per_image_distortion.abs().max()) == 0.0


def test_bad_noise_function_shape() -> None:
    def wrong(image: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.zeros(n + 1, *image.shape)

    with pytest.raises(ValueError, match="noise returned shape"):
        relevance_ordering(SparseLinear().float().eval(), torch.rand(1, 1, 6, 6), torch.rand(1, 1, 6, 6), noise=wrong)


def test_on_the_shipped_model(mnist_model: nn.Module, mnist_samples) -> None:
    """Sensitivity magnitude beats its own reversal and a random map on real digits."""
    x, _ = mnist_samples
    x = x[:2]
    sens = provex.explain(mnist_model, x, "sensitivity", absolute=True)
    kw = {"step": 28, "n_samples": 8}
    good = relevance_ordering(mnist_model, x, sens, **kw)
    bad = relevance_ordering(mnist_model, x, -sens.relevance, **kw)
    assert good.auc_distortion < bad.auc_distortion
    assert good.accuracy[0] == 1.0 and good.distortion[0] == 0.0
    assert good.forward_passes == 2 + 2 * 28 * 8 and good.passes_per_second > 0
