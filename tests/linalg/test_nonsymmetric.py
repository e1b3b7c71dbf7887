"""GMRES, BiCGSTAB and NormalCG against a direct solve; warm starts of every iterative solver."""

import pytest
import torch

from nestopt import linalg, tree
from nestopt.errors import InvalidArgumentError, SolverWarning

D = torch.float64
N = 40


def _system(seed=0, n=N):
    """A well-conditioned non-symmetric matrix (eigenvalues in the right half plane), on a two-leaf tree."""
    gen = torch.Generator().manual_seed(seed)
    A = torch.eye(n, dtype=D) * 2.0 + 0.8 * torch.randn(n, n, generator=gen, dtype=D) / n**0.5
    like = {"a": torch.zeros(5, dtype=D), "b": torch.zeros(n - 5, dtype=D)}
    spec = tree.flatten(like)[1]
    rhs = tree.unflatten(torch.randn(n, generator=gen, dtype=D), spec)
    return A, linalg.LinearOperator.from_matrix(A, like), rhs


def _error(x, A, rhs):
    truth = torch.linalg.solve(A, tree.flatten(rhs)[0])
    return float((tree.flatten(x)[0] - truth).norm() / truth.norm())


GENERAL = [
    linalg.GMRES(steps=100, restart=50, tol=1e-12),
    linalg.GMRES(steps=400, restart=5, tol=1e-12),
    linalg.BiCGSTAB(steps=100, tol=1e-12),
    linalg.NormalCG(steps=200, tol=1e-12),
]
GENERAL_IDS = ["gmres", "gmres-restart-5", "bicgstab", "normal-cg"]


@pytest.mark.parametrize("solver", GENERAL, ids=GENERAL_IDS)
def test_general_solvers_match_a_direct_solve(solver):
    A, op, rhs = _system()
    sol = solver.solve(op, rhs)
    assert sol.info.status is linalg.Status.CONVERGED
    assert _error(sol.value, A, rhs) < 1e-10
    true_res = float((A @ tree.flatten(sol.value)[0] - tree.flatten(rhs)[0]).norm() / tree.flatten(rhs)[0].norm())
    assert sol.info.residual == pytest.approx(true_res, rel=1e-3, abs=1e-13)
    assert sol.info.hvp_calls == op.calls and not sol.info.warm_start


def test_gmres_without_restarts_is_exact_in_n_steps_and_counts_products():
    A, op, rhs = _system(1, n=12)
    sol = linalg.GMRES(steps=12, restart=12, tol=1e-14).solve(op, rhs)
    assert _error(sol.value, A, rhs) < 1e-12 and sol.info.iterations <= 12
    restarted = linalg.GMRES(steps=60, restart=4, tol=1e-12, residual=True).solve(op, rhs)
    # 4 products per cycle, one more per restart for the residual, one for residual=True
    cycles = -(-restarted.info.iterations // 4)
    assert restarted.info.hvp_calls == restarted.info.iterations + (cycles - 1) + 1
    assert restarted.info.residual < 1e-12


def test_solvers_on_a_symmetric_operator_agree_with_cg():
    gen = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=gen, dtype=D))
    S = (q * torch.linspace(0.5, 4.0, 20, dtype=D)) @ q.T
    S = 0.5 * (S + S.T)
    op = linalg.LinearOperator.from_matrix(S)
    rhs = {"x": torch.randn(20, generator=gen, dtype=D)}
    ref = linalg.CG(steps=100, tol=1e-13).solve(op, rhs).value["x"]
    for solver in (linalg.GMRES(tol=1e-13), linalg.BiCGSTAB(tol=1e-13), linalg.NormalCG(tol=1e-13)):
        torch.testing.assert_close(solver.solve(op, rhs).value["x"], ref, rtol=1e-9, atol=1e-11)


def test_gmres_reports_breakdown_on_a_singular_system():
    A = torch.diag(torch.tensor([1.0, 2.0, 0.0, 3.0], dtype=D))
    op = linalg.LinearOperator.from_matrix(A)  # symmetric, singular: b has a component in the null space
    rhs = {"x": torch.ones(4, dtype=D)}
    with pytest.warns(SolverWarning, match="invariant"):
        sol = linalg.GMRES(steps=20, tol=1e-12).solve(op, rhs)
    assert sol.info.status is linalg.Status.BREAKDOWN and tree.all_finite(sol.value)
    # the residual is as small as it can be: only the null-space component of b is left
    assert sol.info.residual == pytest.approx(0.5, abs=1e-12)
    least_squares = torch.tensor([1.0, 0.5, 0.0, 1 / 3], dtype=D)
    keep = torch.tensor([0, 1, 3])
    torch.testing.assert_close(sol.value["x"][keep], least_squares[keep])
    normal = linalg.NormalCG(steps=20, tol=1e-12).solve(op, rhs)  # the minimum-norm least-squares solution
    assert normal.info.status is linalg.Status.CONVERGED and "least-squares" in normal.info.message
    torch.testing.assert_close(normal.value["x"], least_squares)


def test_bicgstab_breakdown_is_reported():
    # A rotation: r_hat^T A r_hat = 0 for every r_hat, so the first alpha's denominator is zero
    A = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=D)
    op = linalg.LinearOperator.from_matrix(A)
    with pytest.warns(SolverWarning, match="breakdown"):
        sol = linalg.BiCGSTAB(steps=10).solve(op, {"x": torch.tensor([1.0, 0.0], dtype=D)})
    assert sol.info.status is linalg.Status.BREAKDOWN and tree.all_finite(sol.value)


def _spd(seed=0, n=N):
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=D))
    S = (q * torch.linspace(0.5, 2.5, n, dtype=D)) @ q.T
    S = 0.5 * (S + S.T)
    return S, linalg.LinearOperator.from_matrix(S), {"x": torch.randn(n, generator=gen, dtype=D)}


WARM = [
    ("cg", linalg.CG(steps=200, tol=1e-10), _spd),
    ("neumann", linalg.Neumann(steps=400, alpha=0.5, tol=1e-10), _spd),
    ("gmres", linalg.GMRES(steps=200, restart=10, tol=1e-10), _system),
    ("bicgstab", linalg.BiCGSTAB(steps=200, tol=1e-10), _system),
    ("normal-cg", linalg.NormalCG(steps=200, tol=1e-10), _system),
]


@pytest.mark.parametrize(("name", "solver", "make"), WARM, ids=[w[0] for w in WARM])
def test_warm_start_from_the_solution_needs_no_iterations(name, solver, make):
    A, op, rhs = make()
    exact = {k: v.clone() for k, v in linalg.Exact().solve(op, rhs).value.items()}
    sol = solver.solve(op, rhs, x0=exact)
    assert sol.info.status is linalg.Status.CONVERGED
    assert sol.info.iterations <= 1 and sol.info.warm_start
    assert sol.info.initial_residual is not None and sol.info.initial_residual < 1e-10
    assert _error(sol.value, A, rhs) < 1e-9


@pytest.mark.parametrize(("name", "solver", "make"), WARM, ids=[w[0] for w in WARM])
def test_a_good_initial_guess_needs_fewer_iterations(name, solver, make):
    A, op, rhs = make()
    cold = solver.solve(op, rhs)
    exact = tree.flatten(linalg.Exact().solve(op, rhs).value)[0]
    noise = 1e-4 * torch.randn(exact.shape, generator=torch.Generator().manual_seed(9), dtype=D)
    guess = tree.unflatten(exact + noise, tree.flatten(rhs)[1])
    warm = solver.solve(op, rhs, x0=guess)
    assert cold.info.status is warm.info.status is linalg.Status.CONVERGED
    assert warm.info.iterations < cold.info.iterations
    assert not cold.info.warm_start and cold.info.initial_residual is None
    assert 0 < warm.info.initial_residual < 1e-3
    assert _error(warm.value, A, rhs) < 1e-8
    assert warm.info.as_dict()["warm_start"] is True


def test_direct_solvers_ignore_the_initial_guess():
    _, op, rhs = _spd()
    far = {"x": torch.full_like(rhs["x"], 1e6)}
    for solver in (linalg.Exact(), linalg.Nystrom(rank=N, rho=1e-6), linalg.Identity()):
        a, b = solver.solve(op, rhs), solver.solve(op, rhs, x0=far)
        torch.testing.assert_close(a.value["x"], b.value["x"])
        assert not b.info.warm_start


def test_initial_guess_shape_is_checked_and_settings_validated():
    _, op, rhs = _system()
    with pytest.raises(ValueError, match="x0"):
        linalg.GMRES().solve(op, rhs, x0={"a": torch.zeros(5, dtype=D)})
    for make in (lambda: linalg.GMRES(restart=0), lambda: linalg.BiCGSTAB(steps=0), lambda: linalg.NormalCG(tol=-1)):
        with pytest.raises(InvalidArgumentError, match="restart|steps|tol"):
            make()
