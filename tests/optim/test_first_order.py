"""HeavyBall, OptimisticSGD/Adam and ExtraGradient against their update rules written out directly."""

from __future__ import annotations

import copy

import pytest
import torch

from nestopt import optim
from nestopt.errors import InvalidArgumentError

A = torch.tensor([[1.0, 0.5], [0.0, 2.0]], dtype=torch.float64)


def bilinear_grads(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """min_x max_y x^T A y: the field (A y, -A^T x)."""
    return A @ y, -(A.T @ x)


def _params():
    return torch.tensor([1.0, -1.0], dtype=torch.float64), torch.tensor([0.5, 2.0], dtype=torch.float64)


def _run_game(make, steps: int):
    x, y = _params()
    x.requires_grad_()
    y.requires_grad_()
    opt = make([x, y])

    def closure():
        opt.zero_grad()
        gx, gy = bilinear_grads(x.detach(), y.detach())
        x.grad, y.grad = gx.clone(), gy.clone()
        return None

    out = []
    for _ in range(steps):
        opt.step(closure)
        out.append(torch.cat([x.detach(), y.detach()]))
    return torch.stack(out)


@pytest.mark.parametrize("momentum", [0.0, 0.3, 0.9])
def test_heavy_ball_equals_torch_sgd_for_nonnegative_momentum(momentum: float) -> None:
    ours = _run_game(lambda p: optim.HeavyBall(p, lr=0.1, momentum=momentum), 20)
    ref = _run_game(lambda p: torch.optim.SGD(p, lr=0.1, momentum=momentum), 20)
    torch.testing.assert_close(ours, ref, rtol=1e-13, atol=1e-13)


def test_heavy_ball_negative_momentum_written_out() -> None:
    with pytest.raises(ValueError):
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=-0.5)  # torch refuses it
    ours = _run_game(lambda p: optim.HeavyBall(p, lr=0.1, momentum=-0.5), 15)
    x, y = _params()
    bx, by = torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    ref = []
    for _ in range(15):
        gx, gy = bilinear_grads(x, y)
        bx, by = -0.5 * bx + gx, -0.5 * by + gy
        x, y = x - 0.1 * bx, y - 0.1 * by
        ref.append(torch.cat([x, y]))
    torch.testing.assert_close(ours, torch.stack(ref), rtol=1e-13, atol=1e-13)


def test_optimistic_sgd_written_out() -> None:
    ours = _run_game(lambda p: optim.OptimisticSGD(p, lr=0.2), 15)
    x, y = _params()
    prev = None
    ref = []
    for _ in range(15):
        g = torch.cat(bilinear_grads(x, y))
        prev = g if prev is None else prev
        w = torch.cat([x, y]) - 0.2 * (2 * g - prev)
        prev = g
        x, y = w[:2], w[2:]
        ref.append(w)
    torch.testing.assert_close(ours, torch.stack(ref), rtol=1e-13, atol=1e-13)


def test_optimistic_adam_written_out() -> None:
    lr, b1, b2, eps = 0.05, 0.9, 0.99, 1e-8
    ours = _run_game(lambda p: optim.OptimisticAdam(p, lr=lr, betas=(b1, b2), eps=eps), 15)
    x, y = _params()
    m = v = torch.zeros(4, dtype=torch.float64)
    prev = None
    ref = []
    for t in range(1, 16):
        g = torch.cat(bilinear_grads(x, y))
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        d = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
        prev = d if prev is None else prev
        w = torch.cat([x, y]) - lr * (2 * d - prev)
        prev = d
        x, y = w[:2], w[2:]
        ref.append(w)
    torch.testing.assert_close(ours, torch.stack(ref), rtol=1e-12, atol=1e-13)


def test_extragradient_around_sgd_written_out() -> None:
    lr = 0.3
    ours = _run_game(lambda p: optim.ExtraGradient(torch.optim.SGD(p, lr=lr)), 15)
    x, y = _params()
    ref = []
    for _ in range(15):
        gx, gy = bilinear_grads(x, y)
        gx, gy = bilinear_grads(x - lr * gx, y - lr * gy)
        x, y = x - lr * gx, y - lr * gy
        ref.append(torch.cat([x, y]))
    torch.testing.assert_close(ours, torch.stack(ref), rtol=1e-13, atol=1e-13)


def test_extragradient_manual_halves_equal_closure() -> None:
    lr = 0.3
    closure_run = _run_game(lambda p: optim.ExtraGradient(torch.optim.SGD(p, lr=lr)), 5)
    x, y = _params()
    x.requires_grad_()
    y.requires_grad_()
    opt = optim.ExtraGradient(torch.optim.SGD([x, y], lr=lr))
    out = []
    for _ in range(5):
        x.grad, y.grad = bilinear_grads(x.detach(), y.detach())
        opt.extrapolate()
        assert opt.extrapolated
        x.grad, y.grad = bilinear_grads(x.detach(), y.detach())
        opt.step()
        out.append(torch.cat([x.detach(), y.detach()]))
    torch.testing.assert_close(torch.stack(out), closure_run, rtol=0, atol=0)


def test_game_methods_converge_where_gda_diverges() -> None:
    def dist(traj):
        return float(traj[-1].norm())

    start = float(torch.cat(_params()).norm())
    assert dist(_run_game(lambda p: torch.optim.SGD(p, lr=0.1), 200)) > start
    assert dist(_run_game(lambda p: optim.OptimisticSGD(p, lr=0.2), 400)) < 1e-3 * start
    assert dist(_run_game(lambda p: optim.ExtraGradient(torch.optim.SGD(p, lr=0.3)), 400)) < 1e-3 * start
    assert dist(_run_game(lambda p: optim.ComplexMomentum(p, lr=0.2, beta=(0.8, 1.2)), 800)) < 1e-3 * start


def test_extragradient_errors() -> None:
    with pytest.raises(InvalidArgumentError, match="base"):
        optim.ExtraGradient([torch.zeros(1)])  # type: ignore[arg-type]
    w = torch.zeros(2, requires_grad=True)
    opt = optim.ExtraGradient(torch.optim.SGD([w], lr=0.1))
    with pytest.raises(InvalidArgumentError, match="ExtraGradient"):
        optim.ExtraGradient(opt)
    with pytest.raises(InvalidArgumentError, match="closure"):
        opt.step()
    w.grad = torch.ones(2)
    opt.extrapolate()
    with pytest.raises(InvalidArgumentError, match="already"):
        opt.extrapolate()


def test_extragradient_shares_groups_state_and_add_param_group() -> None:
    w = torch.zeros(2, requires_grad=True)
    base = torch.optim.Adam([w], lr=0.1)
    opt = optim.ExtraGradient(base)
    assert opt.param_groups is base.param_groups
    opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)]})
    assert len(base.param_groups) == 2
    w.grad = torch.ones(2)
    opt.extrapolate()
    opt.step()
    assert base.state[w]["step"] == 2  # both half steps updated Adam's moments
    sd = copy.deepcopy(opt.state_dict())
    opt.load_state_dict(sd)
    assert opt.state is base.state and opt.param_groups is base.param_groups


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: optim.HeavyBall(p, lr=0.1, momentum=0.5j), "momentum"),
        (lambda p: optim.HeavyBall(p, lr=float("nan")), "lr"),
        (lambda p: optim.OptimisticSGD(p, lr=-1.0), "lr"),
        (lambda p: optim.OptimisticAdam(p, betas=(1.0, 0.9)), "beta1"),
        (lambda p: optim.OptimisticAdam(p, eps=float("nan")), "eps"),
    ],
)
def test_bad_arguments(make, match) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        make([torch.zeros(2, requires_grad=True)])
