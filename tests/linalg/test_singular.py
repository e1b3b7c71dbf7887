"""Solvers on singular positive semi-definite systems, in float64, against the pseudo-inverse.

H = X^T X with X of shape (r, n), r < n: the Hessian of an overparameterized least-squares problem. P_N
projects onto its null space. The claims are the ones the solvers' docstrings state.
"""

import pytest
import torch

from nestopt import linalg, tree
from nestopt.errors import SolverWarning

D = torch.float64
N, RANK = 12, 7


@pytest.fixture(scope="module")
def system():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(RANK, N, generator=gen, dtype=D)
    h = x.T @ x
    like = {"a": torch.zeros(5, dtype=D), "b": torch.zeros(N - 5, dtype=D)}  # two leaves: solvers act on trees
    op = linalg.LinearOperator.from_matrix(h, like)
    pinv = torch.linalg.pinv(h, hermitian=True)
    null = torch.eye(N, dtype=D) - pinv @ h
    inside = h @ torch.randn(N, generator=gen, dtype=D)  # in the range of H
    outside = torch.randn(N, generator=gen, dtype=D)  # with a part of relative size ~0.5 in the null space
    x0 = pinv @ inside + torch.randn(N, generator=gen, dtype=D)  # toward the solution, with a null-space part
    return {"h": h, "op": op, "pinv": pinv, "null": null, "inside": inside, "outside": outside, "x0": x0,
            "lmax": float(torch.linalg.eigvalsh(h).max()), "spec": tree.flatten(like)[1]}  # fmt: skip


def _tree(s, v):
    return tree.unflatten(v, s["spec"])


def _flat(t):
    return tree.flatten(t)[0]


def _solve(s, solver, b, x0=None):
    return solver.solve(s["op"], _tree(s, b), None if x0 is None else _tree(s, x0))


def _neumann(s, steps, **kw):
    return linalg.Neumann(steps=steps, alpha=1.0 / s["lmax"], **kw)


def _converged(s):
    return {
        "cg": linalg.CG(steps=50, tol=1e-14),
        "neumann": _neumann(s, 5000, tol=1e-15),
        "gmres": linalg.GMRES(tol=1e-14),
        "bicgstab": linalg.BiCGSTAB(tol=1e-14),
        "normal_cg": linalg.NormalCG(tol=1e-14),
    }


ITERATIVE = ["cg", "neumann", "gmres", "bicgstab", "normal_cg"]


@pytest.mark.parametrize("name", ITERATIVE)
def test_from_zero_every_solver_gives_the_minimum_norm_solution(system, name):
    s = system
    sol = _solve(s, _converged(s)[name], s["inside"])
    assert sol.info.status is linalg.Status.CONVERGED
    torch.testing.assert_close(_flat(sol.value), s["pinv"] @ s["inside"], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("steps", [1, 2, 3, 5])
def test_cg_and_neumann_iterates_stay_in_the_range(system, steps):
    # truncated, the answers are not solutions yet, but they never leave the range of H: no null-space part
    s = system
    for solver in (linalg.CG(steps=steps), _neumann(s, steps)):
        x = _flat(_solve(s, solver, s["inside"]).value)
        assert float((s["null"] @ x).norm()) <= 1e-12 * float(x.norm())


@pytest.mark.parametrize("name", ITERATIVE)
def test_a_warm_start_outside_the_range_keeps_its_null_space_part(system, name):
    # a solver starts from gamma x0, gamma the best factor along x0 (energy for CG and a symmetric Neumann,
    # residual otherwise); from there the limit is A^+ b + gamma P_N x0: the solution closest to gamma x0
    s = system
    h, b, x0 = s["h"], s["inside"], s["x0"]
    energy = name == "cg" or (name == "neumann" and s["op"].symmetric)
    gamma = float(b @ x0 / (x0 @ h @ x0)) if energy else float(b @ h @ x0 / (h @ x0).square().sum())
    assert gamma > 0.0  # this x0 is kept; one pointing away is discarded (the next test)
    sol = _solve(s, _converged(s)[name], b, x0)
    closest = s["pinv"] @ b + gamma * (s["null"] @ x0)
    assert sol.info.warm_start and float((s["null"] @ x0).norm()) > 1.0
    torch.testing.assert_close(_flat(sol.value), closest, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", ITERATIVE)
def test_a_warm_start_pointing_away_is_discarded_for_the_minimum_norm_solution(system, name):
    s = system
    sol = _solve(s, _converged(s)[name], s["inside"], -s["pinv"] @ s["inside"] + s["null"] @ s["x0"])
    assert not sol.info.warm_start and "discarded" in sol.info.message
    torch.testing.assert_close(_flat(sol.value), s["pinv"] @ s["inside"], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("steps", [3, 40, 400])
def test_neumann_outside_the_range_matches_its_closed_form(system, steps):
    # x_K = sum over positive eigenvalues of (1 - (1 - a l)^(K+1)) / l q q^T b  +  a (K + 1) P_N b
    s = system
    alpha = 1.0 / s["lmax"]
    evals, evecs = torch.linalg.eigh(s["h"])
    positive = evals > 1e-10 * s["lmax"]
    q, lam = evecs[:, positive], evals[positive]
    expected = q @ ((1 - (1 - alpha * lam) ** (steps + 1)) / lam * (q.T @ s["outside"]))
    expected = expected + alpha * (steps + 1) * (s["null"] @ s["outside"])
    sol = _solve(s, _neumann(s, steps, residual=True), s["outside"])
    torch.testing.assert_close(_flat(sol.value), expected, rtol=1e-10, atol=1e-10)
    # no term grows, so nothing is reported as divergence; the residual is at least the part outside the range
    outside = float((s["null"] @ s["outside"]).norm() / s["outside"].norm())
    assert sol.info.status is linalg.Status.MAX_ITERATIONS
    assert sol.info.residual >= outside - 1e-12
    if steps == 400:
        assert sol.info.residual == pytest.approx(outside, rel=1e-6)


def test_cg_outside_the_range_finds_no_solution(system):
    s = system
    outside = float((s["null"] @ s["outside"]).norm() / s["outside"].norm())
    for steps in (2, 5):
        sol = _solve(s, linalg.CG(steps=steps, residual=True), s["outside"])
        assert sol.info.status is linalg.Status.MAX_ITERATIONS and sol.info.residual >= outside - 1e-12
    # run long, it breaks down along the null space: a direction of zero curvature
    with pytest.warns(SolverWarning, match="curvature"):
        sol = _solve(s, linalg.CG(steps=30, residual=True), s["outside"])
    assert sol.info.status is linalg.Status.NEGATIVE_CURVATURE and sol.info.residual >= outside


@pytest.mark.parametrize("rhs", ["inside", "outside"])
def test_exact_returns_the_pseudo_inverse_solution(system, rhs):
    s = system
    sol = _solve(s, linalg.Exact(), s[rhs])
    torch.testing.assert_close(_flat(sol.value), s["pinv"] @ s[rhs], rtol=1e-10, atol=1e-11)
    assert sol.info.status is linalg.Status.CONVERGED
    assert f"nullity {N - RANK}" in sol.info.message
    outside = float((s["null"] @ s[rhs]).norm() / s[rhs].norm())  # the least-squares residual
    assert sol.info.residual == pytest.approx(outside, abs=1e-12)


def test_exact_on_singular_float32_and_non_symmetric_matrices():
    # float32 products: the null eigenvalues are at float32 rounding level, and the default rcond sees them
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(1), dtype=D)
    h = x.T @ x
    b = h @ torch.ones(6, dtype=D)
    sol = linalg.Exact().solve(linalg.LinearOperator.from_matrix(h.float()), {"x": b.float()})
    assert "nullity 3" in sol.info.message and sol.value["x"].dtype == torch.float32
    torch.testing.assert_close(sol.value["x"].double(), torch.linalg.pinv(h) @ b, rtol=1e-3, atol=1e-4)
    # an exactly singular non-symmetric matrix: LU fails, the pseudo-inverse answers
    a = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, 1.0, 0.0]], dtype=D)
    op = linalg.LinearOperator.from_matrix(a)
    rhs = torch.tensor([1.0, 1.0, 2.0], dtype=D)
    sol = linalg.Exact().solve(op, {"x": rhs})
    torch.testing.assert_close(sol.value["x"], torch.linalg.pinv(a) @ rhs)
    assert "nullity 1" in sol.info.message and sol.info.status is linalg.Status.CONVERGED


def test_normal_cg_gives_the_minimum_norm_least_squares_solution(system):
    s = system
    sol = _solve(s, linalg.NormalCG(tol=1e-14), s["outside"])
    torch.testing.assert_close(_flat(sol.value), s["pinv"] @ s["outside"], rtol=1e-9, atol=1e-10)
    x0 = 0.5 * s["pinv"] @ s["outside"] + s["null"] @ s["x0"]  # half the solution, plus a null-space part
    warm = _solve(s, linalg.NormalCG(tol=1e-14), s["outside"], x0)
    hx0 = s["h"] @ x0
    gamma = float(s["outside"] @ hx0 / hx0.square().sum())  # the residual's best factor along x0
    assert gamma > 0.0 and warm.info.warm_start
    expected = s["pinv"] @ s["outside"] + gamma * (s["null"] @ x0)
    torch.testing.assert_close(_flat(warm.value), expected, rtol=1e-9, atol=1e-10)


def test_gmres_and_bicgstab_outside_the_range(system):
    s = system
    outside = float((s["null"] @ s["outside"]).norm() / s["outside"].norm())
    with pytest.warns(SolverWarning, match="invariant"):
        sol = _solve(s, linalg.GMRES(tol=1e-14), s["outside"])
    x = _flat(sol.value)
    # a least-squares solution: the right range part, but a null-space part along P_N b, not the minimum norm
    assert sol.info.status is linalg.Status.BREAKDOWN
    assert sol.info.residual == pytest.approx(outside, rel=1e-8)
    torch.testing.assert_close(s["h"] @ x, s["h"] @ (s["pinv"] @ s["outside"]), rtol=1e-8, atol=1e-8)
    null_part, pn_b = s["null"] @ x, s["null"] @ s["outside"]
    assert float(null_part.norm()) > 0.1
    assert float((null_part - (null_part @ pn_b) / (pn_b @ pn_b) * pn_b).norm()) <= 1e-8 * float(null_part.norm())
    # BiCGSTAB has nothing to converge to: it does not claim convergence, and reports its large residual
    bicg = _solve(s, linalg.BiCGSTAB(steps=100, residual=True), s["outside"])
    assert bicg.info.status is not linalg.Status.CONVERGED and bicg.info.residual > outside


def test_nystrom_passes_the_null_space_part_through_divided_by_rho(system):
    s = system
    rho = 1e-3
    for rhs in ("inside", "outside"):
        sol = _solve(s, linalg.Nystrom(rank=N, rho=rho), s[rhs])
        # at full rank it solves (H + rho I) x = b; a singular H is not mistaken for negative curvature
        assert sol.info.status is linalg.Status.CONVERGED
        damped = torch.linalg.solve(s["h"] + rho * torch.eye(N, dtype=D), s[rhs])
        torch.testing.assert_close(_flat(sol.value), damped, rtol=1e-8, atol=1e-8)
        torch.testing.assert_close(s["null"] @ _flat(sol.value), s["null"] @ s[rhs] / rho, rtol=1e-8, atol=1e-8)
    # and for b in the range, (H + rho I)^-1 b tends to the minimum-norm solution as rho -> 0
    errors = []
    for rho in (1e-2, 1e-4):
        x = _flat(_solve(s, linalg.Nystrom(rank=N, rho=rho), s["inside"]).value)
        errors.append(float((x - s["pinv"] @ s["inside"]).norm()))
    assert errors[1] < 2e-2 * errors[0]
