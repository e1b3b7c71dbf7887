"""The zoo against independent references: Monte Carlo, axelrod, nashpy, closed forms."""

from __future__ import annotations

import itertools

import axelrod as axl
import nashpy as nash
import numpy as np
import pytest
import torch

from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.games import rules, zoo

GAMMA = 0.96


def _simulate_ipd(p1: torch.Tensor, p2: torch.Tensor, episodes: int, horizon: int, seed: int) -> torch.Tensor:
    """Discounted returns of both players by playing the memory-one policies (own-side state order)."""
    g = torch.Generator().manual_seed(seed)
    rewards = torch.tensor(zoo.IPD_REWARDS, dtype=torch.float64)  # (2, 4) in player 1's outcome order
    own_index = {(1, 1): 1, (1, 0): 2, (0, 1): 3, (0, 0): 4}  # (own cooperated, other cooperated) -> policy entry
    c1 = torch.rand(episodes, generator=g, dtype=torch.float64) < p1[0]
    c2 = torch.rand(episodes, generator=g, dtype=torch.float64) < p2[0]
    total = torch.zeros(2, episodes, dtype=torch.float64)
    for t in range(horizon):
        outcome = (~c1).long() * 2 + (~c2).long()  # CC=0, CD=1, DC=2, DD=3 (player 1 first)
        total += GAMMA**t * rewards.index_select(1, outcome)
        idx1 = torch.tensor([own_index[(int(a), int(b))] for a, b in ((1, 1), (1, 0), (0, 1), (0, 0))])
        # player 1 sees (own=c1, other=c2); player 2 sees (own=c2, other=c1)
        k1 = torch.where(c1, torch.where(c2, idx1[0], idx1[1]), torch.where(c2, idx1[2], idx1[3]))
        k2 = torch.where(c2, torch.where(c1, idx1[0], idx1[1]), torch.where(c1, idx1[2], idx1[3]))
        c1 = torch.rand(episodes, generator=g, dtype=torch.float64) < p1.index_select(0, k1)
        c2 = torch.rand(episodes, generator=g, dtype=torch.float64) < p2.index_select(0, k2)
    return total


def test_ipd_exact_value_matches_monte_carlo() -> None:
    g = torch.Generator().manual_seed(11)
    logits1, logits2 = (
        torch.randn(5, generator=g, dtype=torch.float64),
        torch.randn(5, generator=g, dtype=torch.float64),
    )
    v1, v2 = zoo.ipd_values(logits1, logits2, GAMMA)
    returns = _simulate_ipd(torch.sigmoid(logits1), torch.sigmoid(logits2), episodes=40000, horizon=300, seed=12)
    mean, sem = returns.mean(dim=1), returns.std(dim=1) / returns.shape[1] ** 0.5
    assert abs(float(v1) - float(mean[0])) < 4 * float(sem[0])
    assert abs(float(v2) - float(mean[1])) < 4 * float(sem[1])


AXELROD = {
    "always_cooperate": axl.Cooperator,
    "always_defect": axl.Defector,
    "tit_for_tat": axl.TitForTat,
    "suspicious_tit_for_tat": axl.SuspiciousTitForTat,
    "grudger": axl.Grudger,
    "alternator": axl.Alternator,
}


@pytest.mark.parametrize(("first", "second"), list(itertools.product(sorted(AXELROD), repeat=2)))
def test_ipd_exact_value_matches_axelrod_match_payoffs(first: str, second: str) -> None:
    turns = 400  # 0.96**400 * 3 / 0.04 < 1e-5: the truncation is negligible
    match = axl.Match((AXELROD[first](), AXELROD[second]()), turns=turns, game=axl.Game(r=-1, s=-3, t=0, p=-2))
    match.play()
    scores = np.array(match.scores(), dtype=np.float64)
    discount = GAMMA ** np.arange(turns)
    expected = discount @ scores
    p1 = torch.tensor(zoo.IPD_STRATEGIES[first], dtype=torch.float64)
    p2 = torch.tensor(zoo.IPD_STRATEGIES[second], dtype=torch.float64)
    v1, v2 = zoo.ipd_values(p1, p2, GAMMA, probabilities=True)
    assert float(v1) == pytest.approx(expected[0], abs=1e-4)
    assert float(v2) == pytest.approx(expected[1], abs=1e-4)


def test_ipd_game_losses_and_batches() -> None:
    game = zoo.ipd(batch_shape=(3,), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    l1, l2 = game.losses()
    v1, v2 = zoo.ipd_values(game.params[0]["logits"], game.params[1]["logits"], GAMMA)
    torch.testing.assert_close(l1, -v1.sum())
    torch.testing.assert_close(l2, -v2.sum())
    # copies are independent: player 1's gradient in copy 0 does not depend on copy 1's logits
    xi = game.xi()[0]["logits"]
    moved = [{"logits": game.params[0]["logits"].clone()}, {"logits": game.params[1]["logits"].clone()}]
    moved[1]["logits"][1] += 1.0
    torch.testing.assert_close(game.xi(moved)[0]["logits"][0], xi[0])
    with pytest.raises(ShapeMismatchError):
        zoo.ipd_values(torch.zeros(4), torch.zeros(5))
    with pytest.raises(InvalidArgumentError, match="gamma"):
        zoo.ipd(gamma=1.0)


def test_small_ipd_payoffs_match_the_exact_ipd() -> None:
    tft = torch.tensor(zoo.IPD_STRATEGIES["tit_for_tat"], dtype=torch.float64)
    alld = torch.tensor(zoo.IPD_STRATEGIES["always_defect"], dtype=torch.float64)
    R = zoo.small_ipd_payoffs(GAMMA, dtype=torch.float64)
    for i, a in enumerate((tft, alld)):
        for j, b in enumerate((tft, alld)):
            v1, v2 = zoo.ipd_values(a, b, GAMMA, probabilities=True)
            assert float(v1) * (1 - GAMMA) == pytest.approx(float(R[i, j]))
            assert float(v2) * (1 - GAMMA) == pytest.approx(float(R[j, i]))


def test_small_ipd_equilibria_match_nashpy() -> None:
    R = zoo.small_ipd_payoffs(GAMMA, dtype=torch.float64).numpy()
    equilibria = list(nash.Game(R, R.T).support_enumeration())
    pure = sorted(tuple(np.round(e[0], 6)) for e in equilibria if np.isin(e[0], (0.0, 1.0)).all())
    assert pure == [(0.0, 1.0), (1.0, 0.0)]  # mutual defection and mutual tit-for-tat
    # both are stable for gradient play: starting near either, the learners stay there
    for start, target in ((3.0, 1.0), (-4.0, 0.0)):  # the basins meet where the opponent is TFT w.p. 1/24
        game = zoo.small_ipd(GAMMA, init=start, dtype=torch.float64)
        opt = torch.optim.SGD(game.parameters(), lr=1.0)
        for _ in range(200):
            game.step(opt)
        assert float(torch.sigmoid(game.params[0]["logit"])) == pytest.approx(target, abs=0.05)


def test_matching_pennies_equilibrium_matches_nashpy() -> None:
    game = zoo.matching_pennies(init=None, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    A, B = (m.numpy() for m in game.info["payoffs"])
    (row, col), *rest = list(nash.Game(A, B).support_enumeration())
    assert not rest
    # the losses are minus nashpy's expected utilities at any mixed strategies
    p, q = torch.sigmoid(game.params[0]["logit"]).item(), torch.sigmoid(game.params[1]["logit"]).item()
    utilities = nash.Game(A, B)[np.array([p, 1 - p]), np.array([q, 1 - q])]
    np.testing.assert_allclose([-float(v) for v in game.losses()], utilities)
    # SGA finds the equilibrium from a random start; plain GDA circles away from it
    opt = torch.optim.SGD(game.parameters(), lr=0.5)
    for _ in range(400):
        game.step(opt, rule=rules.SGA())
    found = [float(torch.sigmoid(game.params[i]["logit"])) for i in range(2)]
    np.testing.assert_allclose(found, [row[0], col[0]], atol=1e-4)
    assert float(game.hamiltonian(game.equilibrium)) == 0.0


def test_ipd_matching_pennies_interpolates() -> None:
    start = [torch.tensor(0.3, dtype=torch.float64), torch.tensor(-1.2, dtype=torch.float64)]
    mixed = zoo.ipd_matching_pennies(0.3, init=start)
    ipd = zoo.small_ipd(init=start)
    pennies = zoo.matching_pennies(init=start)
    for a, b, c in zip(mixed.losses(), ipd.losses(), pennies.losses()):
        torch.testing.assert_close(a, 0.3 * b + 0.7 * c)


def test_tandem_fixed_line() -> None:
    game = zoo.tandem(init=[torch.tensor(0.25), torch.tensor(0.75)], dtype=torch.float64)
    assert float(game.hamiltonian()) == 0.0


def test_mode_coverage_metrics() -> None:
    centers, std = zoo.gaussian_mixture("grid")
    assert centers.shape == (25, 2)
    g = torch.Generator().manual_seed(0)
    real = zoo.sample_mixture(centers, std, 5000, generator=g)
    full = zoo.mode_coverage(real, centers, std)
    assert full["modes"] == 25
    assert full["high_quality"] > 0.98  # 3 sigma in 2-D holds 98.9% of the mass
    collapsed = centers[3] + std * torch.randn(5000, 2, generator=g)
    assert zoo.mode_coverage(collapsed, centers, std)["modes"] == 1
    spread = torch.rand(5000, 2, generator=g) * 10 - 5
    assert zoo.mode_coverage(spread, centers, std)["high_quality"] < 0.2
    with pytest.raises(InvalidArgumentError, match="kind"):
        zoo.gaussian_mixture("spiral")


def test_mixture_gan_ensemble_members_are_independent() -> None:
    game = zoo.mixture_gan("ring", hidden=8, ensemble=2, generator=torch.Generator().manual_seed(0),
                           dtype=torch.float64)  # fmt: skip
    batch = game.info["sample_batch"](torch.Generator().manual_seed(1))
    xi = game.xi(batch=batch)
    moved = [{k: v.clone() for k, v in t.items()} for t in game.params]
    moved[0]["w0"][1] += 0.5  # change member 1's generator only
    xi_moved = game.xi(moved, batch=batch)
    for i in range(2):
        for k in xi[i]:
            torch.testing.assert_close(xi_moved[i][k][0], xi[i][k][0])
    assert game.info["generate"](10).shape == (2, 10, 2)
