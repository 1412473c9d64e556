"""Frank-Wolfe engine against independent truths: brute-force vertices, scipy's QP solver."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from provex.fw import Birkhoff, Box, KSparseNonNegative, Simplex, frank_wolfe, resolve_step, step_size

# ----- LMOs equal brute force over all vertices -----


def ksparse_vertices(n: int, k: int) -> torch.Tensor:
    """All 0/1 vectors with at most k ones (the vertices of the k-sparse polytope)."""
    rows = [v for v in itertools.product([0.0, 1.0], repeat=n) if sum(v) <= k]
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("n", range(1, 9))
def test_ksparse_lmo_equals_brute_force_every_k(n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    g = torch.randn(16, n, generator=gen, dtype=torch.float64)
    g[0] = g[0].abs()  # no negative entry: the best vertex is 0
    g[1] = -g[1].abs()  # all negative
    for k in range(1, n + 1):
        verts = ksparse_vertices(n, k)
        best = (g @ verts.T).min(1).values
        v = KSparseNonNegative(k, n)(g)
        torch.testing.assert_close((g * v).sum(1), best, rtol=0, atol=1e-12)
        assert bool(((v == 0) | (v == 1)).all()) and bool((v.sum(1) <= k).all())


def test_ksparse_lmo_per_problem_rates_and_index() -> None:
    gen = torch.Generator().manual_seed(0)
    n = 7
    k = torch.tensor([1, 3, 7, 5])
    g = torch.randn(4, n, generator=gen, dtype=torch.float64)
    lmo = KSparseNonNegative(k, n)
    v = lmo(g)
    for p in range(4):
        best = (g[p] @ ksparse_vertices(n, int(k[p])).T).min()
        assert float(g[p] @ v[p]) == pytest.approx(float(best), abs=1e-12)
    sub = lmo(g[[3, 1]], torch.tensor([3, 1]))  # rows of problems 3 and 1 only
    torch.testing.assert_close(sub, v[[3, 1]])


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_birkhoff_lmo_equals_enumerated_permutations(n: int) -> None:
    gen = torch.Generator().manual_seed(10 + n)
    g = torch.randn(6, n, n, generator=gen, dtype=torch.float64)
    best = torch.full((6,), float("inf"), dtype=torch.float64)
    for perm in itertools.permutations(range(n)):
        pm = torch.zeros(n, n, dtype=torch.float64)
        pm[torch.arange(n), torch.tensor(perm)] = 1
        best = torch.minimum(best, (g * pm).sum((1, 2)))
    v = Birkhoff()(g)
    torch.testing.assert_close((g * v).sum((1, 2)), best, rtol=0, atol=1e-12)
    assert bool((v.sum(1) == 1).all()) and bool((v.sum(2) == 1).all())


@pytest.mark.parametrize("n", [1, 3, 8])
def test_box_and_simplex_lmo_equal_brute_force(n: int) -> None:
    gen = torch.Generator().manual_seed(20 + n)
    g = torch.randn(10, n, generator=gen, dtype=torch.float64)
    box = torch.tensor(list(itertools.product([-1.0, 2.0], repeat=n)), dtype=torch.float64)
    torch.testing.assert_close((g * Box(-1.0, 2.0)(g)).sum(1), (g @ box.T).min(1).values)
    simplex = 3.0 * torch.eye(n, dtype=torch.float64)
    torch.testing.assert_close((g * Simplex(3.0)(g)).sum(1), (g @ simplex.T).min(1).values)


def test_lmo_bad_parameters() -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        KSparseNonNegative(0)
    with pytest.raises(ValueError, match="k must be <= n"):
        KSparseNonNegative(9, 8)
    with pytest.raises(ValueError, match="whole numbers"):
        KSparseNonNegative(1.5)
    with pytest.raises(ValueError, match="Birkhoff"):
        Birkhoff()(torch.zeros(2, 3, 4))


# ----- FW on convex quadratics reaches scipy's optimum -----


def quadratic(n: int, p: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """P random strongly convex quadratics 1/2 x'Qx + b'x."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(p, n, n, generator=gen, dtype=torch.float64)
    q = a @ a.transpose(1, 2) / n + 0.1 * torch.eye(n, dtype=torch.float64)
    b = 2 * torch.randn(p, n, generator=gen, dtype=torch.float64)
    return q, b


def make_objective(q: torch.Tensor, b: torch.Tensor):
    def f(x: torch.Tensor, idx: torch.Tensor, need_grad: bool = True):
        shape = x.shape
        xf = x.reshape(x.shape[0], -1)
        qx = (q[idx] @ xf.unsqueeze(2)).squeeze(2)
        val = 0.5 * (xf * qx).sum(1) + (b[idx] * xf).sum(1)
        return val, (qx + b[idx]).reshape(shape) if need_grad else None

    return f


def scipy_optimum(q: np.ndarray, b: np.ndarray, constraints: list, bounds) -> float:
    n = b.shape[0]
    best = np.inf
    for start in (np.zeros(n), np.full(n, 1.0 / n)):
        r = minimize(
            lambda x: 0.5 * x @ q @ x + b @ x,
            start,
            jac=lambda x: q @ x + b,
            bounds=bounds,
            constraints=constraints,
            method="SLSQP",
            options={"ftol": 1e-14, "maxiter": 1000},
        )
        best = min(best, r.fun)
    return float(best)


@pytest.mark.parametrize("step", ["2/(t+2)", "monotone"])
def test_fw_reaches_qp_optimum_over_ksparse_polytope(step: str) -> None:
    n, p, k = 8, 4, 3
    q, b = quadratic(n, p, seed=1)
    res = frank_wolfe(
        make_objective(q, b), KSparseNonNegative(k, n), torch.zeros(p, n, dtype=q.dtype), max_iter=3000, step=step
    )
    for i in range(p):
        cons = [{"type": "ineq", "fun": lambda x: k - x.sum(), "jac": lambda x: -np.ones_like(x)}]
        opt = scipy_optimum(q[i].numpy(), b[i].numpy(), cons, [(0.0, 1.0)] * n)
        assert float(res.objective[-1, i]) == pytest.approx(opt, abs=1e-3)
    assert bool((res.x.sum(1) <= k + 1e-9).all()) and bool((res.x >= 0).all() & (res.x <= 1).all())


def test_fw_reaches_qp_optimum_over_birkhoff_polytope() -> None:
    n, p = 4, 2
    q, b = quadratic(n * n, p, seed=2)
    res = frank_wolfe(
        make_objective(q, b), Birkhoff(), torch.eye(n, dtype=q.dtype).expand(p, n, n).clone(), max_iter=3000
    )
    for i in range(p):
        cons = [
            {"type": "eq", "fun": lambda x: x.reshape(n, n).sum(0)[:-1] - 1},  # one of the 2n is redundant
            {"type": "eq", "fun": lambda x: x.reshape(n, n).sum(1) - 1},
        ]
        opt = scipy_optimum(q[i].numpy(), b[i].numpy(), cons, [(0.0, 1.0)] * (n * n))
        assert float(res.objective[-1, i]) == pytest.approx(opt, abs=1e-3)
    torch.testing.assert_close(res.x.sum(1), torch.ones(p, n, dtype=q.dtype))
    torch.testing.assert_close(res.x.sum(2), torch.ones(p, n, dtype=q.dtype))


def test_fw_reaches_qp_optimum_over_simplex_and_box() -> None:
    n, p = 6, 3
    q, b = quadratic(n, p, seed=3)
    f = make_objective(q, b)
    simplex = frank_wolfe(f, Simplex(1.0), torch.full((p, n), 1.0 / n, dtype=q.dtype), max_iter=3000)
    box = frank_wolfe(f, Box(0.0, 1.0), torch.zeros(p, n, dtype=q.dtype), max_iter=3000, step="monotone")
    for i in range(p):
        eq = [{"type": "eq", "fun": lambda x: x.sum() - 1}]
        opt_s = scipy_optimum(q[i].numpy(), b[i].numpy(), eq, [(0.0, None)] * n)
        opt_b = scipy_optimum(q[i].numpy(), b[i].numpy(), [], [(0.0, 1.0)] * n)
        assert float(simplex.objective[-1, i]) == pytest.approx(opt_s, abs=1e-3)
        assert float(box.objective[-1, i]) == pytest.approx(opt_b, abs=1e-3)


def test_dual_gap_bounds_suboptimality_and_monotone_rule_never_increases() -> None:
    n, p, k = 8, 3, 2
    q, b = quadratic(n, p, seed=4)
    f = make_objective(q, b)
    ref = frank_wolfe(f, KSparseNonNegative(k, n), torch.zeros(p, n, dtype=q.dtype), max_iter=4000)
    fstar = ref.objective[-1]  # >= the true minimum, so f - fstar <= f - f*
    # the exact oracle (no rounding of the gradient for tie-breaking): the theory's FW gap
    exact = KSparseNonNegative(k, n, tie_break=False)
    res = frank_wolfe(f, exact, torch.zeros(p, n, dtype=q.dtype), max_iter=200, step="monotone")
    # gap at iteration t is measured at the iterate before step t: <g, x_t - v> >= f(x_t) - f*
    assert bool((res.gap >= res.objective[:-1] - fstar - 1e-9).all())
    assert bool((res.objective[1:] <= res.objective[:-1] + 1e-12).all())


def test_batched_equals_one_at_a_time_and_per_problem_stopping() -> None:
    n, p = 8, 3
    q, b = quadratic(n, p, seed=5)
    f = make_objective(q, b)
    k = torch.tensor([1, 2, 4])
    tol = torch.tensor([1e-1, 1e-6, 1e-2], dtype=q.dtype)
    together = frank_wolfe(f, KSparseNonNegative(k, n), torch.zeros(p, n, dtype=q.dtype), max_iter=300, tol=tol)
    for i in range(p):
        fi = make_objective(q[i : i + 1], b[i : i + 1])
        alone = frank_wolfe(
            fi, KSparseNonNegative(int(k[i]), n), torch.zeros(1, n, dtype=q.dtype), max_iter=300, tol=tol[i]
        )
        torch.testing.assert_close(together.x[i], alone.x[0])
        assert int(together.iterations[i]) == int(alone.iterations[0])
        stopped = int(alone.iterations[0]) < 300
        if stopped:  # it stopped because its gap fell below its tolerance
            assert float(alone.gap[int(alone.iterations[0]), 0]) <= float(tol[i])
    assert len(set(together.iterations.tolist())) > 1  # problems stopped at different times


def test_stochastic_fw_with_momentum_converges_on_noisy_gradients() -> None:
    n, p, k = 8, 2, 3
    q, b = quadratic(n, p, seed=6)
    exact = make_objective(q, b)
    gen = torch.Generator().manual_seed(0)

    def noisy(x: torch.Tensor, idx: torch.Tensor, need_grad: bool = True):
        val, grad = exact(x, idx, need_grad)
        return val, grad + 2.0 * torch.randn(grad.shape, generator=gen, dtype=grad.dtype)

    x0 = torch.zeros(p, n, dtype=q.dtype)
    ref = frank_wolfe(exact, KSparseNonNegative(k, n), x0, max_iter=3000)
    plain = frank_wolfe(noisy, KSparseNonNegative(k, n), x0, max_iter=3000, step="2/(t+2)", momentum=0.0)
    sto = frank_wolfe(noisy, KSparseNonNegative(k, n), x0, max_iter=3000, step="2/(t+2)", stochastic=True)
    err_sto = (exact(sto.x, torch.arange(p))[0] - ref.objective[-1]).abs().max()
    err_plain = (exact(plain.x, torch.arange(p))[0] - ref.objective[-1]).abs().max()
    assert float(err_sto) < 5e-2  # noise of sd 2 per gradient entry; the value scale is ~5
    assert float(err_sto) < 0.1 * float(err_plain)  # the momentum averaging is what makes it converge


def test_step_rules_and_errors() -> None:
    assert step_size("2/(t+2)", 0) == 1.0 and step_size("1/sqrt(t+1)", 3) == 0.5
    assert float(step_size("monotone", 3, torch.tensor(2))) == pytest.approx(0.125)
    assert resolve_step("sqrt") == "1/sqrt(t+1)" and resolve_step("open-loop") == "2/(t+2)"
    with pytest.raises(ValueError, match="step must be one of"):
        resolve_step("armijo")
    q, b = quadratic(4, 1, seed=7)
    f = make_objective(q, b)
    with pytest.raises(ValueError, match="deterministic"):
        frank_wolfe(f, Box(), torch.zeros(1, 4, dtype=q.dtype), step="monotone", stochastic=True)

    def nan_objective(x, idx, need_grad=True):
        val, grad = f(x, idx, need_grad)
        return val * float("nan"), grad

    with pytest.raises(ValueError, match="objective is not finite"):
        frank_wolfe(nan_objective, Box(), torch.zeros(1, 4, dtype=q.dtype))


# ----- round 2: deterministic tie-breaking, the solver driver, deprecated names -----


def test_lmo_ties_are_broken_by_a_fixed_rule_and_ignore_float_noise() -> None:
    from provex.fw import KSparseNonNegative as KS

    g = torch.tensor([[-1.0, -2.0, -2.0, 0.0, -2.0, -0.5]])
    v = KS(2, 6)(g)
    assert v.tolist() == [[0, 1, 1, 0, 0, 0]]  # equal entries: the lower index wins
    noisy = g + torch.tensor([[0, 1e-12, -1e-12, 0, 2e-12, 0]])
    assert torch.equal(KS(2, 6)(noisy), v)  # last-bit noise does not move the vertex
    # Birkhoff: rows with an exactly zero gradient are all tied; the vertex must not depend on
    # float noise in the other rows (it would, through the assignment solver's path, without rounding)
    gen = torch.Generator().manual_seed(0)
    n = 12
    grad = torch.randn(1, n, n, generator=gen, dtype=torch.float64)
    grad[0, ::2] = 0.0  # six tied rows
    base = Birkhoff()(grad)
    for _ in range(5):
        jitter = 1e-13 * torch.randn(1, n, n, generator=gen, dtype=torch.float64) * (grad != 0)
        assert torch.equal(Birkhoff()(grad + jitter), base)
    # still an optimal vertex: <G, V> equals the brute-force minimum over assignments
    from scipy.optimize import linear_sum_assignment

    r, c = linear_sum_assignment(grad[0].numpy())
    assert float((grad * base).sum()) == pytest.approx(float(grad[0].numpy()[r, c].sum()), abs=1e-9)


def test_driver_history_stopping_and_callback() -> None:
    from provex.fw import Step, iterate

    x = torch.zeros(3, 2)
    target = torch.tensor([1.0, 3.0, 6.0])
    calls = []

    def step(t: int, idx: torch.Tensor) -> Step:
        x[idx, 0] += 1.0
        gap = (target[idx] - x[idx, 0]).abs()
        return Step(gap, objective=gap.clone(), done=gap == 0)

    res = iterate(step, x, target.clone(), max_iter=10, callback=lambda t, xx: calls.append(t))
    assert res.iterations.tolist() == [1, 3, 6] and res.converged.tolist() == [True, True, True]
    assert res.objective.shape == (7, 3) and res.gap.shape == (6, 3) and len(res.times) == 7
    assert res.objective[-1].tolist() == [0.0, 0.0, 0.0] and calls == list(range(6))

    def sticky(t: int, idx: torch.Tensor) -> Step:  # done once past the target
        x[idx, 0] += 1.0
        gap = (target[idx] - x[idx, 0]).clamp_min(0)
        return Step(gap, done=gap == 0)

    x.zero_()
    res = iterate(sticky, x, max_iter=10, until="all")  # every problem iterates until all are done
    assert res.iterations.tolist() == [6, 6, 6] and res.converged.tolist() == [True, True, True]
    assert res.objective.shape == (0, 3) and x[:, 0].tolist() == [6.0, 6.0, 6.0]

    def bad(t: int, idx: torch.Tensor) -> Step:
        return Step(torch.zeros(idx.numel()), objective=torch.full((idx.numel(),), float("nan")))

    with pytest.raises(ValueError, match=r"objective is not finite .* at iteration 1 for problem"):
        iterate(bad, torch.zeros(2, 1), torch.zeros(2), max_iter=3)


def test_renamed_results_keep_deprecated_aliases() -> None:
    import provex.fw
    import provex.inverse

    with pytest.warns(DeprecationWarning, match="FWResult is deprecated"):
        assert provex.fw.FWResult is provex.fw.SolverResult
    with pytest.warns(DeprecationWarning, match="PnPResult is deprecated"):
        assert provex.inverse.PnPResult is provex.fw.SolverResult
    q, b = quadratic(4, 1, seed=8)
    res = frank_wolfe(make_objective(q, b), Box(), torch.zeros(1, 4, dtype=q.dtype), max_iter=3)
    with pytest.warns(DeprecationWarning, match="residuals is deprecated"):
        assert res.residuals is res.gap
