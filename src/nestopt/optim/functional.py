"""Differentiable functional optimizers for unrolled hypergradients.

A :class:`FunctionalOptimizer` is a pair ``(init, update)`` in the style of optax, except that ``update``
returns the new parameters directly::

    state = opt.init(params)
    params, state = opt.update(grads, state, params, hparams)

Every operation is an ordinary differentiable tensor operation (no in-place updates), so gradients flow
through a whole unrolled trajectory to the hyperparameters, in reverse mode (autograd) and in forward mode
(``torch.func.jvp``). A learning rate may be a float, a tensor, or a function of the hyperparameters
returning a scalar tensor or a tree of per-parameter rates, e.g. ``lr=lambda h: h["log_lr"].exp()``:
that is how a learning rate becomes a hyperparameter.

Example:
    >>> import torch
    >>> from nestopt.optim import functional
    >>> opt = functional.sgd(lr=lambda h: h["lr"], momentum=0.9)
    >>> params, hparams = {"w": torch.ones(2)}, {"lr": torch.tensor(0.1)}
    >>> state = opt.init(params)
    >>> params, state = opt.update({"w": torch.ones(2)}, state, params, hparams)
    >>> params["w"]
    tensor([0.9000, 0.9000])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nestopt.errors import InvalidArgumentError
from nestopt.tree import Tree

__all__ = ["FunctionalOptimizer", "LearningRate", "adam", "sgd"]

LearningRate = float | Tensor | Callable[[Tree], "Tensor | Tree"]
State = dict[str, Any]


@dataclass(frozen=True)
class FunctionalOptimizer:
    """A differentiable optimizer: ``init(params) -> state`` and
    ``update(grads, state, params, hparams) -> (new_params, new_state)``."""

    name: str
    init: Callable[[Tree], State]
    update: Callable[[Tree, State, Tree, Tree], tuple[Tree, State]]
    uses_hparams: bool = False
    """Whether the update reads ``hparams`` (a learning rate given as a function of them)."""


def _check_lr(lr: LearningRate) -> None:
    if callable(lr):
        return
    value = float(lr) if isinstance(lr, float | int) else None
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise InvalidArgumentError(f"lr given as a tensor must have one element, got shape {tuple(lr.shape)}")
        value = float(lr.detach())
    if value is None or not math.isfinite(value) or value < 0.0:
        raise InvalidArgumentError(f"lr must be a finite non-negative number, a tensor or a callable, got {lr!r}")


def _resolve_lr(lr: LearningRate, hparams: Tree, params: Tree) -> Tree | Tensor | float:
    if not callable(lr):
        return lr
    value = lr(hparams)
    if isinstance(value, dict):
        missing = sorted(set(params) - set(value))
        if missing:
            raise InvalidArgumentError(f"the per-parameter learning rates returned by lr lack keys {missing}")
    return value


def _lr_for(lr: Tree | Tensor | float, key: str) -> Tensor | float:
    return lr[key] if isinstance(lr, dict) else lr


def sgd(lr: LearningRate, momentum: float = 0.0, *, nesterov: bool = False) -> FunctionalOptimizer:
    """Gradient descent with optional heavy-ball or Nesterov momentum (torch's ``SGD`` convention).

    .. math::  b_{t+1} = \\mu b_t + g_t, \\qquad w_{t+1} = w_t - \\eta\\, b_{t+1}
               \\quad (\\text{Nesterov: } w_{t+1} = w_t - \\eta (g_t + \\mu b_{t+1}))

    Args:
        lr: the step size :math:`\\eta` (float, tensor, or function of the hyperparameters).
        momentum: :math:`\\mu`; any finite real number (negative momentum is allowed).
        nesterov: use Nesterov momentum.
    """
    _check_lr(lr)
    if not math.isfinite(momentum):
        raise InvalidArgumentError(f"momentum must be finite, got {momentum!r}")
    if nesterov and momentum == 0.0:
        raise InvalidArgumentError("nesterov=True needs a non-zero momentum")

    def init(params: Tree) -> State:
        if momentum == 0.0:
            return {}
        return {"momentum": {k: torch.zeros_like(v) for k, v in params.items()}}

    def update(grads: Tree, state: State, params: Tree, hparams: Tree) -> tuple[Tree, State]:
        rate = _resolve_lr(lr, hparams, params)
        if momentum == 0.0:
            return {k: p - _lr_for(rate, k) * grads[k] for k, p in params.items()}, state
        buf = {k: momentum * state["momentum"][k] + grads[k] for k in params}
        step = {k: grads[k] + momentum * buf[k] for k in params} if nesterov else buf
        return {k: p - _lr_for(rate, k) * step[k] for k, p in params.items()}, {"momentum": buf}

    name = f"sgd(lr={lr if not callable(lr) else 'fn'}, momentum={momentum}{', nesterov' if nesterov else ''})"
    return FunctionalOptimizer(name, init, update, uses_hparams=callable(lr))


def adam(
    lr: LearningRate,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    eps_root: float = 1e-16,
) -> FunctionalOptimizer:
    """Adam with bias correction (Kingma & Ba, 2015), differentiable end to end.

    .. math::  m_t = b_1 m_{t-1} + (1-b_1) g_t, \\quad v_t = b_2 v_{t-1} + (1-b_2) g_t^2, \\quad
               w_t = w_{t-1} - \\eta\\, \\frac{m_t / (1-b_1^t)}{\\sqrt{v_t/(1-b_2^t) + \\epsilon_{root}} + \\epsilon}

    ``eps_root`` (inside the square root) keeps the derivative of :math:`\\sqrt{v}` finite where a gradient
    entry is exactly zero; set it to ``0.0`` to match ``torch.optim.Adam`` step for step.
    """
    _check_lr(lr)
    for name, value in (("b1", b1), ("b2", b2)):
        if not 0.0 <= value < 1.0:
            raise InvalidArgumentError(f"{name} must be in [0, 1), got {value!r}")
    if eps < 0.0 or eps_root < 0.0:
        raise InvalidArgumentError(f"eps and eps_root must be non-negative, got eps={eps!r}, eps_root={eps_root!r}")

    def init(params: Tree) -> State:
        return {
            "step": 0,
            "m": {k: torch.zeros_like(v) for k, v in params.items()},
            "v": {k: torch.zeros_like(v) for k, v in params.items()},
        }

    def update(grads: Tree, state: State, params: Tree, hparams: Tree) -> tuple[Tree, State]:
        rate = _resolve_lr(lr, hparams, params)
        t = state["step"] + 1
        m = {k: b1 * state["m"][k] + (1 - b1) * grads[k] for k in params}
        v = {k: b2 * state["v"][k] + (1 - b2) * grads[k] * grads[k] for k in params}
        c1, c2 = 1 - b1**t, 1 - b2**t
        new = {
            k: p - _lr_for(rate, k) * (m[k] / c1) / (torch.sqrt(v[k] / c2 + eps_root) + eps) for k, p in params.items()
        }
        return new, {"step": t, "m": m, "v": v}

    return FunctionalOptimizer(f"adam(lr={lr if not callable(lr) else 'fn'})", init, update, uses_hparams=callable(lr))
