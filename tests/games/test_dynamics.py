"""Augmented operators against closed forms, single optimizer steps, and measured rates."""

from __future__ import annotations

import cmath
import math

import numpy as np
import pytest
import torch

from nestopt import optim
from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.games import dynamics, zoo

SIGMA = torch.linspace(0.25, 4, 7, dtype=torch.float64)


def _spread_game(init=None):
    return zoo.bilinear(torch.diag(SIGMA), init=init, generator=torch.Generator().manual_seed(0))


def test_gda_radius_closed_forms() -> None:
    game = _spread_game()
    M = dynamics.jacobian_matrix(game)
    lrs = torch.tensor([0.01, 0.1, 0.3])
    sim = dynamics.spectral_radius(dynamics.gda_operator(M, lrs))
    torch.testing.assert_close(sim, torch.sqrt(1 + lrs.double() ** 2 * SIGMA.max() ** 2))
    # alternating GDA on a bilinear game preserves a quadratic form: |lambda| = 1 while lr * sigma < 2
    alt = dynamics.spectral_radius(dynamics.gda_operator(M, lrs, alternating=True, blocks=game.slices))
    torch.testing.assert_close(alt, torch.ones(3, dtype=torch.float64))


def test_extragradient_and_optimistic_closed_forms() -> None:
    M = dynamics.jacobian_matrix(_spread_game())
    lr = 0.2
    eg = float(dynamics.spectral_radius(dynamics.extragradient_operator(M, lr)))
    assert eg == pytest.approx(max(abs(1 - lr * 1j * s + (lr * 1j * s) ** 2) for s in SIGMA.tolist()))
    # optimistic: z^2 - (1 - 2 lr lam) z - lr lam = 0 for every eigenvalue lam = +-i sigma of M
    roots = [
        abs(r)
        for s in SIGMA.tolist()
        for lam in (1j * s, -1j * s)
        for r in np.roots([1, -(1 - 2 * lr * lam), -lr * lam])
    ]
    og = float(dynamics.spectral_radius(dynamics.optimistic_operator(M, lr)))
    assert og == pytest.approx(max(roots))


def test_heavy_ball_closed_form() -> None:
    M = dynamics.jacobian_matrix(_spread_game())
    lr, beta = 0.1, -0.3
    # mu' = beta mu - lam e, e' = e + lr mu': z^2 - (1 + beta - lr lam) z + beta = 0
    roots = [abs(r) for s in SIGMA.tolist() for lam in (1j * s, -1j * s)
             for r in np.roots([1, -(1 + beta - lr * lam), beta])]  # fmt: skip
    assert float(dynamics.spectral_radius(dynamics.momentum_operator(M, lr, beta))) == pytest.approx(max(roots))


def _state_after_one_step(make, scheme, kind):
    """Run one real optimizer step from a random augmented state and return (state before, after)."""
    g = torch.Generator().manual_seed(7)
    game = zoo.mixture(0.7, torch.diag(SIGMA[:3]), init=None, generator=g)
    d = game.numel
    opts = make(game)
    # one warm-up step fills the buffers with something non-trivial
    game.step(opts, scheme=scheme)

    def state():
        e = game.flatten()
        if kind == "complex":
            re = torch.cat([o.state[p]["momentum_real"].reshape(-1) for o in opts for p in o.param_groups[0]["params"]])
            im = torch.cat([o.state[p]["momentum_imag"].reshape(-1) for o in opts for p in o.param_groups[0]["params"]])
            return torch.cat([e, re, im])
        if kind == "heavy":
            buf = torch.cat(
                [o.state[p]["momentum_buffer"].reshape(-1) for o in opts for p in o.param_groups[0]["params"]]
            )
            return torch.cat([e, -buf])  # the operator's mu is minus torch's buffer
        return e

    before = state()
    game.step(opts, scheme=scheme)
    return game, before, state(), d


@pytest.mark.parametrize("scheme", ["simultaneous", "alternating"])
def test_complex_momentum_operator_is_one_optimizer_step(scheme: str) -> None:
    lr, beta, alpha = 0.07, cmath.rect(0.8, 1.1), cmath.rect(1.0, -0.3)

    def make(game):
        return [optim.ComplexMomentum(game.parameters(i), lr=lr, beta=beta, alpha=alpha) for i in range(2)]

    game, before, after, _ = _state_after_one_step(make, scheme, "complex")
    T = dynamics.complex_momentum_operator(dynamics.jacobian_matrix(game), lr, beta, alpha, alternating=scheme == "alternating",
                                  blocks=game.slices)  # fmt: skip
    torch.testing.assert_close(T @ before, after, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scheme", ["simultaneous", "alternating"])
def test_heavy_ball_operator_is_one_optimizer_step(scheme: str) -> None:
    def make(game):
        return [optim.HeavyBall(game.parameters(i), lr=0.05, momentum=-0.4) for i in range(2)]

    game, before, after, _ = _state_after_one_step(make, scheme, "heavy")
    T = dynamics.momentum_operator(
        dynamics.jacobian_matrix(game), 0.05, -0.4, alternating=scheme == "alternating", blocks=game.slices
    )
    torch.testing.assert_close(T @ before, after, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scheme", ["simultaneous", "alternating"])
def test_gda_and_extragradient_operators_are_one_step(scheme: str) -> None:
    game, before, after, _ = _state_after_one_step(
        lambda g: [torch.optim.SGD(g.parameters(i), lr=0.1) for i in range(2)], scheme, "plain"
    )
    M = dynamics.jacobian_matrix(game)
    T = dynamics.gda_operator(M, 0.1, alternating=scheme == "alternating", blocks=game.slices)
    torch.testing.assert_close(T @ before, after, rtol=1e-12, atol=1e-12)
    if scheme == "simultaneous":
        game, before, after, _ = _state_after_one_step(
            lambda g: [optim.ExtraGradient(torch.optim.SGD(g.parameters(), lr=0.1))], scheme, "plain"
        )
        torch.testing.assert_close(dynamics.extragradient_operator(M, 0.1) @ before, after, rtol=1e-12, atol=1e-12)


def test_optimistic_operator_is_one_step() -> None:
    game = zoo.mixture(0.7, torch.diag(SIGMA[:3]), init=None, generator=torch.Generator().manual_seed(1))
    opt = optim.OptimisticSGD(game.parameters(), lr=0.1)
    game.step(opt)
    prev = game.flatten()
    game.step(opt)
    cur = game.flatten()
    game.step(opt)
    T = dynamics.optimistic_operator(dynamics.jacobian_matrix(game), 0.1)
    torch.testing.assert_close((T @ torch.cat([cur, prev]))[: game.numel], game.flatten(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scheme", ["simultaneous", "alternating"])
def test_predicted_rate_matches_measured(scheme: str) -> None:
    game = zoo.bilinear(
        torch.diag(torch.tensor([1.0, 2.0], dtype=torch.float64)), init=None, generator=torch.Generator().manual_seed(0)
    )
    M = dynamics.jacobian_matrix(game)
    alternating = scheme == "alternating"
    phase = math.pi / 2 if alternating else 1.0
    res = dynamics.search(
        lambda lr, mag: dynamics.complex_momentum_operator(M, lr, torch.polar(mag, torch.full_like(mag, phase)),
                                                  alternating=alternating, blocks=game.slices),
        {"lr": torch.logspace(-2, 0, 15), "mag": torch.linspace(0.0, 0.95, 15)},
    )  # fmt: skip
    assert res.rate < 0.99
    beta = cmath.rect(res.best["mag"], phase)
    opts = [optim.ComplexMomentum(game.parameters(i), lr=res.best["lr"], beta=beta) for i in range(2)]
    steps = int(math.log(1e-10) / math.log(res.rate))
    measured = dynamics.measure_rate(game, opts, steps=steps, scheme=scheme)
    assert measured.rate == pytest.approx(res.rate, abs=5e-3)


def test_search_finds_the_extragradient_optimum() -> None:
    M = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    res = dynamics.search(
        lambda lr: dynamics.extragradient_operator(M, lr), {"lr": torch.linspace(0.05, 1.5, 20)}, refine=3
    )
    # |1 - lr^2 - i lr|^2 = 1 - lr^2 + lr^4 is smallest at lr = 1/sqrt(2), rate sqrt(3)/2
    assert res.best["lr"] == pytest.approx(2**-0.5, abs=1e-3)
    assert res.rate == pytest.approx(3**0.5 / 2, abs=1e-6)


def test_fit_rate_on_geometric_sequences() -> None:
    t = torch.arange(200, dtype=torch.float64)
    assert dynamics.fit_rate(0.9**t * (1.5 + torch.cos(0.7 * t))) == pytest.approx(0.9, abs=2e-3)
    assert dynamics.fit_rate(1.02**t) == pytest.approx(1.02, abs=1e-9)


def test_dynamics_errors() -> None:
    M = torch.zeros(4, 4, dtype=torch.float64)
    with pytest.raises(InvalidArgumentError, match="blocks"):
        dynamics.gda_operator(M, 0.1, alternating=True)
    with pytest.raises(InvalidArgumentError, match="cover"):
        dynamics.gda_operator(M, 0.1, alternating=True, blocks=[slice(0, 2)])
    with pytest.raises(ShapeMismatchError):
        dynamics.gda_operator(torch.zeros(2, 3), 0.1)
    with pytest.raises(InvalidArgumentError, match="real beta"):
        dynamics.momentum_operator(M, 0.1, 0.5j)
    with pytest.raises(InvalidArgumentError, match="lr"):
        dynamics.gda_operator(M, float("nan"))
    with pytest.raises(InvalidArgumentError, match="at least 4"):
        dynamics.fit_rate([1.0, 0.5])


def test_fit_rate_skips_distances_that_underflow_between_non_zero_values() -> None:
    # regression: a fast run whose distance underflows to exactly 0 between non-zero values gave NaN
    distances = [1, 0.5, 0.25, 0.125, 0, 0.03, 0, 0.01]
    rate = dynamics.fit_rate(distances)
    assert math.isfinite(rate)
    # least squares of log d against the step over the non-zero distances after burn-in (steps 3, 5, 7)
    slope = np.polyfit([3.0, 5.0, 7.0], np.log([0.125, 0.03, 0.01]), 1)[0]
    assert rate == pytest.approx(math.exp(slope), rel=1e-12)
    # a run that underflows for good keeps the fit of what came before
    assert dynamics.fit_rate([0.5**t for t in range(20)] + [0.0] * 3) == pytest.approx(0.5, rel=1e-12)
    with pytest.raises(InvalidArgumentError, match="too few distances above the floor"):
        dynamics.fit_rate([1.0, 0.5, 0.0, 0.0, 0.0, 0.0])


def test_old_dynamics_names_are_deprecated_aliases() -> None:
    game = _spread_game(init=1.0)
    M = dynamics.jacobian_matrix(game)
    pairs = [
        (lambda: dynamics.linearize(game), lambda: M),
        (lambda: dynamics.gda(M, 0.1), lambda: dynamics.gda_operator(M, 0.1)),
        (lambda: dynamics.extragradient(M, 0.1), lambda: dynamics.extragradient_operator(M, 0.1)),
        (lambda: dynamics.optimistic(M, 0.1), lambda: dynamics.optimistic_operator(M, 0.1)),
        (lambda: dynamics.momentum(M, 0.1, -0.3), lambda: dynamics.momentum_operator(M, 0.1, -0.3)),
        (lambda: dynamics.complex_momentum(M, 0.1, 0.5j), lambda: dynamics.complex_momentum_operator(M, 0.1, 0.5j)),
    ]
    for old, new in pairs:
        with pytest.warns(DeprecationWarning, match="deprecated; use dynamics"):
            got = old()
        torch.testing.assert_close(got, new(), rtol=0, atol=0)
    assert "gda" not in dynamics.__all__ and "gda_operator" in dynamics.__all__
