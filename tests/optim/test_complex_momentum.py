"""ComplexMomentum and ComplexAdam against torch's SGD/Adam and against complex-tensor references."""

from __future__ import annotations

import cmath
import math
import warnings

import pytest
import torch

from nestopt import optim
from nestopt.errors import InvalidArgumentError, NestoptWarning, OptimizerWarning, UnsupportedError


def _loss(params: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    w = torch.cat([p.reshape(-1) for p in params])
    return ((w - target) ** 2 * torch.arange(1, w.numel() + 1, dtype=w.dtype)).sum() + (w**4).sum()


def _trajectory(opt_cls, steps=30, dtype=torch.float64, **kw):
    g = torch.Generator().manual_seed(3)
    params = [torch.randn(3, generator=g, dtype=dtype).requires_grad_(), torch.randn(2, 2, generator=g, dtype=dtype)]
    params[1].requires_grad_()
    target = torch.randn(7, generator=g, dtype=dtype)
    opt = opt_cls(params, **kw)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        _loss(params, target).backward()
        opt.step()
        out.append(torch.cat([p.detach().reshape(-1) for p in params]))
    return torch.stack(out)


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_real_beta_equals_torch_sgd_momentum(beta: float, weight_decay: float) -> None:
    ours = _trajectory(optim.ComplexMomentum, lr=0.01, beta=beta, weight_decay=weight_decay)
    ref = _trajectory(torch.optim.SGD, lr=0.01, momentum=beta, weight_decay=weight_decay)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_real_beta_equals_torch_sgd_maximize() -> None:
    ours = _trajectory(optim.ComplexMomentum, lr=0.01, beta=0.5, maximize=True, steps=5)
    ref = _trajectory(torch.optim.SGD, lr=0.01, momentum=0.5, maximize=True, steps=5)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def _complex_reference(steps, lr, beta, alpha):
    """The paper's update with a complex tensor buffer, written out directly."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(3, generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn(2, 2, generator=g, dtype=torch.float64).requires_grad_()
    target = torch.randn(7, generator=g, dtype=torch.float64)
    mus = [torch.zeros(3, dtype=torch.complex128), torch.zeros(2, 2, dtype=torch.complex128)]
    out = []
    for _ in range(steps):
        grads = torch.autograd.grad(_loss([a, b], target), [a, b])
        with torch.no_grad():
            for i, (p, gr) in enumerate(zip([a, b], grads)):
                mus[i] = beta * mus[i] - gr
                p += (lr * alpha * mus[i]).real
        out.append(torch.cat([a.detach().reshape(-1), b.detach().reshape(-1)]))
    return torch.stack(out)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("alpha", [1.0, cmath.rect(1.0, -0.4)])
def test_complex_beta_matches_complex_tensor_reference(foreach: bool, alpha: complex) -> None:
    beta = cmath.rect(0.8, math.pi / 5)
    ours = _trajectory(optim.ComplexMomentum, lr=0.01, beta=beta, alpha=alpha, foreach=foreach)
    ref = _complex_reference(30, 0.01, beta, alpha)
    torch.testing.assert_close(ours, ref, rtol=1e-11, atol=1e-12)


def test_magnitude_phase_tuple_equals_complex() -> None:
    a = _trajectory(optim.ComplexMomentum, lr=0.01, beta=(0.8, 0.3), steps=5)
    b = _trajectory(optim.ComplexMomentum, lr=0.01, beta=cmath.rect(0.8, 0.3), steps=5)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_parameters_stay_real_and_buffers_are_real_pairs() -> None:
    w = torch.randn(4, requires_grad=True)
    opt = optim.ComplexMomentum([w], lr=0.1, beta=0.5j)
    (w**2).sum().backward()
    opt.step()
    state = opt.state[w]
    assert w.dtype == torch.float32
    assert set(state) == {"momentum_real", "momentum_imag"}
    assert state["momentum_real"].dtype == torch.float32


@pytest.mark.parametrize("beta1", [0.0, 0.9])
@pytest.mark.parametrize("foreach", [False, True])
def test_complex_adam_with_real_beta1_equals_torch_adam(beta1: float, foreach: bool) -> None:
    kw = {"lr": 0.01, "betas": (beta1, 0.99), "eps": 1e-8, "weight_decay": 0.05}
    ours = _trajectory(optim.ComplexAdam, foreach=foreach, **kw)
    ref = _trajectory(torch.optim.Adam, foreach=False, **kw)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


def test_complex_adam_matches_complex_tensor_reference() -> None:
    beta1, beta2, lr, eps = cmath.rect(0.85, math.pi / 6), 0.99, 0.01, 1e-8
    g = torch.Generator().manual_seed(3)
    a = torch.randn(3, generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn(2, 2, generator=g, dtype=torch.float64).requires_grad_()
    target = torch.randn(7, generator=g, dtype=torch.float64)
    ms = [torch.zeros(3, dtype=torch.complex128), torch.zeros(2, 2, dtype=torch.complex128)]
    vs = [torch.zeros(3, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64)]
    ref = []
    for t in range(1, 31):
        grads = torch.autograd.grad(_loss([a, b], target), [a, b])
        with torch.no_grad():
            for i, (p, gr) in enumerate(zip([a, b], grads)):
                ms[i] = beta1 * ms[i] + (1 - beta1) * gr
                vs[i] = beta2 * vs[i] + (1 - beta2) * gr * gr
                mhat, vhat = ms[i] / (1 - beta1**t), vs[i] / (1 - beta2**t)
                p -= lr * mhat.real / (vhat.sqrt() + eps)
        ref.append(torch.cat([a.detach().reshape(-1), b.detach().reshape(-1)]))
    for foreach in (False, True):
        ours = _trajectory(optim.ComplexAdam, lr=lr, betas=(beta1, beta2), eps=eps, foreach=foreach)
        torch.testing.assert_close(ours, torch.stack(ref), rtol=1e-10, atol=1e-12)


def test_complex_adam_bias_correction_returns_a_constant_gradient_exactly() -> None:
    """The correction 1 / (1 - beta1^t) with the complex power (Adam with beta1 made complex, as in the paper):
    for a constant gradient g, m_t = (1 - beta1^t) g, so every step is -lr g / (|g| + eps) from the first one.
    A correction by the modulus, 1 / (1 - |beta1|^t), would not be: Re(1 - beta1^t) != 1 - |beta1|^t."""
    beta1, lr, eps = cmath.rect(0.8, math.pi / 8), 0.01, 1e-8
    g = torch.tensor([0.3, -2.0, 5.0], dtype=torch.float64)
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = optim.ComplexAdam([w], lr=lr, betas=(beta1, 0.999), eps=eps)
    for _ in range(20):
        before = w.detach().clone()
        w.grad = g.clone()
        opt.step()
        torch.testing.assert_close(w.detach() - before, -lr * g / (g.abs() + eps), rtol=1e-12, atol=1e-15)
    by_modulus = (1 - beta1**2).real / (1 - abs(beta1) ** 2)
    assert abs(by_modulus - 1) > 0.1  # the other form would have scaled the second step by this much


@pytest.mark.parametrize(
    "make",
    [
        lambda p: optim.ComplexMomentum(p, lr=0.1, beta=cmath.rect(1.0, 0.5)),
        lambda p: optim.ComplexMomentum(p, lr=0.1, beta=-1.2),
        lambda p: optim.ComplexAdam(p, lr=0.1, betas=(1.0j, 0.9)),
        lambda p: optim.HeavyBall(p, lr=0.1, momentum=-1.0),
    ],
)
def test_non_decaying_beta_warns(make) -> None:
    with pytest.warns(OptimizerWarning, match="does not decay"):
        make([torch.zeros(2, requires_grad=True)])
    assert issubclass(OptimizerWarning, NestoptWarning)


def test_decaying_beta_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optim.ComplexMomentum([torch.zeros(2, requires_grad=True)], lr=0.1, beta=0.99j)


def test_warning_also_for_added_param_group() -> None:
    opt = optim.ComplexMomentum([torch.zeros(2, requires_grad=True)], lr=0.1, beta=0.5)
    with pytest.warns(OptimizerWarning):
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "beta": 1.5j})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": float("nan"), "beta": 0.9}, "lr"),
        ({"lr": float("inf"), "beta": 0.9}, "lr"),
        ({"lr": -0.1, "beta": 0.9}, "lr"),
        ({"lr": 0.1j, "beta": 0.9}, "lr"),
        ({"lr": 0.1, "beta": complex(float("nan"), 0.0)}, "beta"),
        ({"lr": 0.1, "beta": complex(0.5, float("inf"))}, "beta"),
        ({"lr": 0.1, "beta": (0.5, float("nan"))}, "beta"),
        ({"lr": 0.1, "beta": (-0.5, 0.1)}, "magnitude"),
        ({"lr": 0.1, "beta": "0.9"}, "beta"),
        ({"lr": 0.1, "beta": 0.9, "alpha": float("nan")}, "alpha"),
        ({"lr": 0.1, "beta": 0.9, "weight_decay": -1.0}, "weight_decay"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        optim.ComplexMomentum([torch.zeros(2, requires_grad=True)], **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"betas": (0.9, 1.0)}, "beta2"),
        ({"betas": (0.9, 0.5j)}, "beta2"),
        ({"betas": (float("nan"), 0.9)}, "beta1"),
        ({"betas": (0.9,)}, "betas"),
        ({"lr": float("nan")}, "lr"),
        ({"eps": -1e-8}, "eps"),
    ],
)
def test_complex_adam_bad_arguments(kwargs, match) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        optim.ComplexAdam([torch.zeros(2, requires_grad=True)], **kwargs)


def test_bad_group_is_not_added() -> None:
    opt = optim.ComplexMomentum([torch.zeros(2, requires_grad=True)], lr=0.1, beta=0.5)
    with pytest.raises(InvalidArgumentError, match="lr"):
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "lr": float("nan")})
    assert len(opt.param_groups) == 1


def test_complex_parameters_are_refused() -> None:
    with pytest.raises(UnsupportedError, match="view_as_real"):
        optim.ComplexMomentum([torch.zeros(2, dtype=torch.complex64, requires_grad=True)], lr=0.1, beta=0.5)


def test_param_groups_with_different_betas() -> None:
    a = torch.ones(2, requires_grad=True)
    b = torch.ones(2, requires_grad=True)
    opt = optim.ComplexMomentum([{"params": [a]}, {"params": [b], "beta": (0.5, 1.0)}], lr=0.1, beta=0.5)
    assert opt.param_groups[1]["beta"] == cmath.rect(0.5, 1.0)
    for _ in range(3):
        opt.zero_grad()
        ((a**2).sum() + (b**2).sum()).backward()
        opt.step()
    assert not torch.allclose(a, b)
