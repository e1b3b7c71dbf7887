"""custom_root with a non-symmetric optimality condition, solved iteratively (GMRES, BiCGSTAB, NormalCG)."""

import pytest
import torch

from nestopt import hypergrad, linalg
from nestopt.errors import UnsupportedError

D = torch.float64
N = 12


def _problem():
    gen = torch.Generator().manual_seed(4)
    a = 0.6 * torch.randn(N, N, generator=gen, dtype=D) / N**0.5  # non-symmetric, a contraction
    h = torch.randn(N, generator=gen, dtype=D)

    def optimality(p, hp):  # F(w, h) = w - tanh(A w + h): dF/dw = I - diag(sech^2) A is not symmetric
        return {"w": p["w"] - torch.tanh(a @ p["w"] + hp["b"])}

    def fixed_point(hp):
        w = torch.zeros(N, dtype=D)
        for _ in range(300):
            w = torch.tanh(a @ w + hp["b"])
        return {"w": w}

    return optimality, fixed_point, h


def _outer(w):
    return (w * torch.linspace(-1.0, 1.0, N, dtype=D)).sum() + 0.5 * (w**2).sum()


def _hypergradient(solver):
    optimality, fixed_point, h = _problem()
    solve = hypergrad.custom_root(optimality, solver=solver, symmetric=False)(fixed_point)
    b = h.clone().requires_grad_(True)
    _outer(solve({"b": b})["w"]).backward()
    return b.grad, solve.last_info


@pytest.mark.parametrize(
    "solver",
    [linalg.GMRES(steps=60, restart=20, tol=1e-13), linalg.BiCGSTAB(steps=60, tol=1e-13),
     linalg.NormalCG(steps=60, tol=1e-13), None],
    ids=["gmres", "bicgstab", "normal-cg", "default"],
)  # fmt: skip
def test_iterative_solvers_match_exact_and_finite_differences(solver):
    exact, _ = _hypergradient(linalg.Exact())
    got, info = _hypergradient(solver)
    assert info.status is linalg.Status.CONVERGED and info.iterations > 1
    torch.testing.assert_close(got, exact, rtol=1e-10, atol=1e-12)
    # central differences of the outer loss through the fixed-point iteration itself
    _, fixed_point, h = _problem()
    eps, fd = 1e-6, torch.zeros(N, dtype=D)
    for i in range(N):
        e = torch.zeros(N, dtype=D)
        e[i] = eps
        fd[i] = (_outer(fixed_point({"b": h + e})["w"]) - _outer(fixed_point({"b": h - e})["w"])) / (2 * eps)
    torch.testing.assert_close(got, fd, rtol=1e-7, atol=1e-9)


def test_cg_on_a_non_symmetric_optimality_condition_names_the_alternatives():
    with pytest.raises(UnsupportedError, match="GMRES, linalg.BiCGSTAB"):
        _hypergradient(linalg.CG(steps=20))
