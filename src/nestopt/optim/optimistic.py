"""Optimistic gradient methods: step with the current direction plus its change since the last step.

Optimistic gradient descent (Popov, 1980; Daskalakis et al., 2018) extrapolates from the previous gradient,

.. math::  w_{t+1} = w_t - \\mathrm{lr}\\,(2 g_t - g_{t-1}),

which makes bilinear games converge at the cost of one gradient per step (extragradient needs two).
Optimistic Adam applies the same correction to Adam's normalized direction
:math:`u_t = \\hat m_t / (\\sqrt{\\hat v_t} + \\epsilon)`: :math:`w_{t+1} = w_t - \\mathrm{lr}\\,(2u_t - u_{t-1})`.
On the first step the previous direction is taken equal to the current one, so the first step is a plain
SGD (Adam) step; :mod:`nestopt.games.dynamics` uses the same convention.

References:
    Daskalakis, Ilyas, Syrgkanis, Zeng. Training GANs with Optimism. ICLR 2018.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from nestopt._validate import nonnegative
from nestopt.errors import InvalidArgumentError
from nestopt.optim._common import (
    ValidatedOptimizer,
    check_coefficient,
    check_lr,
    state_buffers,
    use_foreach,
    with_weight_decay,
)

__all__ = ["OptimisticAdam", "OptimisticSGD", "optimistic_adam", "optimistic_sgd"]

Params = Iterable[Tensor] | Iterable[dict[str, Any]]


class OptimisticSGD(ValidatedOptimizer):
    """Optimistic gradient descent: :math:`w \\leftarrow w - \\mathrm{lr}\\,(2 g_t - g_{t-1})`.

    Args:
        params: parameters or parameter groups.
        lr: the step size.
        weight_decay: L2 penalty added to the gradient.
        maximize: ascend instead of descend.
        foreach: use the fused ``torch._foreach_*`` kernels (default: only on CUDA).

    Example:
        >>> import torch
        >>> from nestopt.optim import OptimisticSGD
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = OptimisticSGD([w], lr=0.1)
        >>> for _ in range(200):
        ...     opt.zero_grad()
        ...     (w ** 2).sum().backward()
        ...     opt.step()
        >>> bool(w.abs().max() < 1e-4)
        True
    """

    def __init__(
        self,
        params: Params,
        lr: float,
        *,
        weight_decay: float = 0.0,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        defaults = {
            "lr": check_lr(lr),
            "weight_decay": nonnegative("weight_decay", weight_decay),
            "maximize": bool(maximize),
            "foreach": foreach,
        }
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        group["lr"] = check_lr(group["lr"])
        group["weight_decay"] = nonnegative("weight_decay", group["weight_decay"])

    def _step_group(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> None:
        foreach = use_foreach(group, params)
        grads = with_weight_decay(params, grads, group["weight_decay"], foreach)
        prev = []
        for p, g in zip(params, grads):
            state = self.state[p]
            if not state:
                state["previous_grad"] = g.detach().clone(memory_format=torch.preserve_format)
            prev.append(state["previous_grad"])
        optimistic_sgd(params, grads, prev, lr=group["lr"], foreach=foreach)


def optimistic_sgd(
    params: list[Tensor], grads: list[Tensor], previous: list[Tensor], *, lr: float, foreach: bool = False
) -> None:
    """The kernel of :class:`OptimisticSGD`; ``previous`` (the last gradients) is overwritten with ``grads``."""
    if foreach:
        torch._foreach_add_(params, grads, alpha=-2 * lr)
        torch._foreach_add_(params, previous, alpha=lr)
        torch._foreach_copy_(previous, grads)
        return
    for p, g, q in zip(params, grads, previous):
        p.add_(g, alpha=-2 * lr).add_(q, alpha=lr)
        q.copy_(g)


class OptimisticAdam(ValidatedOptimizer):
    """Optimistic Adam (Daskalakis et al., 2018): Adam's direction with the optimistic correction.

    .. math::  u_t = \\frac{\\hat m_t}{\\sqrt{\\hat v_t} + \\epsilon}, \\qquad w_{t+1} = w_t - \\mathrm{lr}\\,(2 u_t - u_{t-1})

    Args:
        params: parameters or parameter groups.
        lr: the step size.
        betas: Adam's ``(beta1, beta2)``, both real in ``[0, 1)``.
        eps: added to the denominator.
        weight_decay: L2 penalty added to the gradient.
        maximize: ascend instead of descend.
        foreach: use the fused ``torch._foreach_*`` kernels (default: only on CUDA).

    Example:
        >>> import torch
        >>> from nestopt.optim import OptimisticAdam
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = OptimisticAdam([w], lr=0.02)
        >>> for _ in range(500):
        ...     opt.zero_grad()
        ...     (w ** 2).sum().backward()
        ...     opt.step()
        >>> bool(w.abs().max() < 0.05)
        True
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        *,
        weight_decay: float = 0.0,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        defaults = {
            "lr": check_lr(lr),
            "betas": _real_betas(betas),
            "eps": nonnegative("eps", eps),
            "weight_decay": nonnegative("weight_decay", weight_decay),
            "maximize": bool(maximize),
            "foreach": foreach,
        }
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        group["lr"] = check_lr(group["lr"])
        group["betas"] = _real_betas(group["betas"])
        group["eps"] = nonnegative("eps", group["eps"])
        group["weight_decay"] = nonnegative("weight_decay", group["weight_decay"])

    def _step_group(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> None:
        (avg, sq, prev), steps = state_buffers(
            self, params, ("exp_avg", "exp_avg_sq", "previous_direction"), count_steps=True
        )
        beta1, beta2 = group["betas"]
        optimistic_adam(
            params,
            grads,
            avg,
            sq,
            prev,
            steps,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            foreach=use_foreach(group, params),
        )


def _real_betas(betas: Any) -> tuple[float, float]:
    if not isinstance(betas, tuple | list) or len(betas) != 2:
        raise InvalidArgumentError(f"Invalid betas: {betas!r}; expected (beta1, beta2)")
    out = []
    for name, b in zip(("beta1", "beta2"), betas):
        value = check_coefficient(b, name, allow_complex=False).real
        if not 0.0 <= value < 1.0:
            raise InvalidArgumentError(f"Invalid {name}: {name}={b!r}; it must be in [0, 1)")
        out.append(value)
    return out[0], out[1]


def optimistic_adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avg: list[Tensor],
    exp_avg_sq: list[Tensor],
    previous: list[Tensor],
    steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    foreach: bool = False,
) -> None:
    """The kernel of :class:`OptimisticAdam`; ``steps`` are the counts after this step."""
    grads = with_weight_decay(params, grads, weight_decay, foreach)
    bias1 = [1 - beta1**t for t in steps]
    bias2 = [math.sqrt(1 - beta2**t) for t in steps]
    if foreach:
        torch._foreach_mul_(exp_avg, beta1)
        torch._foreach_add_(exp_avg, grads, alpha=1 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, bias2)
        torch._foreach_add_(denom, eps)
        direction = torch._foreach_div(exp_avg, denom)
        torch._foreach_div_(direction, bias1)
        for q, t, d in zip(previous, steps, direction):
            if t == 1:
                q.copy_(d)
        torch._foreach_add_(params, direction, alpha=-2 * lr)
        torch._foreach_add_(params, previous, alpha=lr)
        torch._foreach_copy_(previous, direction)
        return
    for p, g, m, v, q, b1, b2, t in zip(params, grads, exp_avg, exp_avg_sq, previous, bias1, bias2, steps):
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        d = (m / (v.sqrt() / b2).add_(eps)).div_(b1)
        if t == 1:
            q.copy_(d)
        p.add_(d, alpha=-2 * lr).add_(q, alpha=lr)
        q.copy_(d)
