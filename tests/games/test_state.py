"""The joint state keyed player/name, losses returned with the gradient, and the public-only rule API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from nestopt import games, optim
from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.games import rules, schemes, zoo

D = torch.float64


def _two_tensor_game() -> games.Game:
    g = torch.Generator().manual_seed(0)
    p = [{"a": torch.randn(2, generator=g, dtype=D), "b": torch.randn(3, generator=g, dtype=D)},
         {"c": torch.randn(2, generator=g, dtype=D)}]  # fmt: skip

    def l0(q, _):
        return (q[0]["a"].sin() * q[1]["c"]).sum() + (q[0]["b"] ** 2).sum() * q[1]["c"].sum()

    def l1(q, _):
        return ((q[1]["c"] - q[0]["a"]) ** 2).sum() * q[0]["b"].exp().sum()

    return games.Game(p, [l0, l1], names=["u", "v"])


def test_joint_state_is_the_players_tensors_in_order():
    game = _two_tensor_game()
    assert list(game.state) == ["u/a", "u/b", "v/c"]
    assert game.state["u/b"] is game.params[0]["b"] and game.state["v/c"] is game.params[1]["c"]
    assert game.player_keys(1) == ["v/c"]
    torch.testing.assert_close(game.flatten(), torch.cat([v.reshape(-1) for v in game.state.values()]))
    assert game.split(game.join(game.params))[0]["a"] is game.params[0]["a"]
    torch.testing.assert_close(game.join(game.unflatten(game.flatten())), game.state)
    # every method takes either form
    torch.testing.assert_close(game.flatten(game.xi(game.state)), game.flatten(game.xi(game.params)))


def test_a_game_built_from_a_joint_tree_equals_the_list_form():
    a = _two_tensor_game()
    joint = {k: v.clone() for k, v in a.state.items()}
    b = games.Game(joint, a._losses)
    assert b.names == ["u", "v"] and b.params[0]["b"] is joint["u/b"]
    torch.testing.assert_close(b.jacobian(), a.jacobian())
    eq = games.Game(joint, a._losses, equilibrium=[{"a": torch.zeros(2), "b": torch.zeros(3)}, {"c": torch.ones(2)}])
    assert list(eq.equilibrium) == ["u/a", "u/b", "v/c"]
    assert eq.distance(eq.equilibrium) == 0.0


@pytest.mark.parametrize(
    ("params", "kwargs", "match"),
    [
        ({"nokey": torch.ones(1)}, {}, "player/name"),
        ({"x/x": torch.ones(1), "y/y": torch.ones(1)}, {"names": ["y", "x"]}, "do not match"),
        ([{"x": torch.ones(1)}, {"y": torch.ones(1)}], {"names": ["a/b", "c"]}, "contain no '/'"),
    ],
)
def test_bad_joint_states(params, kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        games.Game(params, lambda p, b: [p[0][next(iter(p[0]))].sum()] * len(p), **kwargs)


def test_split_and_join_check_keys_and_shapes():
    game = _two_tensor_game()
    with pytest.raises(ShapeMismatchError, match="only in the game state"):
        game.split({"u/a": torch.zeros(2)})
    with pytest.raises(ShapeMismatchError, match="keys"):
        game.join([{"a": torch.zeros(2)}, {"c": torch.zeros(2)}])
    with pytest.raises(InvalidArgumentError, match="player must be in"):
        game.player_keys(2)


def test_value_and_xi_returns_losses_and_a_joint_gradient():
    game = _two_tensor_game()
    losses, xi = game.value_and_xi()
    torch.testing.assert_close(torch.stack(losses), torch.stack(game.losses()))
    assert list(xi) == list(game.state)
    torch.testing.assert_close(game.flatten(xi), game.flatten(game.xi()))
    calls = []
    counting = games.Game([{"x": torch.ones(1)}, {"y": torch.full((1,), 2.0)}],
                          [lambda p, b: calls.append(0) or (p[0]["x"] * p[1]["y"]).sum(),
                           lambda p, b: calls.append(1) or (p[0]["x"] - p[1]["y"]).pow(2).sum()])  # fmt: skip
    assert list(counting.state) == ["player0/x", "player1/y"]
    (loss,), xi = counting.value_and_xi(players=[1])
    assert calls == [1] and float(loss) == 1.0  # only player 1's loss was evaluated
    assert float(xi["player1/y"]) == 2.0  # d/dy (x - y)^2
    assert float(xi["player0/x"]) == 0.0  # player 0's block (y = 2 if asked) is left at zero
    assert counting.counter.grads == 1


@pytest.mark.parametrize("rule", [None, rules.SGA(), rules.LOLA(0.3)], ids=["xi", "sga", "lola"])
@pytest.mark.parametrize("scheme", ["simultaneous", "alternating"])
def test_steps_return_the_losses_they_saw(scheme, rule):
    game = zoo.mixture(0.6, zoo.spread_spectrum(2, dtype=D), init=1.0)
    opts = [torch.optim.SGD(game.parameters(i), lr=0.1) for i in range(2)]
    before = game.losses()
    got = game.step(opts, scheme=scheme, rule=rule)
    assert float(got[0]) == float(before[0])  # player 0 always sees the starting point
    if scheme == "simultaneous":
        assert float(got[1]) == float(before[1])
    else:  # player 1 saw player 0's new parameters
        assert float(got[1]) != float(before[1])
    assert not hasattr(game, "last_losses")


def test_rule_evaluate_gives_the_direction_and_losses():
    game = _two_tensor_game()
    out = rules.Consensus(0.5).evaluate(game)
    assert isinstance(out, rules.Direction) and list(out.value) == list(game.state)
    torch.testing.assert_close(game.flatten(out.value), game.flatten(rules.Consensus(0.5).direction(game)))
    torch.testing.assert_close(torch.stack(out.losses), torch.stack(game.losses()))


def test_a_rule_with_only_direction_still_drives_the_schemes():
    class Halved:
        def direction(self, game, params=None, batch=None):
            return [{k: 0.5 * v for k, v in t.items()} for t in game.xi(params, batch)]

    a, b = (zoo.bilinear(dim=2, init=1.0, dtype=D) for _ in range(2))
    losses = a.step(torch.optim.SGD(a.parameters(), lr=0.2), rule=Halved())
    b.step(torch.optim.SGD(b.parameters(), lr=0.1))
    torch.testing.assert_close(a.flatten(), b.flatten())
    assert len(losses) == 2


def test_rules_and_schemes_use_only_the_public_api():
    root = Path(games.__file__).parent
    for name in ("rules.py", "schemes.py"):
        text = (root / name).read_text()
        assert not re.search(r"\b(game|lin)\._[a-z]", text), name
    assert "Game" not in vars(schemes) and "Game" not in vars(rules)  # type-checking imports only: no cycle


def test_optimizers_still_step_the_state_in_place():
    game = zoo.dirac_gan(init=1.0, dtype=D)
    state = dict(game.state)
    opt = optim.ComplexMomentum(game.parameters(), lr=0.3, beta=(0.7, 1.0))
    for _ in range(3):
        game.step(opt)
    assert all(game.state[k] is v for k, v in state.items())
    assert float(game.state["generator/theta"]) != 1.0
