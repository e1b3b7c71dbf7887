"""The update matrices of games.dynamics are one step of the optimizer kernels, on a random quadratic game.

The game's simultaneous gradient is :math:`\\xi(\\theta) = M\\theta` for a random non-symmetric ``M`` (two
players of two coordinates each; equilibrium 0). From a random augmented state, one step of the kernels, run
out of place (the functional optimizers) and in place (the ``torch.optim`` step functions, for-loop and
``_foreach``), must equal the operator of :mod:`nestopt.games.dynamics` applied to that state. The operators
are used under their current names (``gda``, ``momentum``, ``complex_momentum``, ``extragradient``,
``optimistic``).
"""

from __future__ import annotations

import cmath

import pytest
import torch

from nestopt.games import dynamics
from nestopt.optim import functional
from nestopt.optim.complex_momentum import complex_momentum as complex_momentum_step
from nestopt.optim.heavy_ball import heavy_ball
from nestopt.optim.optimistic import optimistic_sgd

D = 4
BLOCKS = [slice(0, 2), slice(2, 4)]
LR, BETA, ALPHA = 0.15, cmath.rect(0.8, 1.1), cmath.rect(1.0, -0.3)


def _game(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(D, D, generator=g, dtype=torch.float64) + 2 * torch.eye(D, dtype=torch.float64)
    return M, torch.randn(D, generator=g, dtype=torch.float64), torch.randn(2 * D, generator=g, dtype=torch.float64)


def _players(e: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"x": e[BLOCKS[0]].clone(), "y": e[BLOCKS[1]].clone()}


def _grad(M: torch.Tensor, w: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    xi = M @ torch.cat([w["x"], w["y"]])
    return {"x": xi[BLOCKS[0]], "y": xi[BLOCKS[1]]}


def _functional_step(M, opt, w, state, alternating):
    """One step of a functional optimizer for both players (states keyed by player)."""
    if not alternating:
        return opt.update(_grad(M, w), state, w, {})
    for key in ("x", "y"):
        g = _grad(M, w)
        sub, state[key] = opt.update({key: g[key]}, state[key], {key: w[key]}, {})
        w = {**w, **sub}
    return w, state


@pytest.mark.parametrize("alternating", [False, True])
def test_gda(alternating: bool) -> None:
    M, e, _ = _game()
    T = dynamics.gda_operator(M, LR, alternating=alternating, blocks=BLOCKS)
    opt = functional.sgd(LR)
    w, _ = _functional_step(M, opt, _players(e), {"x": {}, "y": {}} if alternating else {}, alternating)
    torch.testing.assert_close(torch.cat([w["x"], w["y"]]), T @ e, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("alternating", [False, True])
@pytest.mark.parametrize("beta", [0.6, -0.4])
def test_momentum(alternating: bool, beta: float) -> None:
    M, e, aux = _game(1)
    mu = aux[:D]
    T = dynamics.momentum_operator(M, LR, beta, alternating=alternating, blocks=BLOCKS)
    expected = T @ torch.cat([e, mu])
    opt = functional.sgd(LR, momentum=beta)
    buf = _players(-mu)  # the operator's mu is minus torch's buffer
    state = {k: ({"momentum_buffer": {k: buf[k]}}, {}) for k in ("x", "y")} if alternating else (
        {"momentum_buffer": buf}, {})  # fmt: skip
    w, state = _functional_step(M, opt, _players(e), state, alternating)
    new_buf = {k: state[k][0]["momentum_buffer"][k] for k in "xy"} if alternating else state[0]["momentum_buffer"]
    got = torch.cat([w["x"], w["y"], -new_buf["x"], -new_buf["y"]])
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-13)
    if not alternating:  # the in-place kernels, for-loop and foreach
        for foreach in (False, True):
            p, b = [e.clone()], [-mu.clone()]
            heavy_ball(p, [M @ e], b, lr=LR, momentum=beta, foreach=foreach)
            torch.testing.assert_close(torch.cat([p[0], -b[0]]), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("alternating", [False, True])
def test_complex_momentum(alternating: bool) -> None:
    M, e, aux = _game(2)
    re, im = aux[:D], aux[D:]
    T = dynamics.complex_momentum_operator(M, LR, BETA, ALPHA, alternating=alternating, blocks=BLOCKS)
    expected = T @ torch.cat([e, re, im])
    opt = functional.complex_momentum(LR, BETA, ALPHA)
    re_t, im_t = _players(re), _players(im)
    if alternating:
        state = {k: ({"momentum_real": {k: re_t[k]}, "momentum_imag": {k: im_t[k]}}, {}) for k in "xy"}
    else:
        state = ({"momentum_real": re_t, "momentum_imag": im_t}, {})
    w, state = _functional_step(M, opt, _players(e), state, alternating)
    parts = [state[k][0] for k in "xy"] if alternating else [state[0], state[0]]
    got = torch.cat([w["x"], w["y"], parts[0]["momentum_real"]["x"], parts[1]["momentum_real"]["y"],
                     parts[0]["momentum_imag"]["x"], parts[1]["momentum_imag"]["y"]])  # fmt: skip
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-13)
    if not alternating:
        for foreach in (False, True):
            p, r, i = [e.clone()], [re.clone()], [im.clone()]
            complex_momentum_step(p, [M @ e], r, i, lr=LR, beta=BETA, alpha=ALPHA, foreach=foreach)
            torch.testing.assert_close(torch.cat([p[0], r[0], i[0]]), expected, rtol=1e-13, atol=1e-13)


def test_extragradient() -> None:
    """Extragradient: the gradient step's kernel twice, the second from the look-ahead point's gradient."""
    M, e, _ = _game(3)
    opt = functional.sgd(LR)
    w = _players(e)
    ahead, _ = opt.update(_grad(M, w), {}, w, {})
    w, _ = opt.update(_grad(M, ahead), {}, w, {})
    torch.testing.assert_close(
        torch.cat([w["x"], w["y"]]), dynamics.extragradient_operator(M, LR) @ e, rtol=1e-13, atol=1e-13
    )


def test_optimistic() -> None:
    M, e, aux = _game(4)
    e_prev = aux[:D]
    expected = (dynamics.optimistic_operator(M, LR) @ torch.cat([e, e_prev]))[:D]
    opt = functional.optimistic_sgd(LR)
    state = ({"step": 1, "previous": _players(M @ e_prev)}, {})
    w, _ = opt.update(_grad(M, _players(e)), state, _players(e), {})
    torch.testing.assert_close(torch.cat([w["x"], w["y"]]), expected, rtol=1e-13, atol=1e-13)
    for foreach in (False, True):
        p = [e.clone()]
        optimistic_sgd(p, [M @ e], [M @ e_prev], lr=LR, foreach=foreach)
        torch.testing.assert_close(p[0], expected, rtol=1e-13, atol=1e-13)
