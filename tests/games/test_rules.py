"""Game-aware rules against dense Hessian formulas, finite differences, and their known behaviour."""

from __future__ import annotations

import pytest
import torch

from nestopt import games
from nestopt.errors import InvalidArgumentError, UnsupportedError
from nestopt.games import rules, zoo
from tests.games.conftest import first_order_only_game


def _three_player_game() -> games.Game:
    g = torch.Generator().manual_seed(5)
    p = [{"a": torch.randn(2, generator=g, dtype=torch.float64)}, {"b": torch.randn(3, generator=g, dtype=torch.float64)},
         {"c": torch.randn(2, generator=g, dtype=torch.float64)}]  # fmt: skip

    def l0(q, _):
        return (q[0]["a"].sin() * q[2]["c"]).sum() * q[1]["b"].sum() + (q[0]["a"] ** 2).sum()

    def l1(q, _):
        return (q[1]["b"] * q[0]["a"].sum()).tanh().sum() + (q[1]["b"] ** 2 * q[2]["c"].sum()).sum()

    def l2(q, _):
        return ((q[2]["c"] - q[0]["a"]) ** 2).sum() * q[1]["b"].exp().sum()

    return games.Game(p, [l0, l1, l2])


def _dense(game: games.Game):
    """Full gradients and Hessians of every loss over the flat vector (torch.autograd.functional)."""
    vec = game.flatten()

    def loss_i(i):
        return lambda v: game._losses[i](game.unflatten(v), None)

    grads = [torch.autograd.functional.jacobian(loss_i(i), vec) for i in range(game.n_players)]
    hess = [torch.autograd.functional.hessian(loss_i(i), vec) for i in range(game.n_players)]
    sl = game.slices
    xi = torch.cat([grads[i][sl[i]] for i in range(game.n_players)])
    jac = torch.cat([hess[i][sl[i], :] for i in range(game.n_players)])
    ho_xi = torch.zeros_like(xi)
    chi = torch.zeros_like(xi)
    for i in range(game.n_players):
        for j in range(game.n_players):
            if i != j:
                ho_xi[sl[i]] += hess[i][sl[i], sl[j]] @ xi[sl[j]]
                chi[sl[i]] += hess[j][sl[j], sl[i]].T @ grads[i][sl[j]]
    return xi, jac, ho_xi, chi


def test_consensus_matches_dense_formula() -> None:
    game = _three_player_game()
    xi, jac, _, _ = _dense(game)
    got = game.flatten(rules.Consensus(gamma=0.3).direction(game))
    torch.testing.assert_close(got, xi + 0.3 * jac.T @ xi)


@pytest.mark.parametrize("align", [False, True])
def test_sga_matches_dense_formula(align: bool) -> None:
    game = _three_player_game()
    xi, jac, _, _ = _dense(game)
    at_xi = 0.5 * (jac.T - jac) @ xi
    sign = 1.0
    if align:
        grad_h = jac.T @ xi
        sign = 1.0 if float((xi @ grad_h) * (at_xi @ grad_h) / xi.numel() + 0.1) >= 0 else -1.0
    rule = rules.SGA(lam=0.7, align=align)
    torch.testing.assert_close(game.flatten(rule.direction(game)), xi + sign * 0.7 * at_xi)
    assert rule.last_sign == sign


def test_sga_sign_rule_flips_near_an_unstable_fixed_point() -> None:
    # L1 = -x^2/2 + x y, L2 = -y^2/2 - x y: J = [[-1, 1], [-1, -1]]; the fixed point 0 repels GDA.
    game = games.Game(
        [{"x": torch.tensor(3.0, dtype=torch.float64)}, {"y": torch.tensor(-2.0, dtype=torch.float64)}],
        [lambda p, _: -0.5 * p[0]["x"] ** 2 + p[0]["x"] * p[1]["y"],
         lambda p, _: -0.5 * p[1]["y"] ** 2 - p[0]["x"] * p[1]["y"]],
    )  # fmt: skip
    rule = rules.SGA(lam=1.0)
    rule.direction(game)
    assert rule.last_sign == -1.0  # <xi, grad H> = xi^T J^T xi < 0 at a repelling point


def test_lookahead_lola_sos_match_dense_formulas() -> None:
    game = _three_player_game()
    xi, _, ho_xi, chi = _dense(game)
    alpha = 0.4
    torch.testing.assert_close(game.flatten(rules.LookAhead(alpha).direction(game)), xi - alpha * ho_xi)
    torch.testing.assert_close(game.flatten(rules.LOLA(alpha).direction(game)), xi - alpha * ho_xi - alpha * chi)
    sos = rules.SOS(alpha)
    got = game.flatten(sos.direction(game))
    xi0 = xi - alpha * ho_xi
    inner = float((-alpha * chi) @ xi0)
    p1 = 1.0 if inner >= 0 else min(1.0, -0.5 * float(xi0 @ xi0) / inner)
    p2 = float(xi @ xi) if float(xi.norm()) < 0.1 else 1.0
    assert sos.last_p == pytest.approx(min(p1, p2))
    torch.testing.assert_close(got, xi0 - min(p1, p2) * alpha * chi)


def test_exact_lola_matches_finite_differences_of_the_lookahead_loss() -> None:
    game = zoo.ipd(generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    alpha, eps = 0.8, 1e-6
    got = rules.LOLA(alpha, taylor=False).direction(game)[0]["logits"]

    def shaped(theta1: torch.Tensor) -> torch.Tensor:
        params = [{"logits": theta1}, {"logits": game.params[1]["logits"]}]
        theta2 = game.params[1]["logits"] - alpha * game.player_grad(1, params)["logits"]
        return game.losses([{"logits": theta1}, {"logits": theta2}])[0]

    theta1 = game.params[0]["logits"]
    fd = torch.stack([(shaped(theta1 + eps * e) - shaped(theta1 - eps * e)) / (2 * eps)
                      for e in torch.eye(5, dtype=torch.float64)])  # fmt: skip
    torch.testing.assert_close(got, fd, rtol=1e-5, atol=1e-7)


def test_taylor_lola_approaches_exact_lola_for_small_alpha() -> None:
    game = zoo.ipd(generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    gaps = []
    for alpha in (1e-2, 1e-3):
        a = game.flatten(rules.LOLA(alpha).direction(game))
        b = game.flatten(rules.LOLA(alpha, taylor=False).direction(game))
        gaps.append(float((a - b).norm()))
    assert gaps[1] < gaps[0] / 50  # second order in alpha


def _run(game, rule, lr, steps):
    opt = torch.optim.SGD(game.parameters(), lr=lr)
    for _ in range(steps):
        game.step(opt, rule=rule)
    return game


@pytest.mark.parametrize("rule", [rules.Consensus(1.0), rules.SGA(1.0), rules.SOS(0.5), rules.LOLA(0.5)])
def test_rules_converge_on_bilinear_where_gda_diverges(rule) -> None:
    game = _run(zoo.bilinear(dim=2, init=1.0, dtype=torch.float64), rule, 0.2, 300)
    assert game.distance() < 1e-3
    gda = _run(zoo.bilinear(dim=2, init=1.0, dtype=torch.float64), None, 0.2, 300)
    assert gda.distance() > 2.0


def test_tandem_lola_leaves_the_fixed_line_and_sos_does_not() -> None:
    # LOLA's fixed points satisfy x + y = (1 - 2 alpha) / (1 - 4 alpha) = 4/3 for alpha = 0.1
    lola = _run(zoo.tandem(init=0.0, dtype=torch.float64), rules.LOLA(0.1), 0.1, 500)
    sos = _run(zoo.tandem(init=0.0, dtype=torch.float64), rules.SOS(0.1), 0.1, 500)
    sums = [float(g.params[0]["x"] + g.params[1]["y"]) for g in (lola, sos)]
    assert sums[0] == pytest.approx(4 / 3, abs=1e-6)
    assert sums[1] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize(
    ("rule", "name"),
    [(rules.Consensus(), "Consensus optimization"), (rules.SGA(), "SGA"), (rules.LookAhead(), "LookAhead"),
     (rules.LOLA(), "LOLA"), (rules.LOLA(taylor=False), "LOLA"), (rules.SOS(), "SOS")],
)  # fmt: skip
def test_rules_refuse_games_without_second_derivatives(rule, name) -> None:
    game = first_order_only_game()
    game.xi()  # first order is fine
    with pytest.raises(UnsupportedError, match=f"{name} needs second derivatives"):
        rule.direction(game)


@pytest.mark.parametrize(
    "make",
    [lambda: rules.Consensus(float("nan")), lambda: rules.SGA(0.0), lambda: rules.LOLA(-1.0),
     lambda: rules.SOS(a=1.5), lambda: rules.LookAhead("1")],
)  # fmt: skip
def test_rule_arguments(make) -> None:
    with pytest.raises(InvalidArgumentError):
        make()
