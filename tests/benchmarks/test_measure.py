"""The measurement helpers: exact peak memory, timing bookkeeping, references and peer agreement."""

from __future__ import annotations

import importlib.util
import math
import warnings

import pytest
import torch

import _peers
import _problems
from _measure import PeakMemory, peak_memory, time_it
from _report import timed


def test_peak_memory_counts_a_known_allocation_exactly():
    assert peak_memory(lambda: torch.empty(1000, dtype=torch.float32)) == 4000
    assert peak_memory(lambda: torch.zeros(250, dtype=torch.float64)) == 2000


def test_peak_memory_is_the_maximum_of_live_storages():
    def sequential():
        for _ in range(3):
            torch.ones(1000)  # freed before the next one

    def together():
        return [torch.ones(1000) for _ in range(3)]

    assert peak_memory(sequential) == 4000
    assert peak_memory(together) == 12000


def test_views_and_preexisting_tensors_are_not_counted():
    existing = torch.ones(1000)

    def fn():
        existing.add_(1.0)  # in place on a tensor made outside: nothing new
        x = torch.empty(500)
        return x[:10], x.view(10, 50), x.t() if x.dim() == 2 else x

    assert peak_memory(fn) == 2000


def test_peak_memory_sees_backward_passes():
    w = torch.randn(100, 100, requires_grad=True)
    x = torch.randn(8, 100)

    def fn():
        return torch.autograd.grad((x @ w).square().sum(), w)[0]

    with PeakMemory() as tracker:
        fn()
    # at least the gradient (100 x 100 floats) and the saved activation (8 x 100) were allocated
    assert tracker.peak >= 4 * (100 * 100 + 8 * 100)
    assert tracker.peak == peak_memory(fn)


def test_time_it_calls_warmup_plus_repeats():
    calls = []
    seconds = time_it(lambda: calls.append(1), repeats=4, warmup=2)
    assert len(calls) == 6
    assert seconds >= 0.0


def test_timed_reports_median_spread_and_memory():
    row = timed(lambda: torch.empty(10), repeats=3, warmup=1)
    assert row["min_seconds"] <= row["seconds"] <= row["max_seconds"]
    assert row["spread"] >= 0.0 and row["repeats"] == 3
    assert row["peak_bytes"] == 40


def test_ridge_reference_matches_finite_differences():
    """The closed-form hypergradient the accuracy benchmark trusts, against central differences in float64."""
    p = _problems.ridge_problem(n=40, d=6, seed=1)

    def val_loss(lam: torch.Tensor) -> float:
        x, y = p.x_tr, p.y_tr
        a = x.T @ x / len(y) + torch.diag(lam.exp())
        w = torch.linalg.solve(a, x.T @ y / len(y))
        return float(p.outer({"w": w}, {}, None))

    lam, eps = p.hparams["log_l2"], 1e-5
    for i in range(6):
        e = torch.zeros_like(lam)
        e[i] = eps
        fd = (val_loss(lam + e) - val_loss(lam - e)) / (2 * eps)
        assert math.isclose(float(p.exact["log_l2"][i]), fd, rel_tol=1e-5, abs_tol=1e-10)


def test_logistic_reference_is_stationary_and_matches_finite_differences():
    p = _problems.logistic_problem(n=60, d=5, seed=2)
    w = p.params["w"].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(p.inner({"w": w}, p.hparams, None), w)
    assert float(g.norm()) < 1e-12

    def val_loss(lam: torch.Tensor) -> float:
        v = torch.zeros(5, dtype=torch.float64)
        for _ in range(50):  # Newton
            f = lambda u: p.inner({"w": u}, {"log_l2": lam}, None)
            v = v - torch.linalg.solve(torch.func.hessian(f)(v), torch.func.grad(f)(v))
        return float(p.outer({"w": v}, {}, None))

    lam, eps = p.hparams["log_l2"], 1e-5
    e = torch.zeros_like(lam)
    e[0] = eps
    fd = (val_loss(lam + e) - val_loss(lam - e)) / (2 * eps)
    assert math.isclose(float(p.exact["log_l2"][0]), fd, rel_tol=1e-5, abs_tol=1e-10)


def test_cosine_and_relative_error():
    a = {"x": torch.tensor([1.0, 0.0])}
    assert _problems.cosine(a, {"x": torch.tensor([2.0, 0.0])}) == pytest.approx(1.0)
    assert _problems.cosine(a, {"x": torch.tensor([0.0, 3.0])}) == pytest.approx(0.0)
    assert _problems.relative_error({"x": torch.tensor([1.1, 0.0])}, a) == pytest.approx(0.1)


@pytest.mark.parametrize("peer", ["torchopt", "betty"])
@pytest.mark.parametrize("method", ["neumann", "cg"])
def test_peers_compute_the_same_implicit_hypergradient(peer, method):
    """Same method, same steps: a peer's answer equals nestopt's (Betty's CG differs by design, see _peers)."""
    if _peers.peer_status(peer)[0] is None:
        pytest.skip(f"{peer} is not available: {_peers.peer_status(peer)[1]}")
    p = _problems.ridge_problem(n=50, d=8, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mine = _peers.build("nestopt", method, p, 5)()
        theirs = _peers.build(peer, method, p, 5)()
    if peer == "betty" and method == "cg":
        assert _problems.cosine(mine, theirs) > 0.5  # same direction roughly; not the same iteration
    else:
        assert _problems.relative_error(theirs, mine) < 1e-10


@pytest.mark.parametrize("peer", ["higher", "torchopt"])
def test_peers_compute_the_same_unrolled_hypergradient(peer):
    if importlib.util.find_spec(peer) is None:
        pytest.skip(f"{peer} is not installed")
    p = _problems.ridge_problem(n=50, d=8, seed=3).unrolled_view()
    mine = _peers.build("nestopt", "unrolled", p, 7)()
    theirs = _peers.build(peer, "unrolled", p, 7)()
    assert _problems.relative_error(theirs, mine) < 1e-10


def test_betty_unrolled_is_reported_unavailable():
    with pytest.raises(_peers.Unavailable, match="unrolled"):
        _peers.build("betty", "unrolled", None, 3)


def test_a_partial_hypergrad_speed_run_never_overwrites_the_full_table():
    from hypergrad_speed import SIZES, result_name

    assert result_name(SIZES, False, "cpu") == "hypergrad_speed"
    assert result_name(["300k"], False, "cpu") == "hypergrad_speed_300k"
    assert result_name(["3M", "30M"], False, "cuda:1") == "hypergrad_speed_3M_30M_cuda"
    assert result_name(["300k"], True, "cpu") == "hypergrad_speed"  # --quick writes to the scratch folder


def test_the_environment_names_the_cpu_and_its_caches():
    from _report import _kib, cpu_description, env_line, environment

    assert (_kib("2048K"), _kib("48K"), _kib("1536K"), _kib("odd")) == ("2 MiB", "48 KiB", "1536 KiB", "odd")
    env = environment(torch.get_num_threads())
    assert env["cpu"] == cpu_description()
    assert not env["cpu"] or f"({env['cpu']})" in env_line(env)


def test_the_split_inner_loss_nestopt_is_given_is_the_peers_loss():
    """``MLPProblem.inner_split`` (decays and proximal term named for their formulas) against ``inner`` through
    autograd, in float64: value, gradient, Hessian products and mixed products."""
    from nestopt import autodiff

    p = _problems.mlp_problem(6, batch_size=16, pretrain=5, n_train=64, iterations=3).to(torch.float64)
    p.prox = 0.37  # the proximal term is on whatever the eigenvalue estimate gave
    g = torch.Generator().manual_seed(4)
    h = {k: v + torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in p.hparams.items()}
    v = {k: torch.randn(t.shape, generator=g, dtype=t.dtype) for k, t in p.params.items()}
    split = autodiff.linearize(p.inner_split, p.params, h, p.train)
    plain = autodiff.linearize(p.inner, p.params, h, p.train)
    assert float(split.value) == pytest.approx(float(plain.value), rel=1e-13)
    for got, want in [(split.grad, plain.grad), (split.hvp(v), plain.hvp(v)), (split.mixed_vjp(v), plain.mixed_vjp(v))]:
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=1e-11, atol=1e-13)
