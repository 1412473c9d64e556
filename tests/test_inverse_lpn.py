"""ICNN / LPN structure: convexity, f = grad psi, symmetric PSD Jacobian, projection, load checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import provex
from provex.inverse import ConvICNN, VectorICNN, build_lpn
from provex.inverse.lpn import LPN
from provex.models import ModelCard, save_weights


@pytest.fixture(autouse=True)
def _threads() -> None:
    """Overrides conftest's: these tensors are tiny, and one thread avoids OpenMP overhead."""
    torch.set_num_threads(1)


def _scramble_(lpn: LPN, seed: int = 0) -> LPN:
    """Random weights of both signs on the free path and random non-negative hidden-path weights."""
    gen = torch.Generator().manual_seed(seed)
    hidden = set(lpn.icnn.hidden_path_names())
    with torch.no_grad():
        for name, p in lpn.icnn.named_parameters():
            r = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            p.copy_(r.abs() * 0.3 if name in hidden else r)
    return lpn


@pytest.fixture
def vec_lpn() -> LPN:
    torch.manual_seed(0)
    return _scramble_(build_lpn("vector", dim=4, hidden=16, layers=3, beta=2.0, alpha=0.05).double().eval())


@pytest.fixture
def conv_lpn() -> LPN:
    torch.manual_seed(0)
    lpn = build_lpn("conv", in_channels=1, image_size=8, hidden=4, dense=6, beta=3.0, alpha=0.01).double().eval()
    return _scramble_(lpn, 1)


@pytest.mark.parametrize("which", ["vec_lpn", "conv_lpn"])
def test_psi_is_convex_along_random_lines(which: str, request: pytest.FixtureRequest) -> None:
    lpn = request.getfixturevalue(which)
    shape = (4,) if which == "vec_lpn" else (1, 8, 8)
    gen = torch.Generator().manual_seed(1)
    t = torch.linspace(-3, 3, 61, dtype=torch.float64)
    for _ in range(5):
        a = torch.randn(shape, generator=gen, dtype=torch.float64)
        d = torch.randn(shape, generator=gen, dtype=torch.float64)
        pts = a[None] + t.view(-1, *[1] * len(shape)) * d[None]
        with torch.no_grad():
            v = lpn.psi(pts)
        second = v[2:] - 2 * v[1:-1] + v[:-2]
        assert float(second.min()) >= -1e-9 * float(v.abs().max())
        # strong convexity: second differences at least alpha * h^2 * |d|^2
        h = float(t[1] - t[0])
        assert float(second.min()) >= lpn.alpha * h**2 * float(d.pow(2).sum()) * (1 - 1e-6)


def test_f_is_gradient_of_psi_by_finite_differences(vec_lpn: LPN) -> None:
    x = torch.randn(3, 4, dtype=torch.float64)
    f = vec_lpn(x)
    eps = 1e-6
    fd = torch.zeros_like(x)
    for j in range(4):
        e = torch.zeros(4, dtype=torch.float64)
        e[j] = eps
        with torch.no_grad():
            fd[:, j] = (vec_lpn.psi(x + e) - vec_lpn.psi(x - e)) / (2 * eps)
    torch.testing.assert_close(f, fd, atol=1e-7, rtol=1e-6)


def test_jacobian_of_f_is_symmetric_psd(vec_lpn: LPN, conv_lpn: LPN) -> None:
    for lpn, shape in ((vec_lpn, (4,)), (conv_lpn, (1, 8, 8))):
        x = torch.randn(1, *shape, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(lambda z, m=lpn: m(z), x).reshape(x.numel(), x.numel())
        torch.testing.assert_close(jac, jac.T, atol=1e-10, rtol=1e-8)
        eig = torch.linalg.eigvalsh(jac)
        assert float(eig.min()) >= lpn.alpha - 1e-8  # alpha-strongly convex psi


def test_forward_keeps_graph_only_when_needed(vec_lpn: LPN) -> None:
    x = torch.randn(2, 4, dtype=torch.float64)
    assert not vec_lpn.eval()(x).requires_grad
    vec_lpn.train()
    out = vec_lpn(x)
    assert out.requires_grad  # create_graph in training: a loss on f reaches the weights
    out.sum().backward()
    assert vec_lpn.icnn.first.weight.grad is not None
    with torch.no_grad():
        assert not vec_lpn(x).requires_grad
    assert vec_lpn(x).shape == x.shape


def test_projection_clamps_every_hidden_path_weight() -> None:
    lpn = build_lpn("conv", image_size=8, hidden=4, dense=4)
    with torch.no_grad():
        for _, p in lpn.icnn.hidden_path():
            p.sub_(1.0)
    with pytest.raises(ValueError, match=r"hidden-path weight 'mix\.0\.weight'"):
        lpn.check_convex()
    lpn.project_()
    lpn.check_convex()
    assert all(float(p.detach().min()) >= 0 for _, p in lpn.icnn.hidden_path())
    # the free path (first layer, skips) is not touched
    assert "first.weight" not in lpn.icnn.hidden_path_names()


def test_loading_negative_hidden_weights_is_refused(tmp_path: Path) -> None:
    lpn = build_lpn("vector", dim=1, hidden=8, layers=2)
    state = {k: v.clone() for k, v in lpn.state_dict().items()}
    state["icnn.mix.1.weight"][0, 0] = -0.5
    fresh = build_lpn("vector", dim=1, hidden=8, layers=2)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(ValueError, match=r"icnn\.mix\.1\.weight.*1 negative"):
        fresh.load_state_dict(state)
    for k, v in fresh.state_dict().items():  # refused before anything was copied in
        torch.testing.assert_close(v, before[k])
    bad = build_lpn("vector", dim=1, hidden=8, layers=2)
    bad.load_state_dict(lpn.state_dict())  # valid weights load fine
    with torch.no_grad():
        bad.icnn.out.weight[0, 0] = -1.0
    card = ModelCard(name="lpn-laplace", description="t", config={"arch": "vector", "dim": 1, "hidden": 8, "layers": 2})
    path = save_weights(bad, card, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"icnn\.out\.weight"):
        provex.models.load("lpn-laplace", path=path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arch": "vector", "hidden": 0}, "hidden"),
        ({"arch": "vector", "beta": 0.0}, "beta"),
        ({"arch": "vector", "alpha": -1.0}, "alpha"),
        ({"arch": "conv", "image_size": 30}, "divisible by 4"),
        ({"arch": "mlp"}, "arch"),
    ],
)
def test_bad_architecture_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_lpn(**kwargs)


def test_wrong_input_shape_is_named() -> None:
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 28, 28\)"):
        ConvICNN()(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3\)"):
        VectorICNN(dim=3)(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="icnn"):
        LPN(torch.nn.Linear(2, 1))  # type: ignore[arg-type]
