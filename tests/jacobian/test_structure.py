"""Jacobian structures: the guaranteed property for arbitrary raw outputs, and argument validation."""

from __future__ import annotations

import math

import pytest
import torch

from nestopt.errors import InvalidArgumentError
from nestopt.jacobian import Invertible, Lipschitz, Unconstrained
from nestopt.jacobian.structure import check_structure


@pytest.mark.parametrize("dim", [1, 2, 3, 5])
@pytest.mark.parametrize("scale", [0.01, 1.0, 30.0])
def test_invertible_symmetric_part_is_at_least_eps(f64: torch.dtype, dim: int, scale: float) -> None:
    s = Invertible(eps=0.05)
    raw = scale * torch.randn(200, s.raw_size(dim), generator=torch.Generator().manual_seed(dim))
    jac = s.jacobian(raw, dim)
    assert jac.shape == (200, dim, dim)
    eig = torch.linalg.eigvalsh(0.5 * (jac + jac.mT))
    assert float(eig.min()) >= 0.05 - 1e-12
    if dim == 1:
        torch.testing.assert_close(jac[:, 0, 0], torch.nn.functional.softplus(raw[:, 0]) + 0.05)


def test_invertible_can_be_non_symmetric(f64: torch.dtype) -> None:
    jac = Invertible().jacobian(torch.randn(10, 8, generator=torch.Generator().manual_seed(0)), 2)
    assert float((jac - jac.mT).abs().max()) > 1e-3


@pytest.mark.parametrize("dim", [1, 2, 4])
@pytest.mark.parametrize("k", [0.3, 1.0, 7.0])
def test_lipschitz_spectral_norm_below_k(f64: torch.dtype, dim: int, k: float) -> None:
    raw = (
        torch.randn(300, dim * dim, generator=torch.Generator().manual_seed(dim)) * torch.logspace(-3, 1, 300)[:, None]
    )
    jac = Lipschitz(k=k).jacobian(raw, dim)
    norms = torch.linalg.matrix_norm(jac, ord=2)
    assert float(norms.max()) <= k
    # the direction of A is kept, and small A is nearly untouched (J ~ k A)
    torch.testing.assert_close(jac[:5], k * raw[:5].reshape(5, dim, dim), rtol=1e-5, atol=1e-8)
    if dim == 1:
        torch.testing.assert_close(jac[:, 0, 0], k * torch.tanh(raw[:, 0]), rtol=1e-12, atol=1e-12)


def test_lipschitz_gradients_are_finite_at_zero(f64: torch.dtype) -> None:
    raw = torch.zeros(2, 4, requires_grad=True)
    Lipschitz(k=2.0).jacobian(raw, 2).sum().backward()
    assert raw.grad is not None and bool(torch.isfinite(raw.grad).all())


def test_unconstrained_is_a_reshape() -> None:
    raw = torch.arange(8.0).reshape(2, 4)
    torch.testing.assert_close(Unconstrained().jacobian(raw, 2), raw.reshape(2, 2, 2))
    assert not Unconstrained.invertible and not Lipschitz.invertible and Invertible.invertible


@pytest.mark.parametrize("k", [0, -1.0, math.nan, math.inf, "1", True])
def test_bad_k_raises(k: object) -> None:
    with pytest.raises(InvalidArgumentError, match="k must be a positive finite number"):
        Lipschitz(k=k)  # type: ignore[arg-type]


@pytest.mark.parametrize("eps", [0.0, -1e-3, math.nan])
def test_bad_eps_raises(eps: float) -> None:
    with pytest.raises(InvalidArgumentError, match="eps"):
        Invertible(eps=eps)


def test_structure_must_be_an_object() -> None:
    assert isinstance(check_structure(None), Unconstrained)
    with pytest.raises(InvalidArgumentError, match=r"structure.*Invertible\(eps=1e-2\)"):
        check_structure("invertible")
    with pytest.raises(InvalidArgumentError, match="structure"):
        check_structure(3)
