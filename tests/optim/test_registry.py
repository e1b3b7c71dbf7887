"""Every optimizer of nestopt.optim on the same problems, with the same checks.

A quadratic (two tensors, closed-form minimum) and the Rosenbrock function, in float32 and float64; the
``state_dict`` round trip must continue the trajectory bit for bit; an LR scheduler must change the steps;
the for-loop and ``_foreach`` kernels must agree.
"""

from __future__ import annotations

import cmath
import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from nestopt import optim

Factory = Callable[..., torch.optim.Optimizer]


@dataclass(frozen=True)
class Entry:
    make: Callable[[list[torch.Tensor], float, bool | None], torch.optim.Optimizer]
    quad_lr: float
    rosen_lr: float
    quad_tol: float  # on the loss gap after the quadratic run


def _eg(params, lr, foreach):
    return optim.ExtraGradient(torch.optim.SGD(params, lr=lr, foreach=foreach))


REGISTRY: dict[str, Entry] = {
    "ComplexMomentum": Entry(
        lambda p, lr, fe: optim.ComplexMomentum(p, lr=lr, beta=cmath.rect(0.8, math.pi / 16), foreach=fe),
        quad_lr=0.05, rosen_lr=2e-3, quad_tol=1e-8,
    ),
    "ComplexMomentum(complex alpha)": Entry(
        lambda p, lr, fe: optim.ComplexMomentum(p, lr=lr, beta=(0.7, 0.3), alpha=cmath.rect(1.0, 0.2), foreach=fe),
        quad_lr=0.05, rosen_lr=1.5e-3, quad_tol=1e-8,
    ),
    "ComplexAdam": Entry(
        lambda p, lr, fe: optim.ComplexAdam(p, lr=lr, betas=(cmath.rect(0.8, math.pi / 16), 0.999), foreach=fe),
        quad_lr=0.02, rosen_lr=1e-2, quad_tol=1e-4,
    ),
    "HeavyBall(negative)": Entry(
        lambda p, lr, fe: optim.HeavyBall(p, lr=lr, momentum=-0.1, foreach=fe),
        quad_lr=0.1, rosen_lr=1.5e-3, quad_tol=1e-8,
    ),
    "OptimisticSGD": Entry(
        lambda p, lr, fe: optim.OptimisticSGD(p, lr=lr, foreach=fe), quad_lr=0.04, rosen_lr=6.5e-4, quad_tol=1e-8
    ),
    "OptimisticAdam": Entry(
        lambda p, lr, fe: optim.OptimisticAdam(p, lr=lr, foreach=fe), quad_lr=0.02, rosen_lr=1e-2, quad_tol=1e-4
    ),
    "ExtraGradient(SGD)": Entry(_eg, quad_lr=0.08, rosen_lr=8e-4, quad_tol=1e-8),
}  # fmt: skip

CURVATURE = torch.tensor([1.0, 2.0, 3.0, 5.0, 8.0, 10.0])
SHIFT = torch.tensor([1.0, -1.0, 0.5, 2.0, -0.5, 0.25])


def quadratic(params: list[torch.Tensor]) -> torch.Tensor:
    w = torch.cat([p.reshape(-1) for p in params])
    h, c = CURVATURE.to(w.dtype), SHIFT.to(w.dtype)
    return 0.5 * (h * w * w).sum() - (c * w).sum()


def quadratic_min(dtype: torch.dtype) -> float:
    h, c = CURVATURE.to(dtype), SHIFT.to(dtype)
    return float(-0.5 * (c * c / h).sum())


def rosenbrock(params: list[torch.Tensor]) -> torch.Tensor:
    (w,) = params
    return (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2


def quad_params(dtype: torch.dtype) -> list[torch.Tensor]:
    return [torch.zeros(2, dtype=dtype, requires_grad=True), torch.zeros(2, 2, dtype=dtype, requires_grad=True)]


def run(opt: torch.optim.Optimizer, params: list[torch.Tensor], loss_fn, steps: int) -> torch.Tensor:
    def closure():
        opt.zero_grad()
        loss = loss_fn(params)
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    return loss_fn(params).detach()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_quadratic(name: str, dtype: torch.dtype) -> None:
    entry = REGISTRY[name]
    params = quad_params(dtype)
    final = run(entry.make(params, entry.quad_lr, None), params, quadratic, 400)
    assert final.dtype == dtype
    assert all(p.dtype == dtype for p in params)
    tol = max(entry.quad_tol, 1e-5 if dtype == torch.float32 else 0.0)
    assert float(final) - quadratic_min(dtype) <= tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_rosenbrock(name: str, dtype: torch.dtype) -> None:
    entry = REGISTRY[name]
    w = torch.tensor([-1.0, 1.0], dtype=dtype, requires_grad=True)
    start = float(rosenbrock([w.detach()]))
    final = float(run(entry.make([w], entry.rosen_lr, None), [w], rosenbrock, 2500))
    assert math.isfinite(final)
    assert final <= start / 10, f"{name}: Rosenbrock loss {start:.3g} -> {final:.3g}"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_foreach_matches_for_loop(name: str) -> None:
    entry = REGISTRY[name]
    results = []
    for foreach in (False, True):
        params = quad_params(torch.float64)
        run(entry.make(params, entry.quad_lr, foreach), params, quadratic, 25)
        results.append(torch.cat([p.detach().reshape(-1) for p in params]))
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_state_dict_round_trip_continues_identically(name: str) -> None:
    entry = REGISTRY[name]
    params = quad_params(torch.float64)
    opt = entry.make(params, entry.quad_lr, None)
    run(opt, params, quadratic, 7)
    saved_state = copy.deepcopy(opt.state_dict())
    saved_params = [p.detach().clone() for p in params]
    run(opt, params, quadratic, 9)
    expected = torch.cat([p.detach().reshape(-1) for p in params])

    fresh = [p.clone().requires_grad_(True) for p in saved_params]
    opt2 = entry.make(fresh, 123.0, None)  # hyperparameters come from the state dict
    opt2.load_state_dict(saved_state)
    run(opt2, fresh, quadratic, 9)
    got = torch.cat([p.detach().reshape(-1) for p in fresh])
    assert torch.equal(got, expected)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_lr_scheduler_changes_the_steps(name: str) -> None:
    entry = REGISTRY[name]
    params = quad_params(torch.float64)
    opt = entry.make(params, entry.quad_lr, None)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.0)
    run(opt, params, quadratic, 1)
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.0
    before = [p.detach().clone() for p in params]
    run(opt, params, quadratic, 3)  # lr is zero: no movement
    for b, p in zip(before, params):
        assert torch.equal(b, p.detach())


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_zero_grad_and_missing_grads(name: str) -> None:
    entry = REGISTRY[name]
    a = torch.ones(3, dtype=torch.float64, requires_grad=True)
    b = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = entry.make([a, b], 0.1, None)

    def closure():
        opt.zero_grad()
        loss = (a**2).sum()  # b gets no gradient and must stay put
        loss.backward()
        return loss

    opt.step(closure)
    assert torch.equal(b.detach(), torch.ones(3, dtype=torch.float64))
    assert not torch.equal(a.detach(), torch.ones(3, dtype=torch.float64))
    opt.zero_grad()
    assert a.grad is None
