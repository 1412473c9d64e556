"""The classic baselines against direct computations: autograd, hand-written rules, exact Shapley
values and least squares on small models; plus options, determinism and bad input."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import provex
from provex.baselines.perturbation import feature_masks

BASELINES = ["smoothgrad", "guided-backprop", "lrp-alpha-beta", "deep-taylor", "kernel-shap", "lime"]


def test_registered_with_options() -> None:
    specs = {s.name: s for s in provex.methods(details=True)}
    for name in BASELINES:
        assert specs[name].family == "classic attribution"
    assert specs["lrp-alpha-beta"].options["alpha"] == 2.0 and specs["lrp-alpha-beta"].options["beta"] == 1.0
    assert specs["lime"].options["n_samples"] == 1000 and specs["kernel-shap"].options["n_samples"] is None


# --- SmoothGrad -------------------------------------------------------------------------------


class Quadratic(nn.Module):
    """Logits (x^T A_c x) per class: gradients vary with the input, so averaging matters."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.a = nn.Parameter(torch.randn(3, 16, 16, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.flatten(1)
        return torch.einsum("ni,cij,nj->nc", f, self.a, f) + f.sum(1, keepdim=True).sin()


@pytest.mark.parametrize("square", [False, True])
def test_smoothgrad_is_mean_of_autograd_gradients_over_its_draws(square: bool) -> None:
    model = Quadratic().eval()
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    x[1] += 10.0  # far apart, so each noisy row is attributed to its own image
    seen: list[torch.Tensor] = []
    hook = model.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach().clone()))
    target = torch.tensor([0, 2])
    exp = provex.explain(model, x, "smoothgrad", target=target, n_samples=7, noise_level=0.2, square=square)
    hook.remove()
    rows = torch.cat(seen[1:])  # seen[0] is explain()'s own prediction pass
    assert rows.shape[0] == 14
    for i, t in enumerate([0, 2]):
        mine = rows[(rows - x[i]).flatten(1).norm(dim=1) < 5.0]
        assert mine.shape[0] == 7
        noise = mine - x[i]
        rng = float(x[i].max() - x[i].min())
        assert 0.05 * rng < float(noise.std()) < 0.4 * rng  # noise at the requested level
        grads = []
        for row in mine:
            r = row[None].clone().requires_grad_(True)
            (g,) = torch.autograd.grad(model(r)[0, t], r)
            grads.append(g[0] ** 2 if square else g[0])
        torch.testing.assert_close(exp.relevance[i], torch.stack(grads).mean(0), rtol=1e-9, atol=1e-9)


def test_smoothgrad_seeded_and_leaves_global_rng_alone(tiny_model: nn.Module) -> None:
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = provex.explain(tiny_model, x, "smoothgrad", n_samples=5, seed=1)
    assert torch.equal(torch.rand(1), expected_next)
    b = provex.explain(tiny_model, x, "smoothgrad", n_samples=5, seed=1)
    c = provex.explain(tiny_model, x, "smoothgrad", n_samples=5, seed=2)
    assert torch.equal(a.relevance, b.relevance) and not torch.equal(a.relevance, c.relevance)
    # an image's map does not depend on its batch-mates or its position among them
    alone = provex.explain(tiny_model, x[1:], "smoothgrad", n_samples=5, seed=1)
    swapped = provex.explain(tiny_model, x.flip(0), "smoothgrad", n_samples=5, seed=1)
    torch.testing.assert_close(alone.relevance[0], a.relevance[1], rtol=0, atol=0)
    torch.testing.assert_close(swapped.relevance.flip(0), a.relevance, rtol=0, atol=0)
    zero = provex.explain(tiny_model, x, "smoothgrad", n_samples=3, noise_level=0.0)
    sens = provex.explain(tiny_model, x, "sensitivity")
    torch.testing.assert_close(zero.relevance, sens.relevance)


# --- Guided backprop ----------------------------------------------------------------------------


class TwoReluNet(nn.Sequential):
    def __init__(self) -> None:
        torch.manual_seed(5)
        super().__init__(
            nn.Conv2d(1, 3, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(27, 7),
            nn.ReLU(),
            nn.Linear(7, 4),
        )


def _guided_by_hand(net: TwoReluNet, x: torch.Tensor, target: int) -> torch.Tensor:
    conv, _, _, _, fc1, _, fc2 = net
    z1 = conv(x)
    a1 = z1.clamp(min=0)
    p = nn.functional.avg_pool2d(a1, 2)
    z2 = p.flatten(1) @ fc1.weight.T + fc1.bias
    g = torch.zeros(x.shape[0], 4, dtype=x.dtype)
    g[:, target] = 1.0
    g = g @ fc2.weight  # d out / d a2
    g = (z2 > 0) * g.clamp(min=0)  # guided ReLU: forward gate and only positive signals
    g = (g @ fc1.weight).view_as(p)  # d / d p
    g = g.repeat_interleave(2, 2).repeat_interleave(2, 3) / 4.0  # average-pool backward
    g = (z1 > 0) * g.clamp(min=0)
    return nn.grad.conv2d_input(x.shape, conv.weight, g, padding=1)


def test_guided_backprop_matches_hand_written_backward() -> None:
    net = TwoReluNet().double().eval()
    torch.manual_seed(6)
    x = torch.randn(3, 1, 6, 6, dtype=torch.float64)
    for target in range(4):
        exp = provex.explain(net, x, "guided-backprop", target=target)
        with torch.no_grad():
            hand = _guided_by_hand(net, x, target)
        torch.testing.assert_close(exp.relevance, hand, rtol=1e-10, atol=1e-12)
    plain = provex.explain(net, x, "sensitivity", target=0).relevance
    assert not torch.allclose(plain, provex.explain(net, x, "guided-backprop", target=0).relevance)


def test_guided_backprop_needs_relu_modules() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(36, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.fc(x.flatten(1)))

    with pytest.raises(ValueError, match=r"activations as modules \(nn\.ReLU"):
        provex.explain(Functional().eval(), torch.rand(1, 1, 6, 6), "guided-backprop")


# --- LRP alpha-beta and deep Taylor -------------------------------------------------------------


def _stab(d: torch.Tensor) -> torch.Tensor:
    """provex's stabilizer: |d| raised to >= 1e-6 x the per-image RMS of d, sign kept (+ for 0): 0 / 0 -> 0."""
    rms = d.square().flatten(1).mean(1).sqrt().view(-1, *([1] * (d.ndim - 1)))
    return torch.where(d >= 0, 1.0, -1.0) * torch.maximum(d.abs(), 1e-6 * rms + torch.finfo(d.dtype).tiny)


def _alpha_beta_by_hand(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, r_out: torch.Tensor, alpha, beta):
    """One dense layer: z_jk = x_j w_kj; Bach et al. 2015 eq. (60) with bias in the denominators."""
    z = x[:, None, :] * w[None]  # (N, K, J)
    zp, zn = z.clamp(min=0), z.clamp(max=0)
    dp = zp.sum(2) + b.clamp(min=0)
    dn = zn.sum(2) + b.clamp(max=0)
    ratio = alpha * zp / _stab(dp)[..., None] - beta * zn / _stab(dn)[..., None]
    return (ratio * r_out[..., None]).sum(1)


def _start(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return torch.zeros_like(out).scatter_(1, target[:, None], out.gather(1, target[:, None]))


def test_alpha_beta_dense_layer_matches_formula() -> None:
    torch.manual_seed(7)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 3)).double().eval()
    x = torch.randn(4, 1, 2, 3, dtype=torch.float64)  # negative inputs: (x w)^+ != x w^+
    target = torch.tensor([0, 1, 2, 1])
    exp = provex.explain(model, x, "lrp-alpha-beta", target=target, dense="alpha-beta")
    lin = model[1]
    with torch.no_grad():
        hand = _alpha_beta_by_hand(x.flatten(1), lin.weight, lin.bias, _start(model, x, target), 2.0, 1.0)
    torch.testing.assert_close(exp.relevance.flatten(1), hand, rtol=1e-5, atol=1e-8)
    three = provex.explain(model, x, "lrp-alpha-beta", target=target, dense="alpha-beta", alpha=3.0, beta=2.0)
    with torch.no_grad():
        hand3 = _alpha_beta_by_hand(x.flatten(1), lin.weight, lin.bias, _start(model, x, target), 3.0, 2.0)
    torch.testing.assert_close(three.relevance.flatten(1), hand3, rtol=1e-5, atol=1e-8)


def test_alpha_beta_convolution_and_epsilon_dense_match_formulas() -> None:
    torch.manual_seed(8)
    conv = nn.Sequential(nn.Conv2d(1, 3, (2, 3)), nn.Flatten()).double().eval()  # kernel = image: a dense layer
    x = torch.randn(3, 1, 2, 3, dtype=torch.float64)
    target = torch.tensor([2, 0, 1])
    exp = provex.explain(conv, x, "lrp-alpha-beta", target=target)
    with torch.no_grad():
        w = conv[0].weight.view(3, 6)
        hand = _alpha_beta_by_hand(x.flatten(1), w, conv[0].bias, _start(conv, x, target), 2.0, 1.0)
    torch.testing.assert_close(exp.relevance.flatten(1), hand, rtol=1e-5, atol=1e-8)
    dense = nn.Sequential(nn.Flatten(), nn.Linear(6, 3)).double().eval()
    eps = provex.explain(dense, x, "lrp-alpha-beta", target=target, epsilon=0.5).relevance.flatten(1)
    with torch.no_grad():
        z = dense(x)
        zt = z.gather(1, target[:, None])
        w_t = dense[1].weight[target]  # (N, 6)
        hand_eps = x.flatten(1) * w_t / (zt + 0.5 * torch.where(zt >= 0, 1.0, -1.0)) * zt
    torch.testing.assert_close(eps, hand_eps, rtol=1e-6, atol=1e-9)


def test_alpha_beta_conserves_relevance_without_bias() -> None:
    torch.manual_seed(9)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3)).double().eval()
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.bias.zero_()
    x = torch.rand(5, 1, 3, 4, dtype=torch.float64) + 0.1
    # precondition of exact conservation: every unit carrying relevance has inputs of both signs
    with torch.no_grad():
        h = model[:3](x)
        assert bool((model[1].weight > 0).any(1).all() and (model[1].weight < 0).any(1).all())
        contrib = h[:, None, :] * model[3].weight[None]
        assert bool(((contrib > 0).any(2) & (contrib < 0).any(2)).all())
    exp = provex.explain(model, x, "lrp-alpha-beta", dense="alpha-beta")
    logit = model(x).gather(1, exp.target[:, None])[:, 0]
    torch.testing.assert_close(exp.relevance.flatten(1).sum(1), logit.detach(), rtol=1e-4, atol=1e-6)


def test_deep_taylor_zb_then_zplus_by_hand() -> None:
    torch.manual_seed(10)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double().eval()
    x = torch.rand(4, 1, 2, 3, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 0])
    for low, high in [(None, None), (-0.5, 2.0)]:
        exp = provex.explain(model, x, "deep-taylor", target=target, low=low, high=high)
        with torch.no_grad():
            xf = x.flatten(1)
            a = model[:3](x)  # hidden activations (>= 0)
            w2 = model[3].weight.clamp(min=0)  # z+ ignores the bias
            r_top = _start(model, x, target)  # (N, 3)
            zp = a[:, None, :] * w2[None]  # (N, 3, 5)
            r_hidden = (zp / _stab(zp.sum(2, keepdim=True)) * r_top[..., None]).sum(1)
            lo = xf.min(1, keepdim=True).values if low is None else torch.full_like(xf[:, :1], low)
            hi = xf.max(1, keepdim=True).values if high is None else torch.full_like(xf[:, :1], high)
            w1 = model[1].weight  # (5, 6)
            zb = xf[:, None] * w1 - lo[:, None] * w1.clamp(min=0) - hi[:, None] * w1.clamp(max=0)  # (N, 5, 6)
            hand = (zb / _stab(zb.sum(2, keepdim=True)) * r_hidden[..., None]).sum(1)
        torch.testing.assert_close(exp.relevance.flatten(1), hand, rtol=1e-5, atol=1e-8)


def test_deep_taylor_conserves_relevance_on_the_shipped_cnn(mnist_model: nn.Module, mnist_samples) -> None:
    """ReLU (pass), AvgPool2d (LRP-0) and Flatten keep the total: sum of pixels = target logit."""
    x, _ = mnist_samples
    exp = provex.explain(mnist_model, x[:6], "deep-taylor")
    logit = mnist_model(x[:6]).gather(1, exp.target[:, None])[:, 0].detach()
    torch.testing.assert_close(exp.relevance.flatten(1).sum(1), logit, rtol=1e-3, atol=1e-3)
    assert exp.info["low"] == x[:6].flatten(1).min(1).values.tolist()
    assert exp.info["high"] == x[:6].flatten(1).max(1).values.tolist()


def test_lrp_restores_model_and_batches(tiny_model: nn.Module) -> None:
    x = torch.rand(3, 1, 6, 6, dtype=torch.float64)
    before = tiny_model(x).detach()
    both = provex.explain(tiny_model, x, "lrp-alpha-beta").relevance
    one = provex.explain(tiny_model, x[1:2], "lrp-alpha-beta").relevance
    torch.testing.assert_close(both[1:2], one)
    torch.testing.assert_close(tiny_model(x).detach(), before)
    assert all(p.grad is None for p in tiny_model.parameters())


# --- KernelSHAP and LIME ------------------------------------------------------------------------


class BlockGame(nn.Module):
    """Class 0: a function of the four 3x3 block sums of a 6x6 image; class 1: constant."""

    def __init__(self, interactions: bool) -> None:
        super().__init__()
        self.interactions = interactions

    def block_sums(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x, 3).flatten(1) * 9.0

    def value(self, s: torch.Tensor) -> torch.Tensor:
        v = 1.5 * s[:, 0] ** 2 - 0.7 * s[:, 1] + torch.sin(s[:, 2]) + 0.3 * s[:, 3] ** 3
        if self.interactions:
            v = v + 0.8 * s[:, 0] * s[:, 1] - 0.5 * s[:, 1] * s[:, 2] * s[:, 3]
        return v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.value(self.block_sums(x))
        return torch.stack([v, torch.zeros_like(v)], 1)


def _exact_shapley(game: BlockGame, x: torch.Tensor) -> torch.Tensor:
    """Shapley values of the 4 blocks by enumerating all coalitions (absent blocks set to 0)."""
    s = game.block_sums(x)[0]
    m = 4
    phi = torch.zeros(m, dtype=x.dtype)

    def v(coalition: tuple[int, ...]) -> float:
        keep = torch.zeros(m, dtype=x.dtype)
        keep[list(coalition)] = 1.0
        return float(game.value((s * keep)[None])[0])

    for i in range(m):
        others = [j for j in range(m) if j != i]
        for r in range(m):
            for c in itertools.combinations(others, r):
                weight = math.factorial(r) * math.factorial(m - r - 1) / math.factorial(m)
                phi[i] += weight * (v((*c, i)) - v(c))
    return phi


def _per_block(rel: torch.Tensor) -> torch.Tensor:
    """The value each 3x3 block got (all its pixels must carry the same value)."""
    blocks = rel[0, 0].unfold(0, 3, 3).unfold(1, 3, 3).reshape(4, 9)
    assert bool((blocks == blocks[:, :1]).all())
    return blocks[:, 0]


def test_kernel_shap_exact_on_additive_model() -> None:
    game = BlockGame(interactions=False).eval()
    torch.manual_seed(11)
    x = torch.rand(1, 1, 6, 6, dtype=torch.float64) * 0.4
    exp = provex.explain(game, x, "kernel-shap", target=0, grid=3, n_samples=60)
    torch.testing.assert_close(_per_block(exp.relevance), _exact_shapley(game, x), rtol=1e-5, atol=1e-6)


def test_kernel_shap_converges_to_shapley_values_with_interactions() -> None:
    game = BlockGame(interactions=True).eval()
    torch.manual_seed(12)
    x = torch.rand(1, 1, 6, 6, dtype=torch.float64) * 0.4
    exact = _exact_shapley(game, x)
    exp = provex.explain(game, x, "kernel-shap", target=0, grid=3, n_samples=3000)
    got = _per_block(exp.relevance)
    assert float(got.sum()) == pytest.approx(float(exact.sum()), rel=1e-4)  # efficiency: f(x) - f(0)
    assert float((got - exact).abs().max()) < 0.05 * float(exact.abs().max())


def test_lime_recovers_linear_coefficients() -> None:
    torch.manual_seed(13)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 2)).double().eval()
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    masks = feature_masks(x, "grid", 2)
    w = model[1].weight[1].detach().view(6, 6)
    for ridge, tol in [(0.0, 1e-6), (1.0, 0.05)]:
        exp = provex.explain(model, x, "lime", target=1, grid=2, n_samples=400, ridge=ridge, baseline=0.2)
        for i in range(2):
            contrib = (w * (x[i, 0] - 0.2)).flatten()  # linear model: feature k adds sum_k w (x - baseline)
            coef = torch.zeros(9, dtype=torch.float64).index_add_(0, masks[i, 0].flatten(), contrib)
            want = coef[masks[i, 0]]
            err = float((exp.relevance[i, 0] - want).abs().max() / want.abs().max())
            assert err < tol, (ridge, err)


def test_perturbation_methods_seeded_and_rng_untouched(tiny_model: nn.Module) -> None:
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    for name in ["kernel-shap", "lime"]:
        torch.manual_seed(0)
        expected_next = torch.rand(1)
        torch.manual_seed(0)
        a = provex.explain(tiny_model, x, name, n_samples=40, seed=3)
        assert torch.equal(torch.rand(1), expected_next)
        b = provex.explain(tiny_model, x, name, n_samples=40, seed=3)
        c = provex.explain(tiny_model, x, name, n_samples=40, seed=4)
        assert torch.equal(a.relevance, b.relevance) and not torch.equal(a.relevance, c.relevance)
        assert a.info["per_image"]["n_samples"].tolist() == [40, 40]
        assert a.info["per_image"]["n_features"].tolist() == [9, 9]
        assert a.info["model_calls"] >= 2 * 40  # counted by the registry: at least the budgets
        # an image's map is the same alone and at another position in the batch
        alone = provex.explain(tiny_model, x[1:], name, n_samples=40, seed=3)
        swapped = provex.explain(tiny_model, x.flip(0), name, n_samples=40, seed=3)
        torch.testing.assert_close(alone.relevance[0], a.relevance[1], rtol=0, atol=0)
        torch.testing.assert_close(swapped.relevance.flip(0), a.relevance, rtol=0, atol=0)


def test_feature_masks() -> None:
    x = torch.rand(2, 3, 5, 7)
    m = feature_masks(x, "grid", 2)
    assert m.shape == x.shape and int(m.max()) == 3 * 4 - 1
    assert bool((m[:, 0] == m[:, 2]).all())  # channels tied
    assert int(m[0, 0, 4, 6]) == 11 and int(m[0, 0, 1, 1]) == 0 and int(m[0, 0, 2, 3]) == 5
    pytest.importorskip("skimage")
    xs, _ = provex.data.samples()
    sp = feature_masks(xs[:2], "superpixels", n_segments=30)
    for i in range(2):
        ids = sp[i].unique()
        assert torch.equal(ids, torch.arange(len(ids))) and 10 <= len(ids) <= 60


@pytest.mark.parametrize(
    ("method", "options", "match"),
    [
        ("kernel-shap", {"n_samples": 0}, "n_samples must be a positive integer"),
        ("kernel-shap", {"features": "hexagons"}, "features must be one of"),
        ("lime", {"grid": 50}, "grid=50 is larger than the image"),
        ("lime", {"kernel_width": -1.0}, "kernel_width must be > 0"),
        ("lime", {"baseline": float("nan")}, "baseline must be finite"),
        ("smoothgrad", {"noise_level": -0.1}, "noise_level must be >= 0"),
        ("smoothgrad", {"seed": -1}, "seed must be non-negative"),
        ("smoothgrad", {"seed": [1, 2]}, "seed has 2 entries for 1 images"),
        ("lrp-alpha-beta", {"alpha": 2.0, "beta": 0.5}, "alpha - beta must equal 1"),
        ("lrp-alpha-beta", {"dense": "gamma"}, "dense must be one of 'epsilon', 'alpha-beta'"),
        ("deep-taylor", {"low": 0.5}, "low/high must bound the data"),
        ("deep-taylor", {"low": float("-inf")}, "low must be finite"),
        ("deep-taylor", {"high": float("inf")}, "high must be finite"),
    ],
)
def test_bad_options(method: str, options: dict, match: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    with pytest.raises(ValueError, match=match):
        provex.explain(model, torch.rand(1, 1, 6, 6), method, **options)


def test_every_baseline_on_the_shipped_model(mnist_model: nn.Module, mnist_samples) -> None:
    x, _ = mnist_samples
    budgets = {"smoothgrad": {"n_samples": 4}, "kernel-shap": {"n_samples": 64}, "lime": {"n_samples": 64}}
    for name in BASELINES:
        exp = provex.explain(mnist_model, x[:2], name, **budgets.get(name, {}))
        assert exp.relevance.shape == (2, 1, 28, 28) and bool(torch.isfinite(exp.relevance).all())
        assert exp.method == name and exp.target.tolist() == exp.prediction.tolist()
        assert float(exp.relevance.abs().sum()) > 0
    assert all(p.grad is None for p in mnist_model.parameters())


def test_block_is_a_deprecated_alias_of_grid(tiny_model: nn.Module) -> None:
    x = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    new = provex.explain(tiny_model, x, "lime", grid=3, n_samples=30, progress=False)
    with pytest.warns(FutureWarning, match="'block' of 'lime' is deprecated.*use 'grid'"):
        old = provex.explain(tiny_model, x, "lime", block=3, n_samples=30, progress=False)
    assert torch.equal(new.relevance, old.relevance) and old.info["options"]["grid"] == 3
    with pytest.raises(ValueError, match="block is the deprecated name of grid"):
        provex.explain(tiny_model, x, "lime", block=3, grid=3)


def test_lrp_conserves_relevance_on_a_residual_model_with_batchnorm() -> None:
    """Residual additions split by zennit's Sum/LRP-0 and BatchNorm merged: the input relevance
    of deep Taylor (z+ and z^B conserve exactly) sums to the target logit; alpha-beta with the
    alpha-beta rule everywhere and no biases conserves too. Without the canonizer each residual
    addition would double the total (the 246x of resnet18)."""
    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            self.relu = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + x)

    class ResNet(nn.Module):
        def __init__(self, unbiased: bool) -> None:
            super().__init__()
            self.stem, self.bn = nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
            self.blocks = nn.Sequential(Block(6), Block(6), Block(6))
            self.pool = nn.MaxPool2d(2)
            self.head = nn.Linear(6, 4, bias=not unbiased)
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics
                    m.weight.data.uniform_(0.5, 1.5)
                    m.running_var.uniform_(0.5, 2.0)
                    if not unbiased:
                        m.bias.data.normal_(0, 0.1)
                        m.running_mean.normal_(0, 0.1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.blocks(torch.relu(self.bn(self.stem(x))))
            return self.head(self.pool(h).mean((2, 3)))

    x = torch.randn(3, 3, 8, 8)
    for unbiased in (False, True):
        model = ResNet(unbiased).eval()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        logits = model(x).detach()
        methods = {"deep-taylor": {}}
        if unbiased:
            methods["lrp-alpha-beta"] = {"dense": "alpha-beta"}
        for name, opts in methods.items():
            exp = provex.explain(model, x, name, **opts)
            want = logits.gather(1, exp.target[:, None])[:, 0]
            torch.testing.assert_close(exp.relevance.flatten(1).sum(1), want, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(exp.info["per_image"]["conservation"], torch.ones(3), rtol=1e-4, atol=1e-5)
            assert exp.info["canonization"]["residual_sums"] == 3
            assert exp.info["canonization"]["merged_batchnorms"] == 7
            assert exp.info["model_calls"] == 3 and exp.target.tolist() == logits.argmax(1).tolist()
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in before.items()) and set(state) == set(before)


def test_lrp_refuses_what_it_cannot_conserve() -> None:
    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k = nn.Linear(4, 4), nn.Linear(4, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = x.flatten(2).transpose(1, 2)  # (N, HW, C)
            a = torch.softmax(self.q(t) @ self.k(t).transpose(1, 2), -1)
            return self.head((a @ t).mean(1))

    class Untraceable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(16, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow
                x = x * 2
            return self.fc(x.flatten(1))

    x = torch.rand(2, 4, 2, 2)
    for method in ("lrp-alpha-beta", "deep-taylor"):
        with pytest.raises(ValueError, match=r"^model: LRP cannot propagate relevance through the function matmul"):
            provex.explain(Attention().eval(), x, method)
        with pytest.raises(ValueError, match=r"^model: LRP needs a model torch.fx can trace"):
            provex.explain(Untraceable().eval(), x, method)


def test_self_attention_is_propagated_with_detached_weights() -> None:
    """nn.MultiheadAttention(x, x, x) becomes DetachedAttention: the same output, gradients through
    the values only (attention weights constant), and on a model with positive weights and inputs
    (no relevance dropped by z+) deep Taylor's relevance sums to the logit through the attention,
    the residual sum and the token mean."""
    from provex.baselines.canonize import DetachedAttention

    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, bias=False, batch_first=True).double().eval()
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    det = DetachedAttention(mha)
    torch.testing.assert_close(det(x), mha(x, x, x, need_weights=False)[0])
    seq_first = nn.MultiheadAttention(8, 4, batch_first=False).double().eval()  # (L, N, E), with biases
    xt = x.detach().transpose(0, 1)
    torch.testing.assert_close(DetachedAttention(seq_first)(xt), seq_first(xt, xt, xt, need_weights=False)[0])
    (g,) = torch.autograd.grad(det(x).sum(), x)
    with torch.no_grad():
        _, weights = mha(x, x, x, need_weights=True, average_attn_weights=False)  # (N, heads, L, L)
    wv = mha.in_proj_weight[16:].view(2, 4, 8)  # value projection per head (heads, d, E)
    wo = mha.out_proj.weight.view(8, 2, 4)  # (E, heads, d)
    # d sum(out) / dx_l = sum_h sum_m A_h[m, l] (1^T W_o,h) W_v,h
    per_head = torch.einsum("ehd,hdf->hf", wo, wv)  # (heads, E)
    hand = torch.einsum("nhml,hf->nlf", weights, per_head)
    torch.testing.assert_close(g, hand)

    class TinyTransformer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Conv2d(1, 8, 2, stride=2, bias=False)
            self.attention = nn.MultiheadAttention(8, 2, bias=False, batch_first=True)
            self.head = nn.Linear(8, 3, bias=False)
            for p in self.parameters():
                p.data = p.data.abs()

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            t = self.embed(z).flatten(2).transpose(1, 2)
            a, _ = self.attention(t, t, t)
            return self.head((a + t).mean(1))

    model = TinyTransformer().double().eval()
    z = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    exp = provex.explain(model, z, "deep-taylor")
    want = model(z).gather(1, exp.target[:, None])[:, 0].detach()
    torch.testing.assert_close(exp.relevance.flatten(1).sum(1), want, rtol=1e-6, atol=1e-9)
    assert exp.info["canonization"]["attention_blocks"] == 1 and exp.info["canonization"]["residual_sums"] == 1
