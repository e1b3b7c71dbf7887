"""Game Ridge Rider: branch directions for real and complex eigenpairs, outcomes on games with known basins,
the restored game state, and the zoo problems built for the diversity searches."""

from __future__ import annotations

import math

import pytest
import torch

from nestopt.errors import InvalidArgumentError, UnsupportedError
from nestopt.games import Game, zoo
from nestopt.games.diversity import branch_directions, find_fixed_point, game_ridge_rider
from tests.games.conftest import first_order_only_game

F64 = torch.float64


def test_complex_eigenvectors_branch_along_the_axes_of_their_ellipse() -> None:
    g = torch.Generator().manual_seed(0)
    M = torch.randn(5, 5, generator=g, dtype=F64)
    vals, vecs = torch.linalg.eig(M)
    i = int(torch.argmax(vals.imag))  # a complex pair
    v = vecs[:, i] * complex(math.cos(1.1), math.sin(1.1))  # any phase of the eigenvector
    dirs = branch_directions(vals[i : i + 1], v[None])
    a, minus_b, minus_a, b = (d[3] for d in dirs)
    assert torch.allclose(minus_a, -a) and torch.allclose(minus_b, -b)
    assert float(a @ b) == pytest.approx(0.0, abs=1e-12)  # the principal axes
    # every direction lies in the real invariant plane of the pair: M maps span(a, b) into itself
    basis = torch.linalg.qr(torch.stack([a, b], dim=1))[0]
    image = M @ basis
    assert torch.allclose(basis @ (basis.T @ image), image, atol=1e-10)
    real = int(torch.argmin(vals.imag.abs()))
    plus, minus = branch_directions(vals[real : real + 1], vecs[:, real][None])
    assert plus[2] == 0.0 and minus[2] == math.pi and torch.allclose(plus[3], -minus[3])


def test_matching_pennies_has_a_purely_imaginary_pair_at_its_equilibrium() -> None:
    game = zoo.matching_pennies(init=0.0, dtype=F64)
    res = game_ridge_rider(game, locate="start", directions=1, steps=5, radius=0.1)
    (lam,) = res.eigenvalues.tolist()
    assert abs(lam.real) < 1e-12 and lam.imag == pytest.approx(0.25, abs=1e-12)
    assert len(res.branches) == 4  # four phases
    for b in res.branches:
        assert float(torch.cat([v.reshape(-1) for v in b.direction.values()]).norm()) == pytest.approx(1.0)


def test_branches_from_the_small_ipd_saddle_reach_both_equilibria_and_the_state_is_restored() -> None:
    gamma = 0.6
    saddle = math.log((1 - gamma) / (2 * gamma - 1))
    game = zoo.small_ipd(gamma, init=0.3, dtype=F64)
    before = {k: v.clone() for k, v in game.state.items()}

    def label(g: Game, p: dict[str, torch.Tensor]) -> str:
        return "tit-for-tat" if float(torch.sigmoid(p["agent1/logit"])) > 0.5 else "defection"

    res = game_ridge_rider(
        game, locate="fixed_point", bifurcation={"lr": 0.05, "tol": 1e-10}, directions=2, steps=300, radius=0.2,
        optimizer=lambda ps: torch.optim.SGD(ps, lr=1.0), label=label, record_every=50,
    )  # fmt: skip
    assert all(float(v) == pytest.approx(saddle, abs=1e-6) for v in res.point.values())
    assert set(res.outcomes) == {"tit-for-tat", "defection"} and res.distinct == 2
    assert all(len(b.path) == 7 and not torch.equal(b.path[0]["agent1/logit"], b.path[-1]["agent1/logit"])
               for b in res.branches)  # fmt: skip
    assert all(torch.equal(game.state[k], before[k]) for k in before)


def test_a_train_hook_runs_the_branches() -> None:
    game = zoo.small_ipd(0.6, init=0.6931, dtype=F64)
    seen: list[int] = []

    def train(starts: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        seen.append(len(starts))
        return starts

    res = game_ridge_rider(game, locate="start", directions=2, train=train)
    assert seen == [len(res.branches)] and all(b.params == b.start for b in res.branches)
    with pytest.raises(InvalidArgumentError, match="train returned 0 points"):
        game_ridge_rider(game, locate="start", train=lambda starts: [])
    with pytest.raises(InvalidArgumentError, match="locate"):
        game_ridge_rider(game, locate="saddle")


def test_game_ridge_rider_needs_the_game_jacobian() -> None:
    with pytest.raises(UnsupportedError, match="second derivatives"):
        game_ridge_rider(first_order_only_game(), locate="start")
    with pytest.raises(UnsupportedError, match="second derivatives"):
        game_ridge_rider(first_order_only_game(), locate="lyapunov")
    with pytest.raises(UnsupportedError, match="second derivatives"):
        find_fixed_point(first_order_only_game())


def test_ridge_surface_minima_are_minima() -> None:
    s = zoo.ridge_surface(dtype=F64)
    for m, v in zip(s.minima, s.values):
        assert float(torch.func.grad(s.value)(m).norm()) < 1e-10
        assert bool((torch.linalg.eigvalsh(torch.func.hessian(s.value)(m)) > 0).all())
        assert float(s.value(m)) == pytest.approx(float(v))
    assert s.global_minima == (0, 1) and float(torch.func.grad(s.value)(s.start["xy"]).norm()) == 0.0
    eig = torch.linalg.eigvalsh(torch.func.hessian(s.value)(s.start["xy"]))
    assert bool((eig < 0).all())  # the central stationary point is a maximum: two ridges, four directions


def test_lever_game_values_and_cross_play() -> None:
    game = zoo.lever_game((1.0, 1.0, 0.6), dtype=F64)
    pick = lambda a, b: {
        "player1/logits": 20 * torch.nn.functional.one_hot(torch.tensor(a), 3).to(F64),
        "player2/logits": 20 * torch.nn.functional.one_hot(torch.tensor(b), 3).to(F64),
    }
    assert -float(game.losses(pick(2, 2))[0]) == pytest.approx(0.6, abs=1e-6)
    assert -float(game.losses(pick(0, 1))[0]) == pytest.approx(0.0, abs=1e-6)
    assert game.info["cross_play"](pick(0, 0), pick(1, 1)) == pytest.approx(0.0, abs=1e-6)
    assert game.info["cross_play"](pick(2, 2), pick(2, 2)) == pytest.approx(0.6, abs=1e-6)
    with pytest.raises(InvalidArgumentError, match="positive"):
        zoo.lever_game((1.0, 0.0))


def test_ipd_outcome_names() -> None:
    tft = torch.tensor(zoo.IPD_STRATEGIES["tit_for_tat"], dtype=F64) * 16 - 8
    always_c = torch.full((5,), 8.0, dtype=F64)
    assert zoo.ipd_outcome(tft, tft) == "reciprocating"
    assert zoo.ipd_outcome(always_c, always_c) == "cooperating"
    assert zoo.ipd_outcome(-always_c, -always_c) == "mutual defection"
    assert zoo.ipd_outcome(always_c, -always_c) == "mixed"


def test_batched_one_logit_games_equal_their_copies() -> None:
    a = torch.tensor([-1.0, 0.5], dtype=F64)
    b = torch.tensor([2.0, -0.3], dtype=F64)
    for make in (zoo.small_ipd, zoo.matching_pennies, zoo.ipd_matching_pennies):
        batched = make(init=[a, b], batch_shape=(2,), dtype=F64)
        total = [float(v) for v in batched.losses()]
        singles = [make(init=[a[i], b[i]], dtype=F64).losses() for i in range(2)]
        assert total == pytest.approx([sum(float(s[j]) for s in singles) for j in range(2)], abs=1e-12)
