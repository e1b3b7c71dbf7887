"""Finite-time Lyapunov exponents against closed forms (linear maps), finite differences (their gradient), the
rules they mirror (look-ahead, LOLA), and the errors for games whose Jacobian cannot be formed."""

from __future__ import annotations

import math

import pytest
import torch

from nestopt.errors import NestoptError, UnsupportedError
from nestopt.games import LOLA, SGA, Game, LookAhead, zoo
from nestopt.games.diversity import LearningMap, find_bifurcation, lyapunov
from tests.games.conftest import first_order_only_game

F64 = torch.float64


def _linear_game(seed: int = 0) -> tuple[Game, torch.Tensor]:
    """A game with constant Jacobian: the cooperative/adversarial mixture on a random well-conditioned A."""
    g = torch.Generator().manual_seed(seed)
    A = torch.diag(torch.tensor([0.5, 1.0, 2.0], dtype=F64)) + 0.2 * torch.randn(3, 3, generator=g, dtype=F64)
    game = zoo.mixture(0.6, A, init=None, generator=g, dtype=F64)
    return game, game.jacobian()


def test_the_exponent_of_a_bilinear_map_is_the_log_of_its_spectral_radius() -> None:
    game = zoo.bilinear(zoo.spread_spectrum(4, 0.5, 2.0, dtype=F64), init=1.0)
    lr = 0.1
    res = lyapunov(game, steps=30, lr=lr, k=1)
    # I - lr J has eigenvalues 1 -+ i lr sigma_k: a rotation-dilation, every tangent grows at the same rate
    radius = float(torch.linalg.eigvals(torch.eye(8, dtype=F64) - lr * game.jacobian()).abs().max())
    assert float(res.exponent) == pytest.approx(0.5 * math.log(1 + (lr * 2.0) ** 2), abs=0.02)
    assert radius == pytest.approx(math.sqrt(1 + (lr * 2.0) ** 2), rel=1e-12)


def test_the_spectrum_of_a_linear_map_matches_its_eigenvalues_and_singular_value_growth() -> None:
    game, J = _linear_game()
    lr, steps = 0.3, 400
    A = torch.eye(6, dtype=F64) - lr * J
    res = lyapunov(game, steps=steps, lr=lr, k=6)
    moduli = torch.linalg.eigvals(A).abs().log().sort(descending=True).values
    growth = torch.linalg.svdvals(torch.linalg.matrix_power(A, steps)).log() / steps
    assert torch.allclose(res.exponents, moduli, atol=0.02)
    assert torch.allclose(res.exponents, growth, atol=0.02)
    assert float(res.exponents.sum()) == pytest.approx(float(torch.linalg.slogdet(A)[1]), abs=1e-10)
    assert float(res.exponent) == pytest.approx(float(moduli[0]), abs=0.02)  # log of the spectral radius


def test_the_gradient_of_the_exponent_matches_finite_differences() -> None:
    game = zoo.ipd(0.96, init=None, generator=torch.Generator().manual_seed(3), dtype=F64)
    x0 = {k: 0.5 * v.detach() for k, v in game.state.items()}
    tangent = torch.ones(10, dtype=F64)

    def value(x: dict[str, torch.Tensor]) -> torch.Tensor:
        return lyapunov(game, x, steps=15, lr=1.0, tangents=tangent).exponent

    x = {k: v.clone().requires_grad_(True) for k, v in x0.items()}
    grads = torch.autograd.grad(value(x), list(x.values()))
    eps = 1e-6
    for key, g in zip(x0, grads):
        for i in (0, 2, 4):
            plus = {k: w.clone() for k, w in x0.items()}
            minus = {k: w.clone() for k, w in x0.items()}
            plus[key][i] += eps
            minus[key][i] -= eps
            fd = (value(plus) - value(minus)) / (2 * eps)
            assert float(g[i]) == pytest.approx(float(fd), rel=1e-5, abs=1e-8)


def test_copies_advance_independently() -> None:
    starts = torch.tensor([[-1.0, 1.5], [0.2, 0.9], [2.0, -3.0]], dtype=F64)
    batched = zoo.small_ipd(0.6, init=[starts[:, 0], starts[:, 1]], batch_shape=(3,), dtype=F64)
    tangent = torch.tensor([0.6, 0.8], dtype=F64)
    res = lyapunov(batched, steps=25, lr=1.0, copies=True, tangents=tangent)
    assert res.exponents.shape == (3, 1)
    for i in range(3):
        single = zoo.small_ipd(0.6, init=[starts[i, 0], starts[i, 1]], dtype=F64)
        alone = lyapunov(single, steps=25, lr=1.0, tangents=tangent)
        assert float(res.exponent[i]) == pytest.approx(float(alone.exponent), abs=1e-12)


@pytest.mark.parametrize("rule", [LookAhead(0.7), LOLA(0.7)])
def test_the_differentiable_directions_equal_the_rules(rule: LookAhead) -> None:
    game = zoo.ipd(0.96, init=None, generator=torch.Generator().manual_seed(5), dtype=F64)
    point = {k: v.detach().clone().requires_grad_(True) for k, v in game.state.items()}
    mine = LearningMap(game, 1.0, rule).direction(point)
    theirs = rule.evaluate(game).value
    for k in theirs:
        assert torch.allclose(mine[k].detach(), theirs[k], atol=1e-12)


def test_lola_dynamics_have_their_own_exponent() -> None:
    game = zoo.ipd(0.96, init=0.0, dtype=F64)
    naive = lyapunov(game, steps=10, lr=1.0)
    lola = lyapunov(game, steps=10, lr=1.0, rule=LOLA(1.0))
    assert torch.isfinite(lola.exponent) and float(lola.exponent) != pytest.approx(float(naive.exponent))
    assert lola.hvps > naive.hvps


def test_find_bifurcation_climbs_to_the_basin_boundary_of_the_small_ipd() -> None:
    gamma = 0.6
    saddle = math.log((1 - gamma) / (2 * gamma - 1))  # logit of p = (1 - gamma) / gamma
    game = zoo.small_ipd(gamma, init=0.0, dtype=F64)
    res = find_bifurcation(game, steps=25, lr=0.1, horizon=40, map_lr=1.0, tangents=torch.ones(2, dtype=F64))
    assert res.exponent > res.start_exponent + 0.01

    # next to the boundary (the anti-diagonal through the saddle): half a unit either way along (1, 1)
    # lands in different basins of naive learning, while the start's neighbourhood does not
    def outcome(point: dict[str, torch.Tensor], shift: float) -> bool:
        game.copy_({k: v + shift for k, v in point.items()})
        opt = torch.optim.SGD(game.parameters(), lr=1.0)
        for _ in range(300):
            game.step(opt)
        return bool(torch.sigmoid(game.params[0]["logit"]) > 0.5)  # tit-for-tat rather than defection

    assert outcome(res.params, 0.5) and not outcome(res.params, -0.5)
    origin = {k: torch.zeros_like(v) for k, v in res.params.items()}
    assert not outcome(origin, 0.5) and not outcome(origin, -0.5)
    assert abs(sum(float(v) for v in res.params.values()) - 2 * saddle) < abs(2 * saddle)
    assert len(res.path) == res.iterations + 1 and len(res.history) == res.iterations + 1
    assert not torch.equal(res.path[0]["agent1/logit"], res.path[-1]["agent1/logit"])


def test_a_game_whose_jacobian_cannot_be_formed_raises() -> None:
    with pytest.raises(UnsupportedError, match="second derivatives"):
        lyapunov(first_order_only_game(), steps=3)
    const = Game([{"x": torch.ones(1, dtype=F64)}, {"y": torch.ones(1, dtype=F64)}],
                 [lambda p, b: torch.tensor(1.0, dtype=F64)] * 2, names=["x", "y"])  # fmt: skip
    with pytest.raises(NestoptError, match="no player's gradient depends"):
        lyapunov(const, steps=3)
    with pytest.raises(UnsupportedError, match="SGA"):
        lyapunov(zoo.bilinear(dim=1, init=1.0, dtype=F64), rule=SGA())
