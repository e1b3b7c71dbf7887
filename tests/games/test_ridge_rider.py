"""Ridge Rider: ridge tracking against known eigenvectors, exact against approximate mode, the toy surface,
the saddle search, and the errors and warnings that name the problem."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from nestopt.errors import InvalidArgumentError, TooLargeError
from nestopt.games import zoo
from nestopt.games.diversity import DiversityWarning, find_saddle, ridge_rider
from nestopt.games.diversity._common import FlatLoss, canonical_sign
from nestopt.games.diversity.ridges import Curvature

F64 = torch.float64


def _rotation(n: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=F64))
    return q


def _double_wells(n: int = 30, wells: tuple[float, ...] = (3.0, 2.0, 1.0), seed: int = 0):
    """A rotated separable loss: double wells c (z^2 - 1)^2 / 4 along the first coordinates (curvature -c at
    0, minima at z = +-1), positive quadratics along the rest; minima at every sign pattern of the wells."""
    q = _rotation(n, seed)
    c = torch.tensor(wells, dtype=F64)
    d = torch.linspace(1.0, 4.0, n - len(wells), dtype=F64)

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        z = q.T @ p["w"]
        k = len(wells)
        return (c * (z[:k] ** 2 - 1) ** 2 / 4).sum() + 0.5 * (d * z[k:] ** 2).sum()

    return loss, q


def test_canonical_sign_makes_the_largest_entry_positive() -> None:
    v = torch.tensor([0.1, -0.9, 0.3], dtype=F64)
    assert torch.equal(canonical_sign(v), -v)
    assert torch.equal(canonical_sign(-v), -v)


@pytest.mark.parametrize("mode", ["exact", "approximate"])
def test_tracking_picks_the_known_eigenvector_with_an_aligned_sign(mode: str) -> None:
    n = 40
    q = _rotation(n, 1)
    lam = torch.linspace(-3.0, 5.0, n, dtype=F64)
    H = q @ torch.diag(lam) @ q.T
    flat = FlatLoss(lambda p: 0.5 * p["w"] @ H @ p["w"], {"w": torch.zeros(n, dtype=F64)})
    curv = Curvature(flat, mode, k=4 if mode == "approximate" else None, track_restarts=200, tol=1e-12)
    x = torch.randn(n, generator=torch.Generator().manual_seed(2), dtype=F64)
    for j in (0, 2):
        target = q[:, j]
        noisy = -(target + 0.03 * torch.randn(n, generator=torch.Generator().manual_seed(j), dtype=F64))
        noisy = noisy / noisy.norm()
        value, vec, overlap = curv.track(x, noisy)
        assert value == pytest.approx(float(lam[j]), abs=1e-6)
        assert torch.allclose(vec, -target, atol=1e-6)  # the sign follows the previous vector
        assert overlap > 0.9
    ridges, values, _ = curv.ridges(x)
    negatives = int((lam < 0).sum())
    expected = min(negatives, 4) if mode == "approximate" else negatives
    assert [r.label for r in ridges] == [f"{i}{s}" for i in range(expected) for s in "+-"]
    assert all(torch.equal(r.vector, canonical_sign(r.vector)) for r in ridges if r.sign > 0)


def test_exact_and_lanczos_ridge_rider_agree() -> None:
    loss, q = _double_wells(24, (3.0, 1.5))
    start = {"w": torch.zeros(24, dtype=F64)}
    kw = {"step": 0.1, "descent_lr": 0.2, "grad_tol": 1e-9}
    exact = ridge_rider(loss, start, mode="exact", **kw)
    approx = ridge_rider(loss, start, mode="approximate", ridges=2, lanczos={"tol": 1e-10}, **kw)
    assert exact.info.status == approx.info.status == "complete"
    assert [r.fingerprint for r in exact.rides] == [r.fingerprint for r in approx.rides]
    for a, b in zip(exact.leaves, approx.leaves):
        assert torch.allclose(a.params["w"], b.params["w"], atol=1e-6)
        assert a.eigenvalues == pytest.approx(b.eigenvalues, abs=1e-6)
    # every leaf is a minimum at a sign pattern of the two wells, and all 4 patterns are reached
    patterns = {tuple(torch.sign(q.T @ leaf.params["w"])[:2].int().tolist()) for leaf in exact.leaves}
    assert patterns == set(itertools.product((-1, 1), repeat=2))
    assert all(torch.allclose((q.T @ leaf.params["w"]).abs()[:2], torch.ones(2, dtype=F64)) for leaf in exact.leaves)
    assert exact.info.hvps > 0 and approx.info.hvps > 0
    # the first ride follows ridge 0 (curvature -3) and ends where it turns positive: z0 = 1/sqrt(3)
    first = exact.rides[0]
    assert first.fingerprint == ("0+",) and first.reason == "eigenvalue"
    assert first.eigenvalues[0] == pytest.approx(-3.0, abs=1e-9)
    assert abs(float((q.T @ first.end["w"])[0])) == pytest.approx(1 / math.sqrt(3), abs=0.1)


def test_depth_first_reaches_the_same_leaves_as_breadth_first() -> None:
    loss, _ = _double_wells(8, (2.0, 1.0))
    start = {"w": torch.zeros(8, dtype=F64)}
    breadth = ridge_rider(loss, start, search="breadth", descent_lr=0.1)
    depth = ridge_rider(loss, start, search="depth", descent_lr=0.1)
    key = {leaf.fingerprint: leaf.params["w"] for leaf in breadth.leaves}
    assert set(key) == {leaf.fingerprint for leaf in depth.leaves}
    for leaf in depth.leaves:
        assert torch.allclose(leaf.params["w"], key[leaf.fingerprint], atol=1e-8)
    assert depth.rides[0].fingerprint == ("0+",) and depth.rides[1].fingerprint[0] == "0+"  # depth first
    assert breadth.rides[1].fingerprint == ("0-",)


def test_leaves_reach_every_minimum_of_the_toy_surface() -> None:
    surface = zoo.ridge_surface(dtype=F64)
    res = ridge_rider(surface.loss, surface.start, step=0.05, descent_lr=0.02)
    reached = {int(surface.nearest_minimum(leaf.params["xy"])) for leaf in res.leaves}
    assert reached == set(range(len(surface.minima)))
    for leaf in res.leaves:
        i = int(surface.nearest_minimum(leaf.params["xy"]))
        assert torch.allclose(leaf.params["xy"], surface.minima[i], atol=1e-4)
        assert leaf.loss == pytest.approx(float(surface.values[i]), abs=1e-8)
        assert leaf.eigenvalues[0] < 0 and leaf.eigenvalues[-1] >= 0  # the tracked eigenvalue turned positive


def test_a_minimum_has_no_ridges_and_returns_the_descent_solution() -> None:
    loss = lambda p: ((p["w"] - 1.0) ** 2).sum()
    with pytest.warns(DiversityWarning, match="no negative eigenvalue"):
        res = ridge_rider(loss, {"w": torch.full((3,), 0.999, dtype=F64)}, stationary_tol=1.0)
    assert res.info.status == "no_ridges"
    assert res.leaves == [res.root] and not res.rides
    assert torch.allclose(res.root.params["w"], torch.ones(3, dtype=F64), atol=1e-5)


def test_a_start_far_from_stationary_warns_with_its_gradient_norm() -> None:
    loss = lambda p: ((p["w"] ** 2 - 1) ** 2).sum()
    with pytest.warns(DiversityWarning, match=r"gradient norm is 1\.09"):
        res = ridge_rider(loss, {"w": torch.tensor([0.3, 0.0], dtype=F64)}, step=0.1)
    assert res.info.start_gradient_norm == pytest.approx(4 * 0.3 * (1 - 0.09), rel=1e-9)


def test_the_budget_stops_the_search_and_says_so() -> None:
    loss = lambda p: ((p["w"] ** 2 - 1) ** 2).sum()
    with pytest.warns(DiversityWarning, match="max_rides=2"):
        res = ridge_rider(loss, {"w": torch.zeros(2, dtype=F64)}, step=0.1, max_rides=2)
    assert res.info.status == "budget" and res.info.unexplored > 0
    assert all(leaf.stopped in ("minimum", "budget") for leaf in res.leaves)


def test_bad_arguments_name_themselves() -> None:
    loss = lambda p: (p["w"] ** 2).sum()
    start = {"w": torch.zeros(2, dtype=F64)}
    with pytest.raises(InvalidArgumentError, match="mode"):
        ridge_rider(loss, start, mode="dense")
    with pytest.raises(InvalidArgumentError, match="step"):
        ridge_rider(loss, start, step=0.0)
    with pytest.raises(InvalidArgumentError, match="search"):
        ridge_rider(loss, start, search="random")
    with pytest.raises(InvalidArgumentError, match="loss"):
        ridge_rider("loss", start)  # type: ignore[arg-type]
    with pytest.raises(TooLargeError, match="approximate"):
        ridge_rider(loss, {"w": torch.zeros(50, dtype=F64)}, max_exact=10)


def test_find_saddle_reaches_the_lever_games_symmetric_saddle() -> None:
    game = zoo.lever_game(dtype=F64)
    res = find_saddle(game.info["loss"], game.state, lr=0.01, steps=3000, tol=1e-9)
    assert res.converged
    r = game.info["payoffs"]
    for pi in game.info["policies"](res.params):
        assert torch.allclose(pi, (1 / r) / (1 / r).sum(), atol=1e-6)  # pi(a) proportional to 1 / r_a
