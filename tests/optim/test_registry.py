"""Every optimizer of nestopt.optim on the same problems, with the same checks.

A quadratic (two tensors, closed-form minimum) and the Rosenbrock function, in float32 and float64. For the
``torch.optim`` classes: the ``state_dict`` round trip must continue the trajectory bit for bit; an LR
scheduler must change the steps; the for-loop and ``_foreach`` kernels must agree. For the functional
optimizers: states are plain containers that survive ``torch.load(weights_only=True)``; steps pass
``gradcheck`` with a hyperparameter-dependent learning rate; forward and reverse mode agree; and each one
that has a ``torch.optim`` twin (same kernels, in place) reproduces its trajectory to 1e-12 in float64.
"""

from __future__ import annotations

import cmath
import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from nestopt import hypergrad, optim
from nestopt.errors import InvalidArgumentError, OptimizerWarning
from nestopt.optim import _fused, functional, transforms

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


FUSED: dict[str, Callable[[list[torch.Tensor], bool], torch.optim.Optimizer]] = {
    "ComplexMomentum": lambda p, fused: optim.ComplexMomentum(
        p, lr=0.05, beta=(0.8, 0.3), alpha=cmath.rect(1.0, 0.2), weight_decay=0.01, fused=fused),
    "ComplexAdam": lambda p, fused: optim.ComplexAdam(p, lr=0.02, weight_decay=0.01, fused=fused),
    "HeavyBall": lambda p, fused: optim.HeavyBall(p, lr=0.1, momentum=-0.1, fused=fused),
    "OptimisticSGD": lambda p, fused: optim.OptimisticSGD(p, lr=0.04, fused=fused),
    "OptimisticAdam": lambda p, fused: optim.OptimisticAdam(p, lr=0.02, fused=fused),
}  # fmt: skip
SLOW = pytest.mark.slow  # each compiles a kernel (seconds to tens of seconds on a CPU)


@pytest.mark.parametrize(
    "name", [n if n in ("ComplexMomentum", "ComplexAdam") else pytest.param(n, marks=SLOW) for n in sorted(FUSED)]
)
def test_fused_matches_for_loop(name: str, monkeypatch) -> None:
    """fused=True (torch.compile of the for-loop kernel) takes the same steps, through LR changes."""
    monkeypatch.setattr(_fused, "_FUSED", {})
    results = []
    for fused in (True, False):
        params = quad_params(torch.float64)
        opt = FUSED[name](params, fused)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
        for _ in range(4):
            run(opt, params, quadratic, 3)
            sched.step()
        results.append(torch.cat([p.detach().reshape(-1) for p in params]))
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-14)
    (step,) = _fused._FUSED.values()
    if step.error is not None:
        pytest.skip(f"torch.compile is unavailable here, the fallback ran: {step.error}")


def test_fused_falls_back_with_a_warning(monkeypatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no compiler")

    monkeypatch.setattr(_fused, "_FUSED", {})
    monkeypatch.setattr(torch, "compile", broken)
    results = []
    for fused in (True, False):
        params = quad_params(torch.float64)
        opt = optim.HeavyBall(params, lr=0.1, momentum=0.5, fused=fused)
        if fused:
            with pytest.warns(OptimizerWarning, match="no compiler"):
                run(opt, params, quadratic, 1)
        run(opt, params, quadratic, 5 if fused else 6)
        results.append(torch.cat([p.detach().reshape(-1) for p in params]))
    assert torch.equal(results[0], results[1])


def test_fused_and_foreach_together_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="fused"):
        optim.ComplexMomentum([torch.zeros(2, requires_grad=True)], lr=0.1, foreach=True, fused=True)
    with pytest.raises(InvalidArgumentError, match="fused"):
        optim.ComplexAdam([torch.zeros(2, requires_grad=True)], fused="yes")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# Functional optimizers: the same problems and checks, plus what only they have (state as plain containers,
# differentiability) and a trajectory check against the torch.optim twin that runs the same kernels in place.


@dataclass(frozen=True)
class FunctionalEntry:
    make: Callable[[Any], functional.FunctionalOptimizer]  # lr (number or function of hparams) -> optimizer
    quad_lr: float
    rosen_lr: float
    quad_tol: float
    twin: Callable[[list[torch.Tensor], float], torch.optim.Optimizer] | None = None


BETA = cmath.rect(0.8, math.pi / 16)
FUNCTIONAL: dict[str, FunctionalEntry] = {
    "sgd": FunctionalEntry(lambda lr: functional.sgd(lr), 0.1, 1.5e-3, 1e-8,
                           lambda p, lr: torch.optim.SGD(p, lr=lr)),
    "sgd(momentum)": FunctionalEntry(lambda lr: functional.sgd(lr, momentum=0.5), 0.05, 1e-3, 1e-8,
                                     lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.5)),
    "sgd(nesterov)": FunctionalEntry(lambda lr: functional.sgd(lr, momentum=0.5, nesterov=True), 0.05, 1e-3, 1e-8,
                                     lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.5, nesterov=True)),
    "sgd(negative momentum)": FunctionalEntry(lambda lr: functional.sgd(lr, momentum=-0.1), 0.1, 1.5e-3, 1e-8,
                                              lambda p, lr: optim.HeavyBall(p, lr=lr, momentum=-0.1)),
    "adam": FunctionalEntry(lambda lr: functional.adam(lr, eps_root=0.0), 0.02, 1e-2, 1e-4,
                            lambda p, lr: torch.optim.Adam(p, lr=lr)),
    "adamw": FunctionalEntry(lambda lr: functional.adamw(lr, weight_decay=1e-3, eps_root=0.0), 0.02, 1e-2, 1e-4,
                             lambda p, lr: torch.optim.AdamW(p, lr=lr, weight_decay=1e-3)),
    "rmsprop": FunctionalEntry(lambda lr: functional.rmsprop(lr, eps_root=0.0), 0.01, 1e-3, 1e-4,
                               lambda p, lr: torch.optim.RMSprop(p, lr=lr)),
    "rmsprop(centered, momentum)": FunctionalEntry(
        lambda lr: functional.rmsprop(lr, momentum=0.5, centered=True, eps_root=0.0), 0.003, 1e-3, 1e-4,
        lambda p, lr: torch.optim.RMSprop(p, lr=lr, momentum=0.5, centered=True)),
    "complex_momentum": FunctionalEntry(lambda lr: functional.complex_momentum(lr, beta=BETA), 0.05, 2e-3, 1e-8,
                                        lambda p, lr: optim.ComplexMomentum(p, lr=lr, beta=BETA)),
    "complex_momentum(complex alpha)": FunctionalEntry(
        lambda lr: functional.complex_momentum(lr, beta=(0.7, 0.3), alpha=cmath.rect(1.0, 0.2)), 0.05, 1.5e-3, 1e-8,
        lambda p, lr: optim.ComplexMomentum(p, lr=lr, beta=(0.7, 0.3), alpha=cmath.rect(1.0, 0.2))),
    "complex_adam": FunctionalEntry(lambda lr: functional.complex_adam(lr, eps_root=0.0), 0.02, 1e-2, 1e-4,
                                    lambda p, lr: optim.ComplexAdam(p, lr=lr)),
    "optimistic_sgd": FunctionalEntry(lambda lr: functional.optimistic_sgd(lr), 0.04, 6.5e-4, 1e-8,
                                      lambda p, lr: optim.OptimisticSGD(p, lr=lr)),
    "optimistic_adam": FunctionalEntry(lambda lr: functional.optimistic_adam(lr, eps_root=0.0), 0.02, 1e-2, 1e-4,
                                       lambda p, lr: optim.OptimisticAdam(p, lr=lr)),
    "chain(clip, adam, schedule)": FunctionalEntry(
        lambda lr: functional.from_transform(transforms.chain(
            transforms.clip_by_global_norm(10.0), transforms.scale_by_adam(),
            transforms.scale_by_schedule(lambda t: 1.0 / (1.0 + 1e-3 * t)), transforms.scale_by_learning_rate(lr))),
        0.02, 1e-2, 1e-4),
}  # fmt: skip


def quad_tree(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {"a": torch.zeros(2, dtype=dtype), "b": torch.zeros(2, 2, dtype=dtype)}


def quad_grad(w: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    h, c = CURVATURE.to(w["a"].dtype), SHIFT.to(w["a"].dtype)
    return {"a": h[:2] * w["a"] - c[:2], "b": (h[2:] * w["b"].reshape(-1) - c[2:]).reshape(2, 2)}


def rosen_grad(w: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    x, y = w["w"][0], w["w"][1]
    return {"w": torch.stack([-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)])}


def run_functional(opt, params, grad_fn, steps, state=None, hparams=None):
    state = opt.init(params) if state is None else state
    for _ in range(steps):
        params, state = opt.update(grad_fn(params), state, params, hparams or {})
    return params, state


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(FUNCTIONAL))
def test_functional_quadratic(name: str, dtype: torch.dtype) -> None:
    entry = FUNCTIONAL[name]
    w, _ = run_functional(entry.make(entry.quad_lr), quad_tree(dtype), quad_grad, 400)
    assert all(v.dtype == dtype for v in w.values())
    final = quadratic([w["a"], w["b"]])
    tol = max(entry.quad_tol, 1e-5 if dtype == torch.float32 else 0.0)
    assert float(final) - quadratic_min(dtype) <= tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(FUNCTIONAL))
def test_functional_rosenbrock(name: str, dtype: torch.dtype) -> None:
    entry = FUNCTIONAL[name]
    w0 = {"w": torch.tensor([-1.0, 1.0], dtype=dtype)}
    start = float(rosenbrock([w0["w"]]))
    w, _ = run_functional(entry.make(entry.rosen_lr), w0, rosen_grad, 2500)
    final = float(rosenbrock([w["w"]]))
    assert w["w"].dtype == dtype and math.isfinite(final)
    assert final <= start / 10, f"{name}: Rosenbrock loss {start:.3g} -> {final:.3g}"


def _plain_containers(x: Any) -> bool:
    if isinstance(x, dict):
        return all(isinstance(k, str) and _plain_containers(v) for k, v in x.items())
    if isinstance(x, list | tuple):
        return type(x) in (list, tuple) and all(_plain_containers(v) for v in x)
    return isinstance(x, torch.Tensor | int | float)


@pytest.mark.parametrize("name", sorted(FUNCTIONAL))
def test_functional_state_is_plain_and_checkpoints(name: str, tmp_path) -> None:
    entry = FUNCTIONAL[name]
    opt = entry.make(entry.quad_lr)
    w, state = run_functional(opt, quad_tree(torch.float64), quad_grad, 7)
    assert _plain_containers(state)
    leaves = torch.utils._pytree.tree_flatten(state)[0]
    assert all(isinstance(x, torch.Tensor | int | float) for x in leaves)
    torch.save({"params": w, "state": state}, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    expected, _ = run_functional(opt, w, quad_grad, 9, state)
    got, _ = run_functional(opt, loaded["params"], quad_grad, 9, loaded["state"])
    for k in expected:
        assert torch.equal(got[k], expected[k])


def _twin_loss(w: dict[str, torch.Tensor]) -> torch.Tensor:
    a, b = w["a"], w["b"]
    return ((a - 1.0) ** 2 * torch.tensor([1.0, 3.0], dtype=a.dtype)).sum() + (b**4).sum() + (a.sum() * b).sum()


TWINS = sorted(name for name, e in FUNCTIONAL.items() if e.twin is not None)


@pytest.mark.parametrize("name", TWINS)
def test_functional_trajectory_equals_its_torch_optim_twin(name: str) -> None:
    """The out-of-place kernels (here unrolled step by step) and the in-place ones give the same iterates."""
    entry, lr, steps = FUNCTIONAL[name], 0.01, 30
    g = torch.Generator().manual_seed(5)
    w0 = {
        "a": torch.randn(2, generator=g, dtype=torch.float64),
        "b": torch.randn(2, 3, generator=g, dtype=torch.float64),
    }
    opt, w, state = entry.make(lr), dict(w0), None
    ours = []
    for _ in range(steps):
        w, state = run_functional(opt, w, torch.func.grad(_twin_loss), 1, state)
        ours.append(torch.cat([v.reshape(-1) for v in w.values()]))
    params = [v.clone().requires_grad_(True) for v in w0.values()]
    assert entry.twin is not None
    twin = entry.twin(params, lr)
    ref = []
    for _ in range(steps):
        twin.zero_grad()
        _twin_loss(dict(zip(w0, params))).backward()
        twin.step()
        ref.append(torch.cat([p.detach().reshape(-1) for p in params]))
    torch.testing.assert_close(torch.stack(ours), torch.stack(ref), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", TWINS)
def test_hypergrad_unrolled_reproduces_the_twin(name: str) -> None:
    """hypergrad.unrolled (steps with create_graph) ends where the in-place optimizer ends."""
    entry, lr, steps = FUNCTIONAL[name], 0.01, 12
    w0 = {"a": torch.tensor([0.3, -0.2], dtype=torch.float64), "b": torch.full((2, 3), 0.5, dtype=torch.float64)}
    h = {"log_lr": torch.tensor(math.log(lr), dtype=torch.float64)}
    res = hypergrad.unrolled(
        lambda p, hp, b: _twin_loss(p), lambda p, hp, b: _twin_loss(p), w0, h, [None] * steps, None,
        optimizer=entry.make(lambda hp: hp["log_lr"].exp()), steps=steps,
    )  # fmt: skip
    params = [v.clone().requires_grad_(True) for v in w0.values()]
    assert entry.twin is not None
    twin = entry.twin(params, lr)
    for _ in range(steps):
        twin.zero_grad()
        _twin_loss(dict(zip(w0, params))).backward()
        twin.step()
    for k, p in zip(w0, params):
        torch.testing.assert_close(res.params[k], p.detach(), rtol=1e-12, atol=1e-12)
    assert torch.isfinite(res.grads["log_lr"])


@pytest.mark.parametrize("name", sorted(FUNCTIONAL))
def test_functional_steps_pass_gradcheck(name: str) -> None:
    """Three steps as a function of the start point and of a hyperparameter-dependent learning rate."""
    entry = FUNCTIONAL[name]
    opt = entry.make(lambda hp: hp["log_lr"].exp())
    assert opt.uses_hparams

    def unroll(a: torch.Tensor, b: torch.Tensor, log_lr: torch.Tensor) -> tuple[torch.Tensor, ...]:
        w = {"a": a, "b": b}
        w, state = run_functional(opt, w, torch.func.grad(_twin_loss), 3, hparams={"log_lr": log_lr})
        return w["a"], w["b"]

    g = torch.Generator().manual_seed(1)
    args = (torch.randn(2, generator=g, dtype=torch.float64).requires_grad_(),
            torch.randn(2, 3, generator=g, dtype=torch.float64).requires_grad_(),
            torch.tensor(math.log(0.05), dtype=torch.float64, requires_grad=True))  # fmt: skip
    assert torch.autograd.gradcheck(unroll, args, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(FUNCTIONAL))
def test_functional_forward_mode_equals_reverse_mode(name: str) -> None:
    """hypergrad.forward (torch.func.jvp under vmap) and hypergrad.unrolled agree for every optimizer."""
    entry = FUNCTIONAL[name]
    opt = entry.make(lambda hp: hp["log_lr"].exp())
    w0 = {"a": torch.tensor([0.3, -0.2], dtype=torch.float64), "b": torch.full((2, 3), 0.5, dtype=torch.float64)}
    h = {"log_lr": torch.tensor(math.log(0.02), dtype=torch.float64)}

    def inner(p, hp, b):
        return _twin_loss(p)

    def outer(p, hp, b):
        return (p["a"] ** 2).sum() + p["b"].sum()

    args = (inner, outer, w0, h, [None] * 6, None)
    fwd = hypergrad.forward(*args, optimizer=opt, steps=6)
    rev = hypergrad.unrolled(*args, optimizer=opt, steps=6)
    torch.testing.assert_close(fwd.grads["log_lr"], rev.grads["log_lr"], rtol=1e-10, atol=1e-12)
