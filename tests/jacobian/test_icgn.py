"""ICGN: the single-layer network is an exact convex gradient (closed form, symmetric PSD Jacobian); deeper
variants are checked, and their asymmetry is reported."""

from __future__ import annotations

import pytest
import torch

from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.jacobian import ICGN

_SIGMOID = torch.sigmoid


def _phi_prime(activation: str, u: torch.Tensor) -> torch.Tensor:
    """Antiderivative of sigma'(u)^2: the derivative of the ridge profile phi with phi'' = sigma'^2."""
    if activation == "sigmoid":
        s = _SIGMOID(u)
        return s**2 / 2 - s**3 / 3
    if activation == "tanh":
        t = torch.tanh(u)
        return t - t**3 / 3
    return torch.nn.functional.softplus(u) - _SIGMOID(u)


def _net(hidden: int | tuple[int, ...], activation: str = "sigmoid", seed: int = 0, **kw: object) -> ICGN:
    net = ICGN(3, hidden, activation=activation, generator=torch.Generator().manual_seed(seed), **kw)  # type: ignore[arg-type]
    net = net.double()
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.mul_(2.0)  # stronger non-linearity than the default initialisation
        if net.offset is not None:
            net.offset.normal_(generator=torch.Generator().manual_seed(seed + 1))
    return net


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "softplus"])
def test_single_layer_matches_the_closed_form_gradient(activation: str) -> None:
    net = _net(12, activation, nodes=64)
    layer = net.layers[0]
    x = 2 * torch.randn(9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = net.offset + (_phi_prime(activation, layer(x)) - _phi_prime(activation, layer.bias)) @ layer.weight
    torch.testing.assert_close(net(x), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "softplus"])
def test_single_layer_jacobian_is_symmetric_psd_at_random_points(activation: str) -> None:
    net = _net(8, activation, seed=2, nodes=64)
    assert net.exact
    x = 2 * torch.randn(30, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    jac = torch.func.vmap(torch.func.jacrev(lambda p: net(p.unsqueeze(0))[0]))(x).detach()  # reverse mode
    torch.testing.assert_close(jac, jac.mT, rtol=0, atol=1e-12)
    assert float(torch.linalg.eigvalsh(jac).min()) >= -1e-10
    # it is the Hessian of the potential, V^T V, up to the quadrature error
    torch.testing.assert_close(jac, net.hessian(x), rtol=1e-7, atol=1e-9)
    check = net.integrability(x)
    assert float(check.asymmetry.max()) < 1e-12 and float(check.min_eigenvalue.min()) >= -1e-10


def test_single_layer_field_is_monotone_on_random_pairs() -> None:
    net = _net(8, "softplus", seed=4)
    gen = torch.Generator().manual_seed(5)
    a, b = 3 * torch.randn(500, 3, dtype=torch.float64, generator=gen), 3 * torch.randn(500, 3, dtype=torch.float64)
    with torch.no_grad():
        assert float(((net(a) - net(b)) * (a - b)).sum(-1).min()) >= -1e-10


def test_deep_variant_reports_its_asymmetry() -> None:
    net = _net((8, 8), "sigmoid", seed=6)
    assert not net.exact
    x = 2 * torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    check = net.integrability(x)
    assert float(check.asymmetry.mean()) > 1e-3  # V^T V need not be integrable: not a gradient field
    # the integrand V^T V is still PSD everywhere
    assert float(torch.linalg.eigvalsh(net.hessian(x).detach()).min()) >= -1e-12
    jac = net.jacobian(x)
    expected = torch.linalg.matrix_norm(jac - jac.mT) / torch.linalg.matrix_norm(jac)
    torch.testing.assert_close(check.asymmetry, expected.detach())


def test_vmap_and_loop_agree_and_offset() -> None:
    a = _net(5, "tanh", seed=8, vectorize="vmap")
    b = _net(5, "tanh", seed=8, vectorize="loop")
    x = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(a(x), b(x), rtol=1e-13, atol=1e-13)
    no_offset = _net(5, offset=False)
    torch.testing.assert_close(
        no_offset(torch.zeros(1, 3, dtype=torch.float64)), torch.zeros(1, 3, dtype=torch.float64)
    )
    assert sum(p.numel() for p in _net(5).parameters()) == 5 * 3 + 5 + 3


def test_gradcheck_in_parameters_and_input() -> None:
    net = _net(4, "sigmoid", seed=9, nodes=3, quadrature_tol=None)  # a fixed rule for finite differences
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    w = net.layers[0].weight
    assert torch.autograd.gradcheck(lambda x, w: torch.func.functional_call(net, {"layers.0.weight": w}, (x,)), (x, w))


def _sharp_tanh_icgn(**kw: object) -> ICGN:
    """A one-layer tanh ICGN with its weights scaled up 4x: sigma'(Wx + b)^2 changes on a short scale."""
    net = ICGN(3, 8, activation="tanh", generator=torch.Generator().manual_seed(1), **kw).double()  # type: ignore[arg-type]
    with torch.no_grad():
        net.layers[0].weight.mul_(4.0)
    return net


_POINTS = 2 * torch.randn(100, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def test_fixed_16_node_rule_gives_a_negative_eigenvalue_on_a_sharp_field() -> None:
    check = _sharp_tanh_icgn(nodes=16, quadrature_tol=None).integrability(_POINTS)
    assert float(check.min_eigenvalue.min()) < -1e-4  # the exact Dg = V^T V is PSD
    assert check.quadrature.nodes == 16 and check.quadrature.tol is None


def test_default_adaptive_rule_keeps_the_jacobian_psd_to_the_tolerance() -> None:
    net = _sharp_tanh_icgn()  # the defaults: nodes=16, quadrature_tol=1e-6
    jac = net.jacobian(_POINTS).detach()
    scale = torch.linalg.matrix_norm(jac).clamp_min(1.0)
    assert bool((torch.linalg.eigvalsh(jac)[..., 0] >= -1e-6 * scale).all())
    # one layer: the exact Dg is the Hessian V^T V in closed form; the estimate bounds the gap
    info = net.last_quadrature
    assert info is not None and info.converged and info.nodes > 16
    gap = torch.linalg.matrix_norm(jac - net.hessian(_POINTS).detach())
    assert float(gap.max()) <= info.error + 1e-15
    assert bool((gap <= 1e-6 * scale).all())
    check = net.integrability(_POINTS)
    assert check.quadrature == info
    assert bool((check.min_eigenvalue >= -1e-6 * scale).all())
    # and the field itself, against the closed-form gradient of the potential
    layer = net.layers[0]
    with torch.no_grad():
        exact = net.offset + (_phi_prime("tanh", layer(_POINTS)) - _phi_prime("tanh", layer.bias)) @ layer.weight
        g = net(_POINTS)
        tolerance = 1e-6 * max(1.0, float((g - net.offset).norm(dim=-1).max()))
    assert float((g - exact).norm(dim=-1).max()) <= tolerance


def test_float32_network_with_float64_input_names_both_dtypes() -> None:
    net = ICGN(2, 4, generator=torch.Generator().manual_seed(0))  # float32
    for call in (net, net.jacobian, net.integrability, net.hessian):
        with pytest.raises(ShapeMismatchError, match=r"float64.*float32.*net\.to\(torch\.float64\)"):
            call(torch.zeros(3, 2, dtype=torch.float64))


def test_bad_input_raises() -> None:
    with pytest.raises(ShapeMismatchError, match=r"x must have shape \(\.\.\., 3\)"):
        _net(4)(torch.zeros(2, 2, dtype=torch.float64))
    with pytest.raises(InvalidArgumentError, match="activation"):
        ICGN(2, activation="relu")
    with pytest.raises(InvalidArgumentError, match="nodes"):
        ICGN(2, nodes=0)
    with pytest.raises(InvalidArgumentError, match="quadrature_tol"):
        ICGN(2, quadrature_tol=0.0)
    with pytest.raises(InvalidArgumentError, match="max_nodes"):
        ICGN(2, max_nodes=0)
    with pytest.raises(InvalidArgumentError, match="hidden"):
        ICGN(2, hidden=(4, 0))
    with pytest.raises(InvalidArgumentError, match="dim"):
        ICGN(-1)
