"""ICNN: convex along random segments, gradient against autograd and finite differences, non-negativity rule."""

from __future__ import annotations

import pytest
import torch

from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.jacobian import ICNN


def _net(hidden: int | tuple[int, ...], activation: str = "softplus", seed: int = 0) -> ICNN:
    net = ICNN(2, hidden, activation=activation, generator=torch.Generator().manual_seed(seed)).double()
    with torch.no_grad():  # large weights of both signs where allowed: a hard test of convexity
        for p in net.parameters():
            p.add_(3 * torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(seed + p.numel())))
    return net


@pytest.mark.parametrize("activation", ["softplus", "relu"])
@pytest.mark.parametrize("hidden", [16, (8, 8, 8)])
def test_convex_along_random_segments(activation: str, hidden: int | tuple[int, ...]) -> None:
    net = _net(hidden, activation)
    gen = torch.Generator().manual_seed(1)
    a = 3 * torch.randn(400, 1, 2, dtype=torch.float64, generator=gen)
    b = 3 * torch.randn(400, 1, 2, dtype=torch.float64, generator=gen)
    lam = torch.linspace(0, 1, 21, dtype=torch.float64)[None, :, None]
    with torch.no_grad():
        along = net(lam * a + (1 - lam) * b)  # (400, 21)
        chord = lam[..., 0] * net(a) + (1 - lam[..., 0]) * net(b)
        assert float((along - chord).max()) <= 1e-9 * float(chord.abs().max() + 1)
        # discrete second differences along each segment are non-negative
        second = along[:, 2:] - 2 * along[:, 1:-1] + along[:, :-2]
        assert float(second.min()) >= -1e-9 * float(along.abs().max() + 1)
    # the check has teeth: the concave -psi fails it by far
    assert float((chord - along).max()) > 1e-3


def test_gradient_matches_autograd_and_finite_differences() -> None:
    net = _net((6, 6), seed=2)
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3), requires_grad=True)
    g = net.gradient(x)
    (expected,) = torch.autograd.grad(net(x).sum(), x)
    torch.testing.assert_close(g, expected)
    h = 1e-6
    fd = torch.stack([(net(x + h * e) - net(x - h * e)) / (2 * h) for e in torch.eye(2, dtype=torch.float64)], -1)
    torch.testing.assert_close(g.detach(), fd.detach(), rtol=1e-6, atol=1e-7)
    assert g.shape == x.shape and net.gradient(x[0]).shape == (2,)


def test_gradient_is_monotone_on_random_pairs() -> None:
    net = _net(12, seed=4)
    gen = torch.Generator().manual_seed(5)
    a, b = 3 * torch.randn(500, 2, dtype=torch.float64, generator=gen), 3 * torch.randn(500, 2, dtype=torch.float64)
    assert float(((net.gradient(a) - net.gradient(b)) * (a - b)).sum(-1).min().detach()) >= -1e-10


def test_nonnegativity_survives_training_steps() -> None:
    net = _net((8, 8), seed=6)
    opt = torch.optim.SGD(net.parameters(), lr=10.0)
    x = torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    for _ in range(5):  # large steps that decrease psi: they push the constrained weights towards negative values
        opt.zero_grad()
        net(x).sum().backward()
        opt.step()
    assert min(float(u.detach().min()) for u in net.raw_weights) < -5  # the unconstrained parameters did go negative
    assert all(bool((w >= 0).all()) for w in net.nonnegative_weights())
    points = 2 * torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    hess = torch.func.vmap(torch.func.hessian(net))(points).detach()
    assert bool(torch.isfinite(hess).all())
    assert float(torch.linalg.eigvalsh(hess).min()) >= -1e-8


def test_parameter_count_of_one_layer() -> None:
    assert sum(p.numel() for p in ICNN(2, 24).parameters()) == 24 * (2 + 2) + 2 + 1


def test_bad_input_raises() -> None:
    with pytest.raises(InvalidArgumentError, match="activation"):
        ICNN(2, activation="tanh")  # tanh is neither convex nor suitable
    with pytest.raises(ShapeMismatchError, match=r"x must have shape \(\.\.\., 2\)"):
        ICNN(2)(torch.zeros(4, 3))
    with pytest.raises(InvalidArgumentError, match="hidden"):
        ICNN(2, hidden=[])


def test_float32_network_with_float64_input_names_both_dtypes() -> None:
    net = ICNN(2, 4, generator=torch.Generator().manual_seed(0))  # float32
    for call in (net, net.gradient):
        with pytest.raises(ShapeMismatchError, match=r"float64.*float32.*net\.to\(torch\.float64\)"):
            call(torch.zeros(3, 2, dtype=torch.float64))
