"""AdaptiveQuadrature: the node count doubles until the n versus n/2 estimate meets the tolerance, the estimate
bounds the true error (closed forms), the cap warns, a fixed rule is a fixed rule, bad arguments raise."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from nestopt.errors import InvalidArgumentError, SolverWarning
from nestopt.jacobian import AdaptiveQuadrature, path_integral_with_error, segment_integral
from nestopt.jacobian.quadrature import node_values

# int_0^1 exp(a t) dt = expm1(a) / a: sharper (needs more nodes) as |a| grows.
_A = torch.tensor([[0.5], [-3.0], [12.0]], dtype=torch.float64)
_EXACT = torch.expm1(_A) / _A


def _values(a: torch.Tensor) -> Callable[[int, torch.Tensor | None], torch.Tensor]:
    def values(n: int, index: torch.Tensor | None) -> torch.Tensor:  # (n, points, 1)
        rows = a if index is None else a[index]
        return node_values(lambda t: torch.exp(t * rows), nodes=n, dtype=a.dtype)

    return values


_exp_values = _values(_A)


@pytest.mark.parametrize("tol", [1e-4, 1e-8, 1e-12])
def test_returned_value_is_within_the_estimate_and_the_tolerance(tol: float) -> None:
    value, error, info = AdaptiveQuadrature(nodes=2, tol=tol)(_exp_values)
    assert error is not None and info.converged and info.tol == tol
    true = (value - _EXACT).norm(dim=-1)
    assert bool((true <= error + 1e-15).all())  # the estimate (the n/2-node rule's error) bounds the error
    assert bool((error <= tol * value.norm(dim=-1).clamp_min(1.0)).all())
    # the first rule that passes: the check failed with half as many nodes
    previous, previous_error, _ = AdaptiveQuadrature(nodes=info.nodes // 2, tol=None)(_exp_values, estimate=True)
    assert previous_error is not None
    assert bool((previous_error > tol * previous.norm(dim=-1).clamp_min(1.0)).any())


def test_points_are_refined_separately() -> None:
    rule = AdaptiveQuadrature(nodes=2, tol=1e-8)
    value, error, info = rule(_exp_values)
    singles = [rule(_values(_A[i : i + 1])) for i in range(len(_A))]
    torch.testing.assert_close(value, torch.cat([v for v, _, _ in singles]), rtol=1e-15, atol=1e-15)
    assert error is not None
    torch.testing.assert_close(error, torch.cat([e for _, e, _ in singles if e is not None]), rtol=1e-12, atol=1e-11)
    assert info.evaluations == sum(i.evaluations for _, _, i in singles)
    assert info.nodes == max(i.nodes for _, _, i in singles) > min(i.nodes for _, _, i in singles)
    # the easy point (a = 0.5) kept a coarser rule; a point costs 2 + 1 for the first rule and check, then 4, 8, ...
    easy = singles[0][2]
    assert easy.nodes < info.nodes
    assert easy.evaluations == 3 + sum(2**j for j in range(2, int(math.log2(easy.nodes)) + 1))


def test_tighter_tolerance_uses_more_nodes() -> None:
    counts = [AdaptiveQuadrature(nodes=2, tol=tol)(_exp_values)[2].nodes for tol in (1e-3, 1e-7, 1e-12)]
    assert counts == sorted(counts) and counts[0] < counts[-1]


def test_fixed_rule_uses_exactly_its_nodes() -> None:
    value, error, info = AdaptiveQuadrature(nodes=5, tol=None)(_exp_values)
    assert error is None and info.nodes == 5 and info.error is None and info.evaluations == 5 * len(_A)
    torch.testing.assert_close(value, segment_integral(lambda t: torch.exp(t * _A), nodes=5, dtype=torch.float64))
    _, error, info = AdaptiveQuadrature(nodes=6, tol=None)(_exp_values, estimate=True)
    assert error is not None and info.error == pytest.approx(float(error.max()))
    fixed_pair = path_integral_with_error(lambda z: torch.exp(z).unsqueeze(-1), _A, nodes=3)
    assert fixed_pair.nodes == 6


def test_cap_reached_warns_and_reports() -> None:
    with pytest.warns(SolverWarning, match=r"max_nodes=8 .*quadrature_tol"):
        value, error, info = AdaptiveQuadrature(nodes=2, tol=1e-12, max_nodes=8)(_exp_values)
    assert info.nodes == 8 and not info.converged and error is not None
    assert info.error == pytest.approx(float(error.max())) and info.error > 1e-12


def test_rounding_floor_in_float32() -> None:
    a = _A.float()
    value, _, info = AdaptiveQuadrature(nodes=4, tol=1e-12)(_values(a))
    assert info.converged and info.tol == pytest.approx(64 * torch.finfo(torch.float32).eps)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, _EXACT.float(), rtol=1e-5, atol=0)


def test_gradients_flow_through_the_chosen_rule() -> None:
    a = _A.clone().requires_grad_(True)
    value, _, info = AdaptiveQuadrature(nodes=2, tol=1e-12)(_values(a))
    (grad,) = torch.autograd.grad(value.sum(), a)
    exact = (torch.exp(_A) * (_A - 1) + 1) / _A**2  # d/da of expm1(a)/a
    torch.testing.assert_close(grad, exact, rtol=1e-9, atol=1e-12)
    assert info.nodes > 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"nodes": 0}, "nodes"),
        ({"tol": 0.0}, "quadrature_tol"),
        ({"tol": float("nan")}, "quadrature_tol"),
        ({"max_nodes": 0}, "max_nodes"),
        ({"nodes": 32, "max_nodes": 16}, "max_nodes"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        AdaptiveQuadrature(**kwargs)  # type: ignore[arg-type]
