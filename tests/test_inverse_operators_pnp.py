"""Operators (adjoints, norms, normal solves against dense matrices and scipy), PnP solvers with
exact proxes against closed-form / KKT solutions, the step-size rule, TV, metrics, deepinv."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from provex.inverse import (
    CompressedSensing,
    Denoising,
    GaussianBlur,
    RandomInpainting,
    build_lpn,
    check_step_size,
    make_operator,
    pnp_admm,
    pnp_pgd,
    psnr,
    ssim,
    tv_reconstruct,
)
from provex.inverse.tv import grad2d, tv_objective


@pytest.fixture(autouse=True)
def _threads() -> None:
    """Overrides conftest's: these tensors are tiny, and one thread avoids OpenMP overhead."""
    torch.set_num_threads(1)


SHAPE = (1, 6, 7)


def _ops() -> list:
    return [
        Denoising(SHAPE),
        GaussianBlur(SHAPE, sigma=0.8, radius=2),
        RandomInpainting(SHAPE, missing=0.4, seed=1),
        CompressedSensing(SHAPE, m=15, seed=2),
    ]


def _dense(op) -> torch.Tensor:
    d = int(np.prod(op.in_shape))
    eye = torch.eye(d, dtype=torch.float64).reshape(d, *op.in_shape)
    return op(eye).reshape(d, -1).T  # (m, d)


@pytest.mark.parametrize("op", _ops(), ids=lambda o: type(o).__name__)
def test_adjoint_norm_and_normal_solve_against_dense_matrix(op) -> None:
    mat = _dense(op)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, *op.in_shape, generator=gen, dtype=torch.float64)
    y = torch.randn(3, *op.out_shape, generator=gen, dtype=torch.float64)
    # <Ax, y> = <x, A^T y>
    lhs = (op(x) * y).flatten(1).sum(1)
    rhs = (x * op.adjoint(y)).flatten(1).sum(1)
    torch.testing.assert_close(lhs, rhs, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(op.adjoint(y).reshape(3, -1), y.reshape(3, -1) @ mat, atol=1e-12, rtol=1e-12)
    smax = float(np.linalg.svd(mat.numpy(), compute_uv=False).max())
    assert op.norm_sq() == pytest.approx(smax**2, rel=1e-6)
    rho = 0.37
    sol = op.normal_solve(x, rho).reshape(3, -1)
    ref = torch.linalg.solve(mat.T @ mat + rho * torch.eye(mat.shape[1], dtype=torch.float64), x.reshape(3, -1).T).T
    torch.testing.assert_close(sol, ref, atol=1e-9, rtol=1e-9)


def test_blur_is_scipy_wrap_convolution() -> None:
    from scipy.ndimage import convolve

    op = GaussianBlur((1, 12, 10), sigma=1.3)
    x = torch.rand(2, 1, 12, 10, dtype=torch.float64)
    ref = np.stack([convolve(x[i, 0].numpy(), op.kernel.numpy(), mode="wrap") for i in range(2)])
    np.testing.assert_allclose(op(x)[:, 0].numpy(), ref, atol=1e-12)
    assert op.norm_sq() == pytest.approx(1.0)


def test_operator_bad_input_messages() -> None:
    op = GaussianBlur((1, 28, 28))
    with pytest.raises(ValueError, match=r"x has shape \(2, 1, 32, 32\) but this GaussianBlur expects images"):
        op(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"y has shape"):
        CompressedSensing((1, 28, 28), m=10).adjoint(torch.zeros(2, 11))
    with pytest.raises(ValueError, match="missing"):
        RandomInpainting(missing=1.0)
    with pytest.raises(ValueError, match="sigma"):
        GaussianBlur(sigma=-1.0)
    with pytest.raises(ValueError, match="unknown operator"):
        make_operator("radon")
    with pytest.raises(ValueError, match="rho"):
        Denoising().normal_solve(torch.zeros(1, 1, 28, 28), 0.0)


def _ridge(op, y: torch.Tensor, reg: float) -> torch.Tensor:
    mat = _dense(op)
    a = mat.T @ mat + reg * torch.eye(mat.shape[1], dtype=torch.float64)
    return torch.linalg.solve(a, (y.reshape(y.shape[0], -1) @ mat).T).T.reshape(y.shape[0], *op.in_shape)


def _soft(v: torch.Tensor, lam: float) -> torch.Tensor:
    return torch.sign(v) * torch.clamp(v.abs() - lam, min=0)


def _kkt_lasso(op, y: torch.Tensor, x: torch.Tensor, reg: float) -> float:
    """Max violation of 0 in A^T(Ax - y) + reg * d|x|_1 (exact optimality of the lasso)."""
    g = -op.adjoint(op(x) - y)
    on = x.abs() > 1e-8
    viol_on = (g - reg * torch.sign(x))[on].abs()
    viol_off = (g.abs() - reg).clamp(min=0)[~on]
    return float(torch.cat([viol_on, viol_off]).max())


def test_pnp_with_exact_proxes_reaches_the_convex_solutions() -> None:
    op = CompressedSensing(SHAPE, m=30, seed=3)
    gen = torch.Generator().manual_seed(4)
    x_true = _soft(torch.randn(2, *SHAPE, generator=gen, dtype=torch.float64), 1.0)
    y = op(x_true) + 0.01 * torch.randn(2, 30, generator=gen, dtype=torch.float64)
    eta = 0.9 / op.norm_sq()
    lam = 0.3
    # shrinkage = prox of lam/2 ||x||^2: PGD minimises 1/2||Ax-y||^2 + lam/(2 eta) ||x||^2 (ridge)
    res = pnp_pgd(y, op, lambda v: v / (1 + lam), eta=eta, iters=3000, tol=1e-13)
    torch.testing.assert_close(res.x, _ridge(op, y, lam / eta), atol=1e-9, rtol=0)
    assert bool(res.converged.all())
    # ADMM with the same prox minimises 1/2||Ax-y||^2 + rho * lam/2 ||x||^2
    rho = 0.8
    res = pnp_admm(y, op, lambda v: v / (1 + lam), rho=rho, iters=3000, tol=1e-13)
    torch.testing.assert_close(res.x, _ridge(op, y, rho * lam), atol=1e-9, rtol=0)
    # soft-thresholding = prox of lam ||x||_1: the lasso with weight lam / eta (PGD), rho * lam (ADMM)
    res = pnp_pgd(y, op, lambda v: _soft(v, lam * eta), eta=eta, iters=5000, tol=1e-14)
    assert _kkt_lasso(op, y, res.x, lam) < 1e-8
    res = pnp_admm(y, op, lambda v: _soft(v, lam / rho), rho=rho, iters=5000, tol=1e-14)
    assert _kkt_lasso(op, y, res.x, lam) < 1e-7
    assert res.gap.shape[1] == 2 and res.gap.shape[0] == int(res.iterations[0])
    assert bool((res.iterations == res.iterations[0]).all())  # every image iterates until all converged


def test_pgd_step_size_rule() -> None:
    op = GaussianBlur((1, 8, 8), sigma=1.0, radius=2)
    lpn = build_lpn("conv", image_size=8, hidden=4, dense=4, alpha=0.1).double().eval()
    y = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    assert check_step_size(0.5, op) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"eta = 1.5 violates .* eta < 1 / sigma_max\(A\)\^2 = 1"):
        pnp_pgd(y, op, lpn, eta=1.5, iters=2)
    with pytest.raises(ValueError, match="eta must be positive"):
        pnp_pgd(y, op, lpn, eta=-1.0, iters=2)
    with pytest.warns(RuntimeWarning, match="violates"):
        res = pnp_pgd(y, op, lpn, eta=1.5, iters=2, force=True)
    assert res.info["eta"] == 1.5
    res = pnp_pgd(y, op, lpn, iters=2)
    assert res.info["eta"] == pytest.approx(0.99) and res.info["eta_bound"] == pytest.approx(1.0)
    with pytest.warns(RuntimeWarning, match="alpha = 0"):
        pnp_pgd(y, op, build_lpn("conv", image_size=8, hidden=4, dense=4, alpha=0.0).double(), iters=1)
    with pytest.raises(ValueError, match=r"y has shape"):
        pnp_admm(torch.zeros(1, 1, 9, 9), op, lpn)
    # NaN in x0 or tol: one line naming the argument (not NaN iterates or a silent non-convergence)
    bad_x0 = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    bad_x0[0, 0, 3, 3] = float("nan")
    for solver in (pnp_pgd, pnp_admm):
        with pytest.raises(ValueError, match=r"^x0 contains NaN or inf values$"):
            solver(y, op, lpn, iters=2, x0=bad_x0)
        with pytest.raises(ValueError, match=r"^tol must be a non-negative finite number, got nan$"):
            solver(y, op, lpn, iters=2, tol=float("nan"))
        with pytest.raises(ValueError, match=r"^iters must be a positive integer"):
            solver(y, op, lpn, iters=float("nan"))


def test_pnp_pgd_with_lpn_converges_inside_the_bound() -> None:
    torch.manual_seed(0)
    lpn = build_lpn("conv", image_size=8, hidden=4, dense=8, beta=5.0, alpha=0.2).double().eval()
    op = GaussianBlur((1, 8, 8), sigma=1.0, radius=2)
    y = op(torch.rand(2, 1, 8, 8, dtype=torch.float64))
    res = pnp_pgd(y, op, lpn, iters=400, tol=1e-10)
    assert bool(res.converged.all())
    # the limit is a fixed point of x = f(x - eta A^T(Ax - y))
    eta = res.info["eta"]
    fixed = lpn(res.x - eta * op.adjoint(op(res.x) - y))
    torch.testing.assert_close(fixed, res.x, atol=1e-8, rtol=0)


def test_initial_guess_fills_inpainting_holes_and_is_the_adjoint_elsewhere() -> None:
    gen = torch.Generator().manual_seed(5)
    for op in _ops():
        y = op.measure(torch.rand(2, *SHAPE, generator=gen, dtype=torch.float64), 0.0)
        if not isinstance(op, RandomInpainting):
            torch.testing.assert_close(op.initial_guess(y), op.adjoint(y), atol=0, rtol=0)
    op = RandomInpainting((2, 12, 12), missing=0.7, seed=0)
    const = torch.tensor([0.3, 0.8], dtype=torch.float64).view(1, 2, 1, 1).expand(3, 2, 12, 12)
    # normalised convolution is a weighted mean of observed pixels: exact on constant images
    torch.testing.assert_close(op.initial_guess(op(const)), const, atol=1e-12, rtol=0)
    # on a linear ramp it stays between the smallest and largest observed value, and keeps order
    ramp = torch.linspace(0, 1, 12, dtype=torch.float64).view(1, 1, 1, 12).expand(1, 2, 12, 12)
    g = op.initial_guess(op(ramp))
    assert float(g.min()) >= 0.0 and float(g.max()) <= 1.0
    assert float((g - ramp).abs().mean()) < 0.05
    # a pixel with no observed pixel within 3 sigma gets the image's mean observed value
    far = RandomInpainting((1, 12, 12), missing=0.5, seed=0)
    far.mask = torch.zeros(1, 12, 12, dtype=torch.float64)
    far.mask[0, 0, 0] = far.mask[0, 0, 1] = 1.0
    x = torch.full((1, 1, 12, 12), 0.25, dtype=torch.float64)
    x[0, 0, 0, 1] = 0.75
    g = far.initial_guess(far(x))
    assert float(g[0, 0, 11, 11]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="y has shape"):
        op.initial_guess(torch.zeros(1, 1, 12, 12))
    with pytest.raises(ValueError, match="sigma must be positive"):
        op.initial_guess(op(const), sigma=0.0)


def test_solvers_start_at_the_initial_guess_and_tv_does_not_depend_on_it() -> None:
    op = RandomInpainting((1, 10, 10), missing=0.6, seed=2)
    gen = torch.Generator().manual_seed(6)
    y = op.measure(torch.rand(2, 1, 10, 10, generator=gen, dtype=torch.float64), 0.01, gen)
    shrink = lambda v: 0.9 * v  # noqa: E731
    a = pnp_admm(y, op, shrink, rho=0.5, iters=3)
    b = pnp_admm(y, op, shrink, rho=0.5, iters=3, x0=op.initial_guess(y))
    torch.testing.assert_close(a.x, b.x, atol=0, rtol=0)
    a = pnp_pgd(y, op, shrink, iters=3)
    b = pnp_pgd(y, op, shrink, iters=3, x0=op.initial_guess(y))
    torch.testing.assert_close(a.x, b.x, atol=0, rtol=0)
    # TV is convex: from A^T y or from the fill, enough iterations reach the same minimiser
    t1 = tv_reconstruct(y, op, 0.05, iters=6000)
    t2 = tv_reconstruct(y, op, 0.05, iters=6000, x0=op.initial_guess(y))
    torch.testing.assert_close(tv_reconstruct(y, op, 0.05, iters=3), tv_reconstruct(y, op, 0.05, 3, x0=op.adjoint(y)))
    assert float((t1 - t2).abs().max()) < 1e-3
    with pytest.raises(ValueError, match="x0 has shape"):
        tv_reconstruct(y, op, 0.05, iters=2, x0=torch.zeros(1, 1, 9, 9))


def test_tv_matches_skimage_chambolle_on_denoising() -> None:
    from skimage.restoration import denoise_tv_chambolle

    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(2, 1, 16, 16, dtype=torch.float64)
    x[:, :, 4:12, 5:11] = 1.0
    y = x + 0.2 * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    op = Denoising((1, 16, 16))
    lam = 0.15
    ours = tv_reconstruct(y, op, lam, iters=800)
    ref = torch.from_numpy(
        np.stack([denoise_tv_chambolle(y[i, 0].numpy(), weight=lam, eps=1e-9, max_num_iter=5000) for i in range(2)])
    ).unsqueeze(1)
    assert float((ours - ref).abs().max()) < 5e-3
    assert bool((tv_objective(ours, y, op, lam) <= tv_objective(ref, y, op, lam) + 1e-4).all())
    # grad2d's adjoint is -div: <grad x, p> = -<x, div p>
    from provex.inverse.tv import _div

    p = torch.randn(2, 2, 1, 16, 16, generator=gen, dtype=torch.float64)
    assert float((grad2d(y) * p).sum() + (y * _div(p)).sum()) == pytest.approx(0.0, abs=1e-10)


def test_psnr_ssim_match_scikit_image() -> None:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    gen = torch.Generator().manual_seed(0)
    ref = torch.rand(3, 1, 28, 28, generator=gen)
    x = (ref + 0.1 * torch.randn(ref.shape, generator=gen)).clamp(0, 1)
    ours_p, ours_s = psnr(x, ref), ssim(x, ref)
    for i in range(3):
        a, b = ref[i, 0].double().numpy(), x[i, 0].double().numpy()
        assert float(ours_p[i]) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), abs=1e-4)
        sk = structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert float(ours_s[i]) == pytest.approx(sk, abs=1e-6)
    rgb_ref, rgb = torch.rand(1, 3, 16, 16, generator=gen), torch.rand(1, 3, 16, 16, generator=gen)
    sk = structural_similarity(
        rgb_ref[0].numpy(),
        rgb[0].numpy(),
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        channel_axis=0,
    )
    assert float(ssim(rgb, rgb_ref)[0]) == pytest.approx(sk, abs=1e-6)
    with pytest.raises(ValueError, match="shape"):
        psnr(x, ref[:2])


def test_deepinv_adapter_runs_the_same_pgd() -> None:
    deepinv = pytest.importorskip("deepinv")
    from provex.inverse.deepinv_adapter import LPNDenoiser, LPNPrior, as_deepinv_physics

    torch.manual_seed(0)
    lpn = build_lpn("conv", image_size=8, hidden=4, dense=4, alpha=0.3).double().eval()
    op = GaussianBlur((1, 8, 8), sigma=1.0, radius=2)
    y = op(torch.rand(2, 1, 8, 8, dtype=torch.float64))
    eta = 0.5
    ours = pnp_pgd(y, op, lpn, eta=eta, iters=15, tol=0.0)
    solver = deepinv.optim.PGD(
        data_fidelity=deepinv.optim.L2(),
        prior=LPNPrior(lpn),
        stepsize=eta,
        lambda_reg=1 / eta,
        max_iter=15,
        early_stop=False,
        custom_init=lambda y, physics: {"est": (physics.A_adjoint(y),)},
    )
    out = solver(y, as_deepinv_physics(op))
    torch.testing.assert_close(out, ours.x, atol=1e-10, rtol=0)
    torch.testing.assert_close(LPNDenoiser(lpn)(y, 0.1), lpn(y))
    with pytest.warns(RuntimeWarning, match="gamma"):
        LPNPrior(lpn).prox(y, gamma=0.5)
    # the explicit prior value is R from the inversion
    from provex.inverse import evaluate_prior

    torch.testing.assert_close(LPNPrior(lpn).fn(y), evaluate_prior(lpn, y).values)
