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

from collections.abc import Iterable
from typing import Any

from torch import Tensor

from nestopt._validate import nonnegative
from nestopt.optim import _kernels as K
from nestopt.optim._checks import check_betas, check_lr
from nestopt.optim._common import ValidatedOptimizer, one_or_list, state_buffers
from nestopt.optim._fused import run
from nestopt.optim._ops import Ops

__all__ = ["OptimisticAdam", "OptimisticSGD", "optimistic_adam", "optimistic_sgd"]

Params = Iterable[Tensor] | Iterable[dict[str, Any]]


class OptimisticSGD(ValidatedOptimizer):
    """Optimistic gradient descent: :math:`w \\leftarrow w - \\mathrm{lr}\\,(2 g_t - g_{t-1})`.

    Args:
        params: parameters or parameter groups.
        lr: the step size.
        weight_decay: L2 penalty added to the gradient.
        maximize: ascend instead of descend.
        foreach: use the ``torch._foreach_*`` kernels (default: only on CUDA).
        fused: one ``torch.compile``-fused pass per tensor (see :class:`~nestopt.optim.ComplexMomentum`).

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
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": check_lr(lr),
            "weight_decay": nonnegative("weight_decay", weight_decay),
            "maximize": bool(maximize),
            "foreach": foreach,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        group["lr"] = check_lr(group["lr"])
        group["weight_decay"] = nonnegative("weight_decay", group["weight_decay"])

    def _step_group(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> None:
        first = [not self.state[p] for p in params]
        (prev,), _ = state_buffers(self, params, ("previous_grad",))
        optimistic_sgd(
            params,
            grads,
            prev,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            first=first,
            **self._backend(group, params),
        )


def optimistic_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    previous: list[Tensor],
    *,
    lr: float,
    weight_decay: float = 0.0,
    foreach: bool = False,
    fused: bool = False,
    first: list[bool] | None = None,
) -> None:
    """The in-place step of :class:`OptimisticSGD`; ``previous`` (the last gradients) is overwritten with
    this step's. ``first`` marks tensors on their first step, whose previous gradient is taken equal to the
    current one (default: none)."""
    run(
        _optimistic_sgd_step, params, grads, previous, foreach=foreach, fused=fused,
        lr=lr, strength=_strengths(first or [False] * len(params)), weight_decay=weight_decay,
    )  # fmt: skip


def _strengths(first: list[bool]) -> Any:
    return one_or_list([0.0 if f else 1.0 for f in first])


def _optimistic_sgd_step(
    ops: Ops, params: list[Tensor], grads: list[Tensor], previous: list[Tensor], *, lr: Any, strength: Any,
    weight_decay: Any,
) -> None:  # fmt: skip
    grads = K.add_decayed_weights(ops, grads, params, weight_decay)
    d, _ = K.optimism(ops, grads, previous, strength)
    K.apply(ops, params, d, -lr)


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
        foreach: use the ``torch._foreach_*`` kernels (default: only on CUDA).
        fused: one ``torch.compile``-fused pass per tensor (see :class:`~nestopt.optim.ComplexMomentum`).

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
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": check_lr(lr),
            "betas": check_betas(betas, complex_beta1=False),
            "eps": nonnegative("eps", eps),
            "weight_decay": nonnegative("weight_decay", weight_decay),
            "maximize": bool(maximize),
            "foreach": foreach,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        group["lr"] = check_lr(group["lr"])
        group["betas"] = check_betas(group["betas"], complex_beta1=False)
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
            **self._backend(group, params),
        )


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
    fused: bool = False,
) -> None:
    """The in-place step of :class:`OptimisticAdam`; ``steps`` are the counts after this step."""
    a, _, s = zip(*(K.adam_corrections((beta1, 0.0), beta2, t) for t in steps))
    run(
        _optimistic_adam_step, params, grads, exp_avg, exp_avg_sq, previous, foreach=foreach, fused=fused,
        lr=lr, beta1=beta1, beta2=beta2, a=one_or_list(list(a)), s=one_or_list(list(s)), eps=eps,
        strength=_strengths([t == 1 for t in steps]), weight_decay=weight_decay,
    )  # fmt: skip


def _optimistic_adam_step(
    ops: Ops, params: list[Tensor], grads: list[Tensor], m: list[Tensor], v: list[Tensor], previous: list[Tensor],
    *, lr: Any, beta1: Any, beta2: Any, a: Any, s: Any, eps: Any, strength: Any, weight_decay: Any,
) -> None:  # fmt: skip
    grads = K.add_decayed_weights(ops, grads, params, weight_decay)
    m, _, v = K.adam_moments(ops, grads, m, None, v, (beta1, 0.0), beta2)
    d = K.adam_direction(ops, m, None, v, (a, 0.0, s), eps)
    d, _ = K.optimism(ops, d, previous, strength)
    K.apply(ops, params, d, -lr)
