"""JacNet: the map is the path integral of its field, inverses round-trip, Lipschitz bounds hold, bad input."""

from __future__ import annotations

import pytest
import torch

from nestopt.errors import InvalidArgumentError, ShapeMismatchError, SolverWarning, UnsupportedError
from nestopt.jacobian import (
    AdaptiveQuadrature,
    Invertible,
    JacNet,
    Lipschitz,
    QuadratureInfo,
    Unconstrained,
    path_integral,
)


def _net(dim: int, structure: object = None, seed: int = 0, **kw: object) -> JacNet:
    kw.setdefault("hidden", (16, 16))
    gen = torch.Generator().manual_seed(seed)
    return JacNet(dim, structure, generator=gen, **kw).double()  # type: ignore[arg-type]


def _scale_weights(net: JacNet, factor: float) -> JacNet:
    with torch.no_grad():
        for p in net.net.parameters():
            p.mul_(factor)
    return net


def test_forward_is_y0_plus_the_path_integral_of_the_field() -> None:
    net = _net(2, Invertible(), x0=torch.tensor([0.5, -1.0]))
    with torch.no_grad():
        net.y0.copy_(torch.tensor([1.0, 2.0]))
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = net.y0 + path_integral(net.jacobian, x, net.x0, nodes=64, vectorize="loop")
    torch.testing.assert_close(net(x), expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(net(net.x0.unsqueeze(0)), net.y0.unsqueeze(0).detach())


def test_one_dimensional_jacnet_has_the_field_as_its_derivative() -> None:
    net = _net(1, Invertible(), nodes=24)
    x = torch.linspace(-2, 2, 11, dtype=torch.float64).unsqueeze(-1)
    torch.testing.assert_close(net.model_jacobian(x), net.jacobian(x), rtol=1e-9, atol=1e-9)
    assert float(net.integrability_error(x).detach().max()) < 1e-9
    # against central finite differences of the computed map
    h = 1e-5
    fd = (net(x + h) - net(x - h)) / (2 * h)
    torch.testing.assert_close(fd, net.model_jacobian(x)[..., 0], rtol=1e-7, atol=1e-8)


def test_forward_gradcheck() -> None:
    net = _net(2, Lipschitz(k=2.0), hidden=(6,), nodes=4, quadrature_tol=None)  # a fixed rule for finite differences
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True, generator=torch.Generator().manual_seed(2))
    assert torch.autograd.gradcheck(net, (x,))


@pytest.mark.parametrize("dim", [1, 2])
def test_inverse_round_trip(dim: int) -> None:
    net = _net(dim, Invertible(eps=0.1), seed=dim)
    if dim > 1:  # a nearly constant (so nearly conservative) field: f is invertible
        with torch.no_grad():
            net.net[-1].weight.mul_(0.1)
        assert float(net.integrability_error(torch.randn(20, dim, dtype=torch.float64)).detach().max()) < 0.3
    x = 1.5 * torch.randn(40, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = net(x)
        inv = net.inverse(y)
    torch.testing.assert_close(inv.x, x, rtol=0, atol=1e-9)
    assert inv.max_residual < 1e-10
    assert torch.allclose(net(inv.x), y, atol=1e-10)
    assert inv.ode_steps == 32 and inv.newton_steps <= 2


def test_inverse_of_a_constant_field_is_exact_without_newton() -> None:
    net = _net(3, Invertible(eps=0.2), seed=5)
    with torch.no_grad():
        net.net[-1].weight.zero_()  # J(x) = const: a conservative field, f affine, RK4 exact
    x = torch.randn(10, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        inv = net.inverse(net(x), steps=1, newton=0)
    torch.testing.assert_close(inv.x, x, rtol=0, atol=1e-12)
    assert inv.newton_steps == 0 and float(inv.ode_residual.max()) < 1e-12


def test_non_conservative_field_in_two_dimensions_is_reported() -> None:
    net = _net(2, Invertible(eps=0.1), seed=2)  # a random field: far from conservative
    x = 1.5 * torch.randn(40, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    assert float(net.integrability_error(x).detach().max()) > 0.5
    jac = net.model_jacobian(x).detach()
    assert float(torch.linalg.eigvalsh(0.5 * (jac + jac.mT))[..., 0].min()) < 0  # Df is not PD although J is
    with pytest.warns(SolverWarning, match="integrability_error"), torch.no_grad():
        inv = net.inverse(net(x))
    assert inv.max_residual > 1e-3  # reported in the result too


def test_newton_improves_a_coarse_ode() -> None:
    net = _scale_weights(_net(1, Invertible(eps=0.05), seed=6), 3.0)
    x = torch.linspace(-2, 2, 21, dtype=torch.float64).unsqueeze(-1)
    with torch.no_grad(), pytest.warns(SolverWarning):
        y = net(x)
        coarse = net.inverse(y, steps=2, newton=0)
    with torch.no_grad():
        polished = net.inverse(y, steps=2, newton=4)
    assert float(coarse.residual.max()) > 1e-6
    assert polished.max_residual < 1e-3 * float(coarse.residual.max())


def test_lipschitz_bound_on_random_pairs_in_one_dimension() -> None:
    k = 0.5
    net = _scale_weights(_net(1, Lipschitz(k=k), seed=7, nodes=48), 2.0)
    gen = torch.Generator().manual_seed(8)
    a = 6 * torch.rand(2000, 1, dtype=torch.float64, generator=gen) - 3
    b = a + torch.randn(2000, 1, dtype=torch.float64, generator=gen) * torch.logspace(-3, 0.5, 2000)[:, None]
    with torch.no_grad():
        ratio = (net(a) - net(b)).abs() / (a - b).abs()
        slopes = net.jacobian(a).abs()
    assert float(slopes.max()) < k
    assert float(slopes.max()) > 0.5 * k  # the bound is approached, so the test can fail
    assert float(ratio.max()) <= k


def test_lipschitz_bound_from_the_base_point_in_several_dimensions() -> None:
    k = 1.5
    # true for any fixed rule (positive weights summing to 1), here a coarse one on a sharp field
    net = _scale_weights(_net(3, Lipschitz(k=k), seed=9, nodes=4, quadrature_tol=None), 3.0)
    x = 3 * torch.randn(500, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        ratio = (net(x) - net.y0).norm(dim=-1) / (x - net.x0).norm(dim=-1)
        norms = torch.linalg.matrix_norm(net.jacobian(x), ord=2)
    assert float(norms.max()) <= k and float(ratio.max()) <= k


def test_forward_with_error_matches_forward() -> None:
    net = _net(2, Unconstrained(), nodes=8)
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    est = net.forward_with_error(x)
    info = net.last_quadrature
    assert info is not None and est.nodes == info.nodes >= 8 and info.converged
    torch.testing.assert_close(est.value, net(x), rtol=0, atol=0)
    reference = net.y0 + path_integral(net.jacobian, x, net.x0, nodes=256)
    assert bool(((est.value - reference).norm(dim=-1) <= est.error + 1e-15).all())
    assert bool((est.error <= 1e-6 * (est.value - net.y0).norm(dim=-1).clamp_min(1.0)).all())
    fixed = _net(2, Unconstrained(), nodes=8, quadrature_tol=None).forward_with_error(x)
    assert fixed.nodes == 8 and fixed.max_error > est.max_error


def _sharp_lipschitz(**kw: object) -> JacNet:
    """A Lipschitz(1) JacNet whose weights are scaled up 8x: J(x) = tanh(s) a / s changes on a short scale."""
    return _scale_weights(_net(1, Lipschitz(k=1.0), seed=2, **kw), 8.0)


_SHARP_GRID = torch.linspace(-4, 4, 201, dtype=torch.float64).unsqueeze(-1)


def test_fixed_16_node_rule_breaks_the_lipschitz_bound_on_a_sharp_field() -> None:
    net = _sharp_lipschitz(nodes=16, quadrature_tol=None)
    slope = net.model_jacobian(_SHARP_GRID).detach().abs().max()
    assert float(slope) > 1.05  # |Df| = 1.09 > k: the quadrature error, not the field (|J| < 1 everywhere)
    assert float(net.jacobian(_SHARP_GRID).detach().abs().max()) < 1.0


def test_default_adaptive_rule_keeps_the_lipschitz_bound_to_the_tolerance() -> None:
    net = _sharp_lipschitz()  # the defaults: nodes=16, quadrature_tol=1e-6
    df = net.model_jacobian(_SHARP_GRID).detach()
    assert float(df.abs().max()) <= 1.0 + 1e-6 * max(1.0, float(df.abs().max()))
    # In 1-D the exact Df is the field J: the estimate bounds the gap, and the gap is within the tolerance.
    info = net.last_quadrature
    assert info is not None and info.converged and info.nodes > 16
    gap = (df - net.jacobian(_SHARP_GRID).detach()).abs()[..., 0, 0]
    assert float(gap.max()) <= info.error + 1e-15
    # the values too: within the tolerance of a much finer fixed rule
    fine = _sharp_lipschitz(nodes=1024, quadrature_tol=None)
    with torch.no_grad():
        err = (net(_SHARP_GRID) - fine(_SHARP_GRID)).abs()
    assert float(err.max()) <= 1e-6 * max(1.0, float(fine(_SHARP_GRID).detach().abs().max()))


def test_adaptive_rule_works_inside_torch_func_transforms() -> None:
    net = _net(2, Invertible(eps=0.1), seed=12)
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(13))
    batched = torch.func.vmap(net)(x)
    torch.testing.assert_close(batched, net(x), rtol=1e-12, atol=1e-12)
    jac = torch.func.vmap(torch.func.jacrev(net))(x)
    torch.testing.assert_close(jac, net.model_jacobian(x), rtol=1e-8, atol=1e-8)
    # reverse mode over the whole batch (points refined separately inside the transform)
    full = torch.func.jacrev(net)(x)  # (6, 2, 6, 2): block-diagonal in the points
    torch.testing.assert_close(torch.einsum("aibj->abij", full).diagonal(dim1=0, dim2=1).movedim(-1, 0), jac)


def test_float32_network_with_float64_input_names_both_dtypes() -> None:
    net = JacNet(2, Invertible(), hidden=(4,), generator=torch.Generator().manual_seed(0))  # float32
    x = torch.zeros(3, 2, dtype=torch.float64)
    for call in (net, net.model_jacobian, net.forward_with_error, net.inverse, net.integrability_error):
        with pytest.raises(ShapeMismatchError, match=r"float64.*float32.*net\.to\(torch\.float64\)"):
            call(x)


def test_the_rule_can_be_replaced_for_training() -> None:
    net = _sharp_lipschitz()
    x = _SHARP_GRID[::10]
    adaptive = net(x)
    net.quadrature = AdaptiveQuadrature(nodes=16, tol=None)  # e.g. fast training steps
    torch.testing.assert_close(net(x), net.y0 + path_integral(net.jacobian, x, net.x0, nodes=16), rtol=0, atol=0)
    assert net.nodes == 16 and net.last_quadrature == QuadratureInfo(16, None, None, True, 16 * len(x))
    assert float((net(x) - adaptive).detach().abs().max()) > 1e-3  # the fixed rule is off on this sharp field


def test_same_seed_same_network() -> None:
    x = torch.randn(4, 2, dtype=torch.float64)
    torch.testing.assert_close(_net(2, seed=3)(x), _net(2, seed=3)(x))
    assert not torch.allclose(_net(2, seed=3)(x), _net(2, seed=4)(x))


def test_wrong_input_dimension_raises() -> None:
    net = _net(2, Invertible())
    with pytest.raises(ShapeMismatchError, match=r"x must have shape \(\.\.\., 2\).*dim=2.*\(5, 3\)"):
        net(torch.zeros(5, 3, dtype=torch.float64))
    with pytest.raises(ShapeMismatchError, match="y must have shape"):
        net.inverse(torch.zeros(5, 1, dtype=torch.float64))
    with pytest.raises(ShapeMismatchError, match=r"unsqueeze"):
        _net(1)(torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ShapeMismatchError, match="x0"):
        JacNet(2, x0=torch.zeros(3))


def test_inverse_of_a_non_invertible_jacnet_raises() -> None:
    for structure in (Unconstrained(), Lipschitz(k=1.0), None):
        with pytest.raises(UnsupportedError, match=r"structure=Invertible"):
            _net(2, structure).inverse(torch.zeros(3, 2, dtype=torch.float64))


def test_bad_arguments_raise() -> None:
    with pytest.raises(InvalidArgumentError, match="nodes"):
        JacNet(2, nodes=0)
    with pytest.raises(InvalidArgumentError, match="quadrature_tol"):
        JacNet(2, quadrature_tol=-1.0)
    with pytest.raises(InvalidArgumentError, match="max_nodes"):
        JacNet(2, nodes=32, max_nodes=16)
    with pytest.raises(InvalidArgumentError, match="dim"):
        JacNet(0)
    with pytest.raises(InvalidArgumentError, match="activation"):
        JacNet(2, activation="relu")
    with pytest.raises(InvalidArgumentError, match="hidden"):
        JacNet(2, hidden=())
    with pytest.raises(InvalidArgumentError, match="structure"):
        JacNet(2, "lipschitz")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="k must be"):
        JacNet(2, Lipschitz(k=-1.0))
    net = _net(1, Invertible())
    with pytest.raises(InvalidArgumentError, match="steps"):
        net.inverse(torch.zeros(2, 1, dtype=torch.float64), steps=0)
    with pytest.raises(InvalidArgumentError, match="newton"):
        net.inverse(torch.zeros(2, 1, dtype=torch.float64), newton=-1)
