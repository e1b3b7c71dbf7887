import pytest
import torch

from nestopt import linalg, tree
from nestopt.errors import InvalidArgumentError, SolverDivergedError, SolverWarning, TooLargeError


def _operator(eigenvalues, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    a = q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T
    a = 0.5 * (a + a.T)
    split = n // 2
    like = {"a": torch.zeros(split, dtype=torch.float64), "b": torch.zeros(n - split, dtype=torch.float64)}
    spec = tree.flatten(like)[1]

    def matvec(v):
        return tree.unflatten(a @ tree.flatten(v)[0], spec)

    rhs = tree.unflatten(torch.randn(n, generator=gen, dtype=torch.float64), spec)
    return a, linalg.LinearOperator(matvec, like), rhs


SPD = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0]


def _rel_err(x, a, rhs, damping=0.0):
    truth = torch.linalg.solve(a + damping * torch.eye(a.shape[0], dtype=a.dtype), tree.flatten(rhs)[0])
    return float((tree.flatten(x)[0] - truth).norm() / truth.norm())


@pytest.mark.parametrize(
    "solver, tol",
    [
        (linalg.Exact(), 1e-12),
        (linalg.CG(steps=20, tol=1e-14), 1e-10),
        (linalg.Neumann(steps=400, alpha=0.3), 1e-10),
    ],
    ids=["exact", "cg", "neumann"],
)
def test_solvers_match_a_direct_solve(solver, tol):
    a, op, rhs = _operator(SPD)
    sol = solver.solve(op, rhs)
    assert _rel_err(sol.value, a, rhs) < tol
    assert sol.info.status in (linalg.Status.CONVERGED, linalg.Status.MAX_ITERATIONS)
    assert sol.info.hvp_calls == op.calls


def test_nystrom_at_full_rank_is_the_exact_damped_solve():
    # (b - C M^-1 C^T b) / rho cancels to O(rho): rounding errors grow like eps / rho, so use a moderate rho
    # and compare with the damped system it solves exactly.
    a, op, rhs = _operator(SPD)
    sol = linalg.Nystrom(rank=7, rho=1e-4).solve(op, rhs)
    assert _rel_err(sol.value, a, rhs, damping=1e-4) < 1e-10
    assert sol.info.status is linalg.Status.CONVERGED


def test_cg_damping_and_residual():
    a, op, rhs = _operator(SPD)
    sol = linalg.CG(steps=30, tol=1e-12, damping=0.5, residual=True).solve(op, rhs)
    assert _rel_err(sol.value, a, rhs, damping=0.5) < 1e-9
    assert sol.info.status is linalg.Status.CONVERGED
    assert sol.info.residual < 1e-10
    assert sol.info.iterations <= 7


def test_neumann_error_falls_with_steps_and_residual_is_exact():
    a, op, rhs = _operator(SPD)
    errors = [_rel_err(linalg.Neumann(steps=k, alpha=0.3).solve(op, rhs).value, a, rhs) for k in (5, 20, 80)]
    assert errors[0] > errors[1] > errors[2]
    sol = linalg.Neumann(steps=10, alpha=0.3, residual=True).solve(op, rhs)
    true_res = float((a @ tree.flatten(sol.value)[0] - tree.flatten(rhs)[0]).norm() / tree.flatten(rhs)[0].norm())
    assert sol.info.residual == pytest.approx(true_res, rel=1e-9)
    assert sol.info.hvp_calls == 11


def test_neumann_tolerance_stops_early():
    _, op, rhs = _operator(SPD)
    sol = linalg.Neumann(steps=1000, alpha=0.3, tol=1e-6).solve(op, rhs)
    assert sol.info.status is linalg.Status.CONVERGED
    assert sol.info.iterations < 1000


def test_nystrom_low_rank_is_an_approximation():
    a, op, rhs = _operator([1e-3] * 5 + [10.0, 20.0])
    sol = linalg.Nystrom(rank=3, rho=1e-2, residual=True).solve(op, rhs)
    assert sol.info.status is linalg.Status.MAX_ITERATIONS
    assert sol.info.residual is not None and sol.info.hvp_calls == 4


def test_identity():
    _, op, rhs = _operator(SPD)
    sol = linalg.Identity(alpha=0.5).solve(op, rhs)
    assert torch.allclose(tree.flatten(sol.value)[0], 0.5 * tree.flatten(rhs)[0])
    assert sol.info.hvp_calls == 0 and sol.info.residual is None


INDEFINITE = [-1.0, 0.5, 1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    "solver, status",
    [
        (linalg.Exact(), linalg.Status.NEGATIVE_CURVATURE),
        (linalg.CG(steps=20), linalg.Status.NEGATIVE_CURVATURE),
        (linalg.Neumann(steps=50, alpha=0.2), linalg.Status.NEGATIVE_CURVATURE),
        (linalg.Nystrom(rank=5, rho=1e-6), linalg.Status.NEGATIVE_CURVATURE),
    ],
    ids=["exact", "cg", "neumann", "nystrom"],
)
def test_status_on_an_indefinite_matrix(solver, status):
    a, op, rhs = _operator(INDEFINITE)
    with pytest.warns(SolverWarning, match="negative"):
        sol = solver.solve(op, rhs)
    assert sol.info.status is status
    assert tree.all_finite(sol.value)


def test_exact_is_still_exact_when_indefinite():
    a, op, rhs = _operator(INDEFINITE)
    with pytest.warns(SolverWarning):
        sol = linalg.Exact().solve(op, rhs)
    assert _rel_err(sol.value, a, rhs) < 1e-12


def test_neumann_detects_a_too_large_step():
    _, op, rhs = _operator(SPD)
    with pytest.warns(SolverWarning, match="alpha=1.0 too large"):
        sol = linalg.Neumann(steps=50, alpha=1.0).solve(op, rhs)
    assert sol.info.status is linalg.Status.DIVERGED
    assert tree.all_finite(sol.value)


def test_throw_raises_on_failure():
    _, op, rhs = _operator(INDEFINITE)
    with pytest.raises(SolverDivergedError, match="CG: negative_curvature"):
        linalg.CG(steps=20, throw=True).solve(op, rhs)
    with pytest.raises(SolverDivergedError, match="Neumann"):
        linalg.Neumann(steps=50, alpha=0.2, throw=True).solve(op, rhs)


def test_exact_refuses_large_problems_and_names_the_size():
    like = {"w": torch.zeros(5000)}
    op = linalg.LinearOperator(lambda v: v, like)
    with pytest.raises(TooLargeError, match="5000 x 5000.*max_size=4096.*CG"):
        linalg.Exact().solve(op, like)


def test_batched_products_fall_back_to_a_loop():
    a, _, rhs = _operator(SPD)
    spec = tree.flatten(rhs)[1]

    def matvec(v):  # data-dependent Python control flow: vmap cannot batch it
        flat = tree.flatten(v)[0]
        return tree.unflatten(a @ flat if float(flat.sum()) != 12345.0 else flat, spec)

    op = linalg.LinearOperator(matvec, rhs, batched_matvec=torch.func.vmap(matvec))
    assert torch.allclose(linalg.materialize(op), a)


@pytest.mark.parametrize(
    "make",
    [
        lambda: linalg.CG(steps=0),
        lambda: linalg.CG(damping=-1.0),
        lambda: linalg.Neumann(alpha=0.0),
        lambda: linalg.Neumann(steps=2.5),
        lambda: linalg.Nystrom(rank=0),
        lambda: linalg.Nystrom(rho=0.0),
        lambda: linalg.Identity(alpha=float("nan")),
        lambda: linalg.Exact(max_size=-3),
    ],
)
def test_bad_settings_raise_named_errors(make):
    with pytest.raises(InvalidArgumentError, match="steps|damping|alpha|rank|rho|max_size"):
        make()


def test_rank_above_dimension():
    _, op, rhs = _operator(SPD)
    with pytest.raises(InvalidArgumentError, match="rank=9 exceeds the dimension 7"):
        linalg.Nystrom(rank=9).solve(op, rhs)


def test_neumann_can_sum_every_term_as_in_the_paper():
    a, op, rhs = _operator([-0.05, 0.5, 1.0, 2.0, 3.0])
    k, alpha = 60, 0.2
    sol = linalg.Neumann(steps=k, alpha=alpha, on_growth="continue").solve(op, rhs)
    b = tree.flatten(rhs)[0]
    m = torch.eye(5, dtype=a.dtype) - alpha * a
    expected = alpha * sum(torch.linalg.matrix_power(m, j) @ b for j in range(k + 1))
    assert torch.allclose(tree.flatten(sol.value)[0], expected)
    assert sol.info.status is linalg.Status.MAX_ITERATIONS and sol.info.iterations == k
    assert "negative curvature" in sol.info.message and "summed as asked" in sol.info.message


def test_neumann_continue_still_stops_a_blow_up():
    _, op, rhs = _operator(SPD)
    with pytest.warns(SolverWarning, match="too large"):
        sol = linalg.Neumann(steps=200, alpha=2.0, on_growth="continue").solve(op, rhs)
    assert sol.info.status is linalg.Status.DIVERGED and tree.all_finite(sol.value)
    with pytest.raises(InvalidArgumentError, match="on_growth"):
        linalg.Neumann(on_growth="ignore")  # type: ignore[arg-type]


def test_nystrom_chunks_give_the_same_answer():
    _, op, rhs = _operator([1e-3] * 5 + [10.0, 20.0])
    whole = linalg.Nystrom(rank=4, rho=1e-2, seed=3).solve(op, rhs)
    chunked = linalg.Nystrom(rank=4, rho=1e-2, seed=3, chunk_size=3).solve(op, rhs)
    assert torch.allclose(tree.flatten(whole.value)[0], tree.flatten(chunked.value)[0])
    assert chunked.info.hvp_calls == 4
