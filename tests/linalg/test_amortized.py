"""Amortized solves: the warm-start safeguard, Lanczos bounds, the automatic Neumann step, Richardson steps,
the Nystrom preconditioner, deferred convergence checks and the Amortized wrapper, against dense references."""

import pytest
import torch

from nestopt import linalg, tree
from nestopt.errors import InvalidArgumentError, SolverDivergedError, UnsupportedError

D = torch.float64


def _op(eigenvalues, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=D))
    A = (q * torch.as_tensor(eigenvalues, dtype=D)) @ q.T
    A = 0.5 * (A + A.T)
    b = {"x": torch.randn(n, generator=gen, dtype=D)}
    return A, linalg.LinearOperator.from_matrix(A), b


def _solve(A, b):
    return torch.linalg.solve(A, b["x"])


SPECTRA = {
    "outliers": torch.cat([torch.linspace(0.01, 0.5, 196, dtype=D), torch.tensor([3.0, 5.0, 8.0, 10.0], dtype=D)]),
    "uniform": torch.linspace(0.1, 10.0, 200, dtype=D),
    "well": torch.linspace(1.0, 10.0, 200, dtype=D),
    "log": torch.logspace(-3, 1, 200, dtype=D),
    "indefinite": torch.linspace(-1.0, 4.0, 200, dtype=D),
}


@pytest.mark.parametrize("name", SPECTRA)
def test_spectral_bounds_estimate_the_extremes(name):
    ev = SPECTRA[name]
    _, op, _ = _op(ev)
    for seed in range(5):
        b = linalg.spectral_bounds(op, steps=10, seed=seed)
        assert b.products == 10
        assert 0.95 * float(ev.max()) <= b.upper <= 1.05 * float(ev.max())
        assert float(b.ritz[-1]) + b.residual >= float(ev.max())  # the cautious bound holds
        assert float(b.ritz[0]) - b.residual <= float(ev.min())


def test_spectral_bounds_are_exact_on_an_invariant_space_and_check_input():
    A = torch.diag(torch.tensor([1.0, 2.0, 7.0], dtype=D))
    b = linalg.spectral_bounds(linalg.LinearOperator.from_matrix(A), steps=10)
    torch.testing.assert_close(b.ritz, torch.tensor([1.0, 2.0, 7.0], dtype=D))
    assert b.residual == 0.0 and b.upper == pytest.approx(7.0) and b.lower == pytest.approx(1.0)
    with pytest.raises(UnsupportedError, match="symmetric"):
        linalg.spectral_bounds(linalg.LinearOperator.from_matrix(torch.tensor([[1.0, 2.0], [0.0, 1.0]])))
    with pytest.raises(InvalidArgumentError, match="steps"):
        linalg.spectral_bounds(linalg.LinearOperator.from_matrix(A), steps=0)


def test_neumann_with_an_automatic_step_converges():
    A, op, b = _op(SPECTRA["well"])
    sol = linalg.Neumann(steps=400, alpha="auto", tol=1e-10).solve(op, b)
    assert sol.info.status is linalg.Status.CONVERGED
    torch.testing.assert_close(sol.value["x"], _solve(A, b), atol=1e-8, rtol=0)
    assert "Lanczos" in sol.info.message and sol.info.hvp_calls == sol.info.iterations + 10
    prepared = linalg.Neumann(alpha="auto").prepare(op, seed=3)
    bound = linalg.spectral_bounds(op, steps=10, seed=3).upper
    assert prepared.alpha == pytest.approx(1.0 / bound) and prepared.prepared
    restored = linalg.Neumann(alpha="auto").load_prepared(prepared.prepared_state())
    assert restored.alpha == prepared.alpha
    negative = linalg.LinearOperator.from_matrix(-A)
    with pytest.raises(SolverDivergedError, match="no step size"):
        linalg.Neumann(alpha="auto").solve(negative, b)


def test_neumann_without_products_is_one_richardson_step():
    A, op, b = _op(SPECTRA["uniform"])
    cold = linalg.Neumann(steps=0, alpha=0.05).solve(op, b)
    torch.testing.assert_close(cold.value["x"], 0.05 * b["x"])
    assert cold.info.hvp_calls == 0
    x0 = {"x": 0.1 * b["x"]}
    gamma = float(b["x"] @ x0["x"] / (x0["x"] @ A @ x0["x"]))  # the guess's best factor (energy)
    warm = linalg.Neumann(steps=0, alpha=0.05).solve(op, b, x0=x0)
    torch.testing.assert_close(warm.value["x"], gamma * x0["x"] + 0.05 * (b["x"] - gamma * A @ x0["x"]))
    assert warm.info.hvp_calls == 1 and warm.info.warm_start
    # K + 1 Richardson steps from the scaled guess with K + 1 products
    x = gamma * x0["x"]
    for _ in range(3):
        x = x + 0.05 * (b["x"] - A @ x)
    torch.testing.assert_close(linalg.Neumann(steps=2, alpha=0.05).solve(op, b, x0=x0).value["x"], x)


SAFEGUARDED = [
    linalg.CG(steps=300, tol=1e-10),
    linalg.Neumann(steps=2000, alpha=0.1, tol=1e-10),
    linalg.GMRES(steps=300, tol=1e-10),
    linalg.BiCGSTAB(steps=300, tol=1e-10),
    linalg.NormalCG(steps=2000, tol=1e-10),
]


@pytest.mark.parametrize("solver", SAFEGUARDED, ids=lambda s: type(s).__name__)
def test_a_warm_start_is_never_worse_than_zero(solver):
    A, op, b = _op(SPECTRA["uniform"])
    exact = _solve(A, b)
    cold = solver.solve(op, b)
    far = solver.solve(op, b, x0={"x": 100.0 * exact})  # the right direction, the wrong size: scaled to fit
    assert far.info.warm_start and far.info.initial_residual < 1e-10 and far.info.iterations <= 1
    noisy = {"x": exact + torch.randn(exact.shape, generator=torch.Generator().manual_seed(2), dtype=D)}
    guess = solver.solve(op, b, x0=noisy)
    assert guess.info.warm_start and guess.info.initial_residual <= 1.0
    backwards = solver.solve(op, b, x0={"x": -exact})  # pointing away from the solution: discarded
    assert not backwards.info.warm_start and "discarded" in backwards.info.message
    for sol in (far, guess, backwards):
        torch.testing.assert_close(sol.value["x"], cold.value["x"], atol=1e-7, rtol=0)


def test_nystrom_preconditioner_of_full_rank_makes_cg_converge_at_once():
    A, op, b = _op(SPECTRA["log"][::10])  # 20 unknowns
    mu = 1e-2
    m = linalg.NystromPreconditioner(rank=20).build(op, damping=mu, seed=1)
    dense = linalg.materialize(m)
    # M (A + mu I) = (lambda_min + mu) I: the preconditioned system is a multiple of the identity
    product = dense @ (A + mu * torch.eye(20, dtype=D))
    torch.testing.assert_close(product, product[0, 0] * torch.eye(20, dtype=D), atol=1e-8, rtol=0)
    sol = linalg.CG(steps=5, tol=1e-10, damping=mu, preconditioner=m).solve(op, b)
    assert sol.info.iterations == 1 and sol.info.status is linalg.Status.CONVERGED
    torch.testing.assert_close(sol.value["x"], torch.linalg.solve(A + mu * torch.eye(20, dtype=D), b["x"]))


def test_nystrom_preconditioner_removes_the_outliers():
    spectrum = torch.cat([torch.linspace(1.0, 2.0, 192, dtype=D), torch.logspace(2, 3, 8, dtype=D)])
    A, op, b = _op(spectrum)
    plain = linalg.CG(steps=300, tol=1e-10).solve(op, b)
    recipe = linalg.CG(steps=300, tol=1e-10, preconditioner=linalg.NystromPreconditioner(rank=16))
    pre = recipe.solve(op, b)
    assert pre.info.status is plain.info.status is linalg.Status.CONVERGED
    assert pre.info.iterations < plain.info.iterations
    assert pre.info.hvp_calls == pre.info.iterations + 16  # the sketch's products are counted
    torch.testing.assert_close(pre.value["x"], _solve(A, b), atol=1e-8, rtol=0)
    prepared = recipe.prepare(op, seed=4)
    m = prepared.preconditioner
    assert isinstance(m, linalg.LowRankPreconditioner) and m.rank == 16 and prepared.prepared
    # Nystrom never overestimates (A - U diag(lam) U^T is positive semi-definite), and with twice as many columns as
    # outliers it finds them to within 30%
    top = spectrum[-8:].flip(0)
    assert bool((m.eigenvalues[:8] <= top * (1 + 1e-10)).all()) and bool((m.eigenvalues[:8] >= 0.7 * top).all())
    # the condition number falls from 1000 to that of the bulk (2) and what the sketch misses of it
    ev = torch.linalg.eigvals(linalg.materialize(m) @ A).real
    assert float(ev.max() / ev.min()) < 5.0
    again = recipe.load_prepared(prepared.prepared_state())
    torch.testing.assert_close(again.solve(op, b).value["x"], prepared.solve(op, b).value["x"])


def test_nystrom_preconditioner_stays_positive_definite_on_an_indefinite_operator():
    _, op, _ = _op(SPECTRA["indefinite"][::10])
    m = linalg.materialize(linalg.NystromPreconditioner(rank=10).build(op, damping=0.1))
    ev = torch.linalg.eigvalsh(0.5 * (m + m.T))
    assert float(ev.min()) > 0.0 and float(ev.max()) <= 1.0 + 1e-12
    with pytest.raises(InvalidArgumentError, match="preconditioner"):
        linalg.CG(preconditioner="nystrom")


def test_deferred_checks_give_the_same_solution():
    A, op, b = _op(SPECTRA["well"])
    for one, every in [
        (linalg.CG(steps=200, tol=1e-10), linalg.CG(steps=200, tol=1e-10, check_every=7)),
        (linalg.Neumann(steps=400, alpha=0.1, tol=1e-9), linalg.Neumann(steps=400, alpha=0.1, tol=1e-9, check_every=5)),
    ]:
        a, c = one.solve(op, b), every.solve(op, b)
        assert a.info.status is c.info.status is linalg.Status.CONVERGED
        assert a.info.iterations <= c.info.iterations < a.info.iterations + every.check_every
        torch.testing.assert_close(c.value["x"], _solve(A, b), atol=1e-7, rtol=0)


def test_a_failure_found_at_a_deferred_check_returns_the_previous_checked_iterate():
    A, op, b = _op(SPECTRA["indefinite"])
    with pytest.warns(match="non-positive curvature"):
        sol = linalg.CG(steps=50, check_every=4).solve(op, b)
    assert sol.info.status is linalg.Status.NEGATIVE_CURVATURE and sol.info.iterations % 4 == 0
    reference = linalg.CG(steps=sol.info.iterations).solve(op, b) if sol.info.iterations else None
    if reference is not None:
        torch.testing.assert_close(sol.value["x"], reference.value["x"])
    _, pos, b2 = _op(SPECTRA["uniform"])
    with pytest.warns(match="diverged"):
        big = linalg.Neumann(steps=40, alpha=0.5, check_every=8).solve(pos, b2)  # alpha above 2 / lambda_max
    assert big.info.status is linalg.Status.DIVERGED and big.info.iterations in (0, 8, 16, 24, 32)
    assert tree.all_finite(big.value)
    partial = linalg.Neumann(steps=big.info.iterations, alpha=0.5, on_growth="continue").solve(pos, b2)
    torch.testing.assert_close(big.value["x"], partial.value["x"])


def _drifting(t, n=60):
    ev = torch.linspace(1.0, 4.0, n, dtype=D) * (1.0 + 1e-3 * t)
    A, op, b = _op(ev, seed=0)
    b["x"] = b["x"] + 1e-3 * t
    return A, op, b


def test_amortized_solves_warm_start_a_sequence_of_systems():
    cold = linalg.CG(steps=100, tol=1e-8)
    amortized = linalg.Amortized(cold)
    costs = {"cold": 0, "amortized": 0}
    for t in range(8):
        A, op, b = _drifting(t)
        c, a = cold.solve(op, b), amortized.solve(op, b)
        costs["cold"] += c.info.hvp_calls
        costs["amortized"] += a.info.hvp_calls
        assert a.info.warm_start == (t > 0)
        torch.testing.assert_close(a.value["x"], _solve(A, b), atol=1e-6, rtol=0)
    assert costs["amortized"] < 0.8 * costs["cold"]


def test_single_loop_iterates_converge_across_solves():
    solver = linalg.Amortized(linalg.Neumann(steps=0, alpha="auto"), refresh=5)
    A, op, b = _drifting(0)
    products = []
    for _ in range(80):
        sol = solver.solve(op, b)
        products.append(sol.info.hvp_calls)
    torch.testing.assert_close(sol.value["x"], _solve(A, b), atol=1e-6, rtol=0)
    # one product per solve, plus the 10 Lanczos products of every fifth solve (the refresh)
    assert products[:6] == [10, 1, 1, 1, 1, 11]


def test_amortized_state_round_trip_and_reset():
    recipe = linalg.CG(steps=3, preconditioner=linalg.NystromPreconditioner(rank=5))
    first = linalg.Amortized(recipe, refresh=4, seed=2)
    for t in range(3):
        first.solve(_drifting(t)[1], _drifting(t)[2])
    state = first.state_dict()
    second = linalg.Amortized(recipe, refresh=4, seed=2)
    second.load_state_dict(state)
    for t in range(3, 7):  # the same solutions, refresh included (at t = 4)
        _, op, b = _drifting(t)
        a, c = first.solve(op, b), second.solve(op, b)
        torch.testing.assert_close(a.value["x"], c.value["x"], atol=0, rtol=0)
        assert a.info.hvp_calls == c.info.hvp_calls
    first.reset()
    assert not first.solve(*_drifting(0)[1:]).info.warm_start
    with pytest.raises(InvalidArgumentError, match="solver"):
        linalg.Amortized(first)


def test_a_failed_solve_is_not_reused():
    A, op, b = _op(SPECTRA["indefinite"])
    solver = linalg.Amortized(linalg.CG(steps=30))
    with pytest.warns(match="curvature"):
        assert solver.solve(op, b).info.status is linalg.Status.NEGATIVE_CURVATURE
    _, pos, b2 = _op(SPECTRA["uniform"])
    assert not solver.solve(pos, b2).info.warm_start


def test_tree_updates_take_a_device_scalar():
    a, b = {"x": torch.ones(3), "y": torch.ones(2)}, {"x": torch.arange(3.0), "y": torch.ones(2)}
    tree.add_(a, b, torch.tensor(2.0))
    torch.testing.assert_close(a["x"], torch.tensor([1.0, 3.0, 5.0]))
    tree.scale_(a, torch.tensor(0.5))
    torch.testing.assert_close(a["y"], torch.tensor([1.5, 1.5]))


@pytest.mark.parametrize(
    "solver",
    [
        linalg.Neumann(steps=30, alpha="auto", seed=3),
        linalg.CG(steps=30, preconditioner=linalg.NystromPreconditioner(rank=8, seed=2)),
        linalg.CG(steps=30),
    ],
    ids=["neumann-auto", "cg-nystrom", "cg"],
)
def test_ready_makes_the_estimates_that_solve_would_make(solver):
    A, op, b = _op(SPECTRA["well"])
    ready = solver.ready(op)
    assert ready.prepared and (ready is solver) == solver.prepared
    calls = op.calls
    got, want = ready.solve(op, b), solver.solve(op, b)
    assert op.calls - calls == got.info.hvp_calls + want.info.hvp_calls
    assert torch.allclose(got.value["x"], want.value["x"], rtol=1e-12, atol=1e-12)  # the same estimate (seed)


def test_amortized_ready_refreshes_once_and_counts_it_in_the_next_solve():
    A, op, b = _op(SPECTRA["well"])
    solver = linalg.Amortized(linalg.Neumann(steps=2, alpha="auto", estimate_steps=6), refresh=2)
    assert solver.ready(op) is solver and op.calls == 6
    assert solver.ready(op) is solver and op.calls == 6  # already prepared for the next solve
    first = solver.solve(op, b)
    assert first.info.hvp_calls == 6 + 2 and op.calls == 8
    second = solver.solve(op, b)
    assert second.info.hvp_calls == 3  # a warm start: one product for the residual, two terms
    solver.ready(op)  # the third solve is due a refresh
    assert solver.solve(op, b).info.hvp_calls == 6 + 3
    with pytest.raises(InvalidArgumentError, match="op must be"):
        solver.ready(A)
