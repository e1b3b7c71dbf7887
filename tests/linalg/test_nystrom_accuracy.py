"""Nystrom's rounding error against the exact damped solve, down to rho = 1e-12: the bound in its docstring."""

from __future__ import annotations

import pytest
import torch

from nestopt import linalg

_N = 30
_RHOS = [1e-2, 1e-4, 1e-6, 1e-8, 1e-10, 1e-12]


def _matrix() -> torch.Tensor:
    """Symmetric positive definite, eigenvalues log-spaced in [1e-3, 1]: norm 1, condition number 1e3."""
    q, _ = torch.linalg.qr(torch.randn(_N, _N, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    a = q @ torch.diag(torch.logspace(-3, 0, _N, dtype=torch.float64)) @ q.T
    return 0.5 * (a + a.T)


def _solve(a: torch.Tensor, b: torch.Tensor, rank: int, rho: float) -> torch.Tensor:
    op = linalg.LinearOperator(lambda v: {"x": a @ v["x"]}, like={"x": torch.zeros(_N, dtype=a.dtype)})
    sol = linalg.Nystrom(rank=rank, rho=rho, seed=3).solve(op, {"x": b})
    assert sol.value["x"].dtype == a.dtype
    return sol.value["x"].double()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_full_rank_is_as_accurate_as_a_dense_damped_solve(dtype: torch.dtype) -> None:
    a = _matrix().to(dtype)
    b = torch.randn(_N, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    lam, vec = torch.linalg.eigh(a.double())  # the exact solve of the matrix as stored, in float64
    for rho in _RHOS:
        exact = vec @ ((vec.T @ b.double()) / (lam + rho))
        error = float((_solve(a, b, _N, rho) - exact).norm() / exact.norm())
        kappa = float((lam.max() + rho) / (lam.min() + rho))
        bound = 4 * (torch.finfo(torch.float64).eps * kappa + torch.finfo(dtype).eps)
        assert error <= bound, f"rho={rho:g}: relative error {error:.2e} > {bound:.2e}"


@pytest.mark.parametrize("in_span", [False, True])
def test_low_rank_error_is_within_eps_times_the_condition_number(in_span: bool) -> None:
    rank = _N // 2
    a = _matrix()
    idx = torch.randperm(_N, generator=torch.Generator().manual_seed(3))[:rank]  # the solver's columns
    c = a[:, idx]
    coeffs = torch.randn(_N, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    b = c @ coeffs[:rank] if in_span else coeffs  # in the span: the worst case, kappa(A~ + rho I) attained
    # (A~ + rho I)^{-1} b through an orthonormal basis of span(C), where A~ = C W^+ C^T lives
    basis, _ = torch.linalg.qr(c)
    inner = basis.T @ c @ torch.linalg.pinv(c[idx], hermitian=True) @ c.T @ basis
    lam, vec = torch.linalg.eigh(0.5 * (inner + inner.T))
    u = basis @ vec
    for rho in _RHOS:
        exact = u @ ((u.T @ b) / (lam + rho)) + (b - basis @ (basis.T @ b)) / rho
        error = float((_solve(a, b, rank, rho) - exact).norm() / exact.norm())
        bound = 64 * torch.finfo(torch.float64).eps * (1 + float(lam.max()) / rho)
        assert error <= bound, f"rho={rho:g}: relative error {error:.2e} > {bound:.2e}"
        if not in_span:
            assert error <= 1e-11  # a generic b is far from the worst case
