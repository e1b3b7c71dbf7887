"""Gauss-Legendre path integrals: exactness, closed forms, gradcheck, error estimate, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.jacobian import gauss_legendre, path_integral, path_integral_with_error, segment_integral


def _f(x: torch.Tensor) -> torch.Tensor:
    """A smooth map R^2 -> R^3 with a closed-form Jacobian (below)."""
    x1, x2 = x[..., 0], x[..., 1]
    return torch.stack([torch.sin(x1) * x2, torch.exp(0.5 * x1) + x2**2, x1 * x2**2], -1)


def _jac_f(z: torch.Tensor) -> torch.Tensor:
    z1, z2 = z[..., 0], z[..., 1]
    rows = [
        torch.stack([torch.cos(z1) * z2, torch.sin(z1)], -1),
        torch.stack([0.5 * torch.exp(0.5 * z1), 2 * z2], -1),
        torch.stack([z2**2, 2 * z1 * z2], -1),
    ]
    return torch.stack(rows, -2)


@pytest.mark.parametrize("n", [1, 2, 5, 12])
def test_gauss_legendre_is_exact_up_to_degree_2n_minus_1(n: int) -> None:
    t, w = gauss_legendre(n, dtype=torch.float64)
    assert bool((w > 0).all()) and bool(((t > 0) & (t < 1)).all())
    for k in range(2 * n):
        assert float((w * t**k).sum()) == pytest.approx(1.0 / (k + 1), rel=1e-12, abs=1e-14)
    if n <= 5:  # degree 2n is not integrated exactly (for large n the error drops below rounding)
        assert abs(float((w * t ** (2 * n)).sum()) - 1.0 / (2 * n + 1)) > 1e-10


@pytest.mark.parametrize("vectorize", ["vmap", "loop"])
def test_path_integral_recovers_the_function_from_its_jacobian(f64: torch.dtype, vectorize: str) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(7, 2, generator=gen)
    x0 = torch.tensor([0.3, -0.2])
    out = path_integral(_jac_f, x, x0, nodes=12, vectorize=vectorize)  # type: ignore[arg-type]
    torch.testing.assert_close(out, _f(x) - _f(x0), rtol=1e-10, atol=1e-10)
    # one point, and per-point base points
    torch.testing.assert_close(path_integral(_jac_f, x[0], x0, nodes=12), _f(x[0]) - _f(x0), rtol=1e-10, atol=1e-10)
    bases = torch.randn(7, 2, generator=gen)
    torch.testing.assert_close(path_integral(_jac_f, x, bases, nodes=12), _f(x) - _f(bases), rtol=1e-10, atol=1e-10)


def test_vmap_and_loop_agree(f64: torch.dtype) -> None:
    w = torch.randn(3, 2, generator=torch.Generator().manual_seed(2))

    def field(z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z @ w.T).unsqueeze(-1) * w  # (..., 3, 2)

    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(3))
    a = path_integral(field, x, nodes=6, vectorize="vmap")
    b = path_integral(field, x, nodes=6, vectorize="loop")
    torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)


def test_gradcheck_path_integral_in_float64(f64: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(3, 2, generator=gen, requires_grad=True)
    x = torch.randn(4, 2, generator=gen, requires_grad=True)
    x0 = torch.randn(2, generator=gen, requires_grad=True)

    def integral(w: torch.Tensor, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        def field(z: torch.Tensor) -> torch.Tensor:
            return torch.sin(z @ w.T).unsqueeze(-1) * w + torch.eye(3, 2)

        return path_integral(field, x, x0, nodes=5)

    assert torch.autograd.gradcheck(integral, (w, x, x0))
    assert torch.autograd.gradgradcheck(integral, (w, x, x0))


def test_error_estimate_tracks_the_true_error(f64: torch.dtype) -> None:
    def field(z: torch.Tensor) -> torch.Tensor:
        return torch.exp(2.0 * z).unsqueeze(-1)  # J of exp(2z)/2, d = m = 1

    x = torch.tensor([[1.5], [-1.0], [0.5]])
    exact = (torch.exp(2.0 * x) - 1.0) / 2.0
    for n in (2, 3, 4):
        coarse_err = (path_integral(field, x, nodes=n) - exact).abs()[:, 0]
        est = path_integral_with_error(field, x, nodes=n)
        fine_err = (est.value - exact).abs()[:, 0]
        assert bool((fine_err <= est.error).all())  # the 2n-node value is within the estimate
        ratio = est.error / coarse_err
        assert bool(((ratio > 0.5) & (ratio < 2.0)).all())  # and the estimate is that of the n-node rule
    assert est.max_error == pytest.approx(float(est.error.max()))


def test_segment_integral_closed_form(f64: torch.dtype) -> None:
    out = segment_integral(lambda t: torch.stack([torch.exp(t), t**3]), nodes=8, dtype=torch.float64)
    torch.testing.assert_close(out, torch.tensor([math.e - 1.0, 0.25]), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("nodes", [0, -3, 1.5, True, None])
def test_too_few_nodes_raise(nodes: object) -> None:
    with pytest.raises(InvalidArgumentError, match="nodes"):
        path_integral(_jac_f, torch.zeros(1, 2), nodes=nodes)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="nodes"):
        gauss_legendre(nodes)  # type: ignore[arg-type]


def test_bad_shapes_raise() -> None:
    x = torch.zeros(4, 2)
    with pytest.raises(ShapeMismatchError, match="x0"):
        path_integral(_jac_f, x, torch.zeros(3))
    with pytest.raises(ShapeMismatchError, match="x0"):
        path_integral(_jac_f, x, torch.zeros(3, 2))
    with pytest.raises(ShapeMismatchError, match="field"):
        path_integral(lambda z: torch.zeros(*z.shape[:-1], 3, 5), x)
    with pytest.raises(ShapeMismatchError, match="x"):
        path_integral(_jac_f, torch.tensor(1.0))
    with pytest.raises(InvalidArgumentError, match="x must be a floating"):
        path_integral(_jac_f, torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(InvalidArgumentError, match="vectorize"):
        path_integral(_jac_f, x, vectorize="jit")  # type: ignore[arg-type]
