"""The experiments' own reference functions against closed forms (no experiment runs here)."""

from __future__ import annotations

import pytest
import torch

from nestopt.experiments._jacobian_common import box_grid
from nestopt.experiments.icgn_vs_icnn import convex_gradient, gaussian_ot_map
from nestopt.experiments.jacnet_invertible import plane_map
from nestopt.experiments.jacnet_lipschitz import grid_lipschitz

F64 = torch.float64


def test_gaussian_ot_map_is_the_closed_form() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 3, generator=gen, dtype=F64), torch.randn(3, 3, generator=gen, dtype=F64)
    s1, s2 = a @ a.T + 0.1 * torch.eye(3, dtype=F64), b @ b.T + 0.1 * torch.eye(3, dtype=F64)
    m1, m2 = torch.randn(3, generator=gen, dtype=F64), torch.randn(3, generator=gen, dtype=F64)
    m, shift = gaussian_ot_map(m1, s1, m2, s2)
    torch.testing.assert_close(m, m.T)
    assert float(torch.linalg.eigvalsh(m).min()) > 0  # the gradient of a convex quadratic
    torch.testing.assert_close(m @ s1 @ m, s2)  # pushes N(m1, S1) onto N(m2, S2)
    torch.testing.assert_close(m @ m1 + shift, m2)
    # optimal among linear maps pushing S1 to S2: it beats the Cholesky-based map on E|T(x) - x|^2
    l1, l2 = torch.linalg.cholesky(s1), torch.linalg.cholesky(s2)
    other = l2 @ torch.linalg.inv(l1)
    torch.testing.assert_close(other @ s1 @ other.T, s2)
    eye = torch.eye(3, dtype=F64)
    cost = lambda t: torch.trace((t - eye) @ s1 @ (t - eye).T)
    assert float(cost(m)) <= float(cost(other)) + 1e-12


def test_convex_test_function_gradient_is_monotone() -> None:
    x = 3 * torch.randn(200, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    jac = torch.func.vmap(torch.func.jacrev(convex_gradient))(x)
    torch.testing.assert_close(jac, jac.mT)
    assert float(torch.linalg.eigvalsh(jac).min()) >= 0.5 - 1e-12  # Hessian >= I/2 from the quadratic term


def test_plane_map_is_invertible_on_the_box() -> None:
    jac = torch.func.vmap(torch.func.jacrev(plane_map))(box_grid(-2.0, 2.0, 41, 2))
    assert float(torch.linalg.eigvalsh(0.5 * (jac + jac.mT)).min()) >= 0.3  # strongly monotone: a bijection
    assert float((jac - jac.mT).abs().max()) > 0.1  # and not a gradient field


def test_grid_lipschitz_of_known_functions() -> None:
    grid = torch.linspace(-2, 2, 401, dtype=F64)
    assert grid_lipschitz(grid.abs(), grid) == pytest.approx(1.0)
    assert grid_lipschitz(torch.sin(3 * grid), grid) == pytest.approx(3.0, rel=1e-3)


def test_nelder_mead_finds_known_minima_of_many_problems_at_once() -> None:
    from nestopt.experiments._games_common import nelder_mead

    centers = torch.tensor([[1.0, -2.0], [0.5, 0.5], [3.0, 1.0]], dtype=F64)  # the last one lies outside the box

    def f(x: torch.Tensor) -> torch.Tensor:  # x: (N, B, 2)
        quadratic = ((x - centers) ** 2).sum(-1)
        rosenbrock = (1 - x[..., 0]) ** 2 + 100 * (x[..., 1] - x[..., 0] ** 2) ** 2
        return torch.where(torch.arange(3) == 1, rosenbrock, quadratic)

    lower, upper = torch.tensor([-2.0, -3.0], dtype=F64), torch.tensor([2.0, 2.0], dtype=F64)
    x, value = nelder_mead(f, torch.zeros(3, 2, dtype=F64), torch.full((3, 2), 0.5, dtype=F64), lower, upper, 400)
    expected = torch.tensor([[1.0, -2.0], [1.0, 1.0], [2.0, 1.0]], dtype=F64)  # Rosenbrock: (1, 1); clipped: (2, 1)
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(value, torch.tensor([0.0, 0.0, 1.0], dtype=F64), atol=1e-10, rtol=0)


def test_nelder_mead_follows_a_non_smooth_valley() -> None:
    """max(|x - y|, 0.1 |x + y - 2|) has a kink along x = y; the minimum is at (1, 1)."""
    from nestopt.experiments._games_common import nelder_mead

    f = lambda x: torch.maximum((x[..., 0] - x[..., 1]).abs(), 0.1 * (x[..., 0] + x[..., 1] - 2).abs())
    box = torch.full((2,), -5.0, dtype=F64), torch.full((2,), 5.0, dtype=F64)
    x, value = nelder_mead(f, torch.tensor([[-3.0, 4.0]], dtype=F64), torch.ones(1, 2, dtype=F64), *box, 300)
    torch.testing.assert_close(x, torch.tensor([[1.0, 1.0]], dtype=F64), atol=1e-6, rtol=0)
    assert float(value) < 1e-7


def test_grid_minima_are_local_minima_best_first() -> None:
    from nestopt.experiments._games_common import grid_minima

    x = torch.linspace(-3, 3, 61, dtype=F64)
    values = torch.minimum((x[:, None] - 1) ** 2 + x[None, :] ** 2, (x[:, None] + 2) ** 2 + (x[None, :] - 2) ** 2 + 0.5)
    assert grid_minima(values, 5).tolist() == [[40, 30], [10, 50]]  # (1, 0), then (-2, 2)
    assert grid_minima(values, 1).tolist() == [[40, 30]]
