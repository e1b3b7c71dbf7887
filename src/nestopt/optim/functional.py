"""Differentiable functional optimizers for unrolled hypergradients, each a chain of transforms.

A :class:`FunctionalOptimizer` is a pair ``(init, update)`` in the style of optax, except that ``update``
returns the new parameters directly::

    state = opt.init(params)
    params, state = opt.update(grads, state, params, hparams)

Every named optimizer here is a :func:`~nestopt.optim.transforms.chain` of
:mod:`~nestopt.optim.transforms` ending in :func:`~nestopt.optim.transforms.scale_by_learning_rate`, and
:func:`from_transform` turns any chain into one. Every operation is an ordinary out-of-place tensor
operation, so gradients flow through a whole unrolled trajectory to the hyperparameters, in reverse mode
(autograd) and in forward mode (``torch.func.jvp``, under ``vmap``). A learning rate may be a float, a
tensor, a per-parameter tree, or a function of the hyperparameters returning a scalar tensor or a tree,
e.g. ``lr=lambda h: h["log_lr"].exp()``: that is how a learning rate becomes a hyperparameter (momentum,
betas and weight decay take functions too).

========================  ======================================  ======================================================
optimizer                 chain                                   same steps as
========================  ======================================  ======================================================
:func:`sgd`               ``trace(momentum, nesterov)``           ``torch.optim.SGD``, :class:`~nestopt.optim.HeavyBall`
:func:`adam`              ``scale_by_adam``                       ``torch.optim.Adam``
:func:`adamw`             ``scale_by_adam, add_decayed_weights``  ``torch.optim.AdamW``
:func:`rmsprop`           ``scale_by_rms, trace(momentum)``       ``torch.optim.RMSprop``
:func:`complex_momentum`  ``scale_by_complex_momentum``           :class:`~nestopt.optim.ComplexMomentum`
:func:`complex_adam`      ``scale_by_complex_adam``               :class:`~nestopt.optim.ComplexAdam`
:func:`optimistic_sgd`    ``scale_by_optimism``                   :class:`~nestopt.optim.OptimisticSGD`
:func:`optimistic_adam`   ``scale_by_adam, scale_by_optimism``    :class:`~nestopt.optim.OptimisticAdam`
========================  ======================================  ======================================================

(each followed by ``scale_by_learning_rate(lr)``; "same steps" with ``eps_root=0``, checked to 1e-12 in
float64 by the tests).

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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nestopt.errors import InvalidArgumentError
from nestopt.optim import transforms as T
from nestopt.optim._checks import Coefficient, check_betas
from nestopt.optim._scale_by import COMPLEX_BETA1
from nestopt.optim._transform import show
from nestopt.tree import Tree

__all__ = [
    "FunctionalOptimizer",
    "LearningRate",
    "adam",
    "adamw",
    "complex_adam",
    "complex_momentum",
    "from_transform",
    "optimistic_adam",
    "optimistic_sgd",
    "rmsprop",
    "sgd",
]

LearningRate = Coefficient
State = Any


@dataclass(frozen=True)
class FunctionalOptimizer:
    """A differentiable optimizer: ``init(params) -> state`` and
    ``update(grads, state, params, hparams) -> (new_params, new_state)``."""

    name: str
    init: Callable[[Tree], State]
    update: Callable[[Tree, State, Tree, Tree], tuple[Tree, State]]
    uses_hparams: bool = False
    """Whether the update reads ``hparams`` (a coefficient given as a function of them)."""
    transform: T.Transform | None = None
    """The transform it applies (``None`` for an optimizer built from bare functions)."""


def from_transform(transform: T.Transform, *, name: str | None = None) -> FunctionalOptimizer:
    """The optimizer that applies ``transform``'s updates: ``params + updates``.

    Example:
        >>> import torch
        >>> from nestopt.optim import functional, transforms
        >>> opt = functional.from_transform(
        ...     transforms.chain(transforms.clip(1.0), transforms.scale_by_learning_rate(0.1)), name="clipped sgd")
        >>> params = {"w": torch.zeros(2)}
        >>> opt.update({"w": torch.tensor([5.0, -0.5])}, opt.init(params), params, {})[0]["w"]
        tensor([-0.1000,  0.0500])
    """
    if not isinstance(transform, T.Transform):
        raise InvalidArgumentError(f"transform must be a nestopt.optim.transforms.Transform, got {transform!r}")

    def update(grads: Tree, state: State, params: Tree, hparams: Tree) -> tuple[Tree, State]:
        updates, state = transform.update(grads, state, params, hparams)
        return T.apply_updates(params, updates), state

    return FunctionalOptimizer(name or transform.name, transform.init, update, transform.uses_hparams, transform)


def _build(name: str, *parts: T.Transform) -> FunctionalOptimizer:
    return from_transform(parts[0] if len(parts) == 1 else T.chain(*parts), name=name)


def sgd(lr: LearningRate, momentum: Coefficient = 0.0, *, nesterov: bool = False) -> FunctionalOptimizer:
    """Gradient descent with optional heavy-ball or Nesterov momentum (torch's ``SGD`` convention).

    .. math::  b_{t+1} = \\mu b_t + g_t, \\qquad w_{t+1} = w_t - \\eta\\, b_{t+1}
               \\quad (\\text{Nesterov: } w_{t+1} = w_t - \\eta (g_t + \\mu b_{t+1}))

    Args:
        lr: the step size :math:`\\eta` (float, tensor, per-parameter tree, or function of the hyperparameters).
        momentum: :math:`\\mu`; any finite real number (negative momentum is allowed), or a function of the
            hyperparameters.
        nesterov: use Nesterov momentum.

    Example:
        >>> import torch
        >>> from nestopt.optim import functional
        >>> opt = functional.sgd(lr=0.1, momentum=-0.5)
        >>> params = {"w": torch.ones(1)}
        >>> state = opt.init(params)
        >>> for _ in range(2):
        ...     params, state = opt.update({"w": torch.ones(1)}, state, params, {})
        >>> params["w"]                                   # 1 - 0.1 * 1 - 0.1 * (1 - 0.5)
        tensor([0.8500])
    """
    lr_t = T.scale_by_learning_rate(lr)
    name = f"sgd(lr={show(lr)}, momentum={show(momentum)}{', nesterov' if nesterov else ''})"
    if isinstance(momentum, int | float) and momentum == 0.0 and not nesterov:
        return _build(name, lr_t)
    return _build(name, T.trace(momentum, nesterov=nesterov), lr_t)


def adam(
    lr: LearningRate,
    b1: Coefficient = 0.9,
    b2: Coefficient = 0.999,
    eps: float = 1e-8,
    *,
    eps_root: float = 1e-16,
) -> FunctionalOptimizer:
    """Adam with bias correction (Kingma & Ba, 2015), differentiable end to end.

    .. math::  m_t = b_1 m_{t-1} + (1-b_1) g_t, \\quad v_t = b_2 v_{t-1} + (1-b_2) g_t^2, \\quad
               w_t = w_{t-1} - \\eta\\, \\frac{m_t / (1-b_1^t)}{\\sqrt{v_t/(1-b_2^t) + \\epsilon_{root}} + \\epsilon}

    ``eps_root`` (inside the square root) keeps the derivative of :math:`\\sqrt{v}` finite where a gradient
    entry is exactly zero; set it to ``0.0`` to match ``torch.optim.Adam`` step for step.

    Example:
        >>> import torch
        >>> from nestopt.optim import functional
        >>> opt = functional.adam(lr=0.1)
        >>> params = {"w": torch.ones(2)}
        >>> opt.update({"w": torch.tensor([2.0, -3.0])}, opt.init(params), params, {})[0]["w"]
        tensor([0.9000, 1.1000])
    """
    return _build(f"adam(lr={show(lr)})", T.scale_by_adam(b1, b2, eps, eps_root=eps_root), T.scale_by_learning_rate(lr))


def adamw(
    lr: LearningRate,
    b1: Coefficient = 0.9,
    b2: Coefficient = 0.999,
    eps: float = 1e-8,
    weight_decay: Coefficient = 1e-2,
    *,
    eps_root: float = 1e-16,
) -> FunctionalOptimizer:
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019): ``torch.optim.AdamW``'s step.

    .. math::  w_t = w_{t-1} - \\eta \\big(\\hat m_t / (\\sqrt{\\hat v_t + \\epsilon_{root}} + \\epsilon) + \\lambda w_{t-1}\\big)

    Args:
        lr, b1, b2, eps, eps_root: as for :func:`adam`.
        weight_decay: :math:`\\lambda` (a number, tree, or function of the hyperparameters).

    Example:
        >>> import torch
        >>> from nestopt.optim import functional
        >>> opt = functional.adamw(lr=0.1, weight_decay=0.5)
        >>> params = {"w": torch.ones(1)}
        >>> opt.update({"w": torch.zeros(1)}, opt.init(params), params, {})[0]["w"]    # decay only
        tensor([0.9500])
    """
    return _build(
        f"adamw(lr={show(lr)}, weight_decay={show(weight_decay)})",
        T.scale_by_adam(b1, b2, eps, eps_root=eps_root),
        T.add_decayed_weights(weight_decay),
        T.scale_by_learning_rate(lr),
    )


def rmsprop(
    lr: LearningRate,
    alpha: Coefficient = 0.99,
    eps: float = 1e-8,
    *,
    momentum: Coefficient = 0.0,
    centered: bool = False,
    eps_root: float = 1e-16,
) -> FunctionalOptimizer:
    """RMSprop (Tieleman & Hinton, 2012) with ``torch.optim.RMSprop``'s conventions.

    .. math::  s_t = \\alpha s_{t-1} + (1-\\alpha) g_t^2, \\quad d_t = g_t / (\\sqrt{s_t + \\epsilon_{root}} + \\epsilon),
               \\quad b_t = \\mu b_{t-1} + d_t, \\quad w_t = w_{t-1} - \\eta\\, b_t

    ``centered`` subtracts the squared running mean of the gradient from :math:`s_t`.

    Example:
        >>> import torch
        >>> from nestopt.optim import functional
        >>> opt = functional.rmsprop(lr=0.01, alpha=0.75, eps_root=0.0)
        >>> params = {"w": torch.ones(1)}
        >>> opt.update({"w": torch.full((1,), 4.0)}, opt.init(params), params, {})[0]["w"]   # 1 - 0.01 * 4 / 2
        tensor([0.9800])
    """
    parts = [T.scale_by_rms(alpha, eps, centered=centered, eps_root=eps_root)]
    if not (isinstance(momentum, int | float) and momentum == 0.0):
        parts.append(T.trace(momentum))
    return _build(f"rmsprop(lr={show(lr)}, momentum={show(momentum)})", *parts, T.scale_by_learning_rate(lr))


def complex_momentum(
    lr: LearningRate, beta: Coefficient | tuple[Any, Any], alpha: Coefficient = 1.0
) -> FunctionalOptimizer:
    """Complex momentum (Lorraine et al., 2022), unrollable: :class:`~nestopt.optim.ComplexMomentum`'s steps.

    .. math::  \\mu_{t+1} = \\beta \\mu_t - g_t, \\qquad w_{t+1} = w_t + \\Re(\\eta\\,\\alpha\\,\\mu_{t+1})

    Args:
        lr: the real step size :math:`\\eta`.
        beta: complex (a number, ``(magnitude, phase)``, a complex tensor or a function of the hyperparameters).
        alpha: an optional complex factor of the step.

    Example:
        >>> import cmath, math, torch
        >>> from nestopt.optim import functional
        >>> opt = functional.complex_momentum(lr=0.1, beta=cmath.rect(0.9, math.pi / 8))
        >>> params = {"w": torch.tensor([1.0, -2.0])}
        >>> state = opt.init(params)
        >>> for _ in range(300):
        ...     params, state = opt.update({"w": 2 * params["w"]}, state, params, {})
        >>> bool(params["w"].abs().max() < 1e-3), sorted(state[0])
        (True, ['momentum_imag', 'momentum_real'])
    """
    return _build(
        f"complex_momentum(lr={show(lr)}, beta={show(beta)})",
        T.scale_by_complex_momentum(beta, alpha),
        T.scale_by_learning_rate(lr),
    )


def complex_adam(
    lr: LearningRate,
    betas: tuple[Any, Any] = (COMPLEX_BETA1, 0.999),
    eps: float = 1e-8,
    *,
    eps_root: float = 1e-16,
) -> FunctionalOptimizer:
    """Adam with a complex first-moment coefficient (Lorraine et al., 2022): :class:`~nestopt.optim.ComplexAdam`.

    .. math::  w_t = w_{t-1} - \\eta\\, \\frac{\\Re\\big(m_t / (1 - \\beta_1^t)\\big)}{\\sqrt{v_t / (1 - \\beta_2^t) + \\epsilon_{root}} + \\epsilon}

    Args:
        lr: the step size.
        betas: ``(beta1, beta2)``: ``beta1`` complex (or ``(magnitude, phase)``, or a function of the
            hyperparameters), ``beta2`` real in ``[0, 1)``.
        eps, eps_root: as for :func:`adam` (``eps_root=0.0``: the steps of ``ComplexAdam``).

    Example:
        >>> import torch
        >>> from nestopt.optim import functional
        >>> opt = functional.complex_adam(lr=0.1)
        >>> params = {"w": torch.ones(1)}
        >>> opt.update({"w": torch.ones(1)}, opt.init(params), params, {})[0]["w"]
        tensor([0.9000])
    """
    beta1, beta2 = _betas(betas, complex_beta1=True)
    return _build(
        f"complex_adam(lr={show(lr)}, beta1={show(beta1)})",
        T.scale_by_complex_adam(beta1, beta2, eps, eps_root=eps_root),
        T.scale_by_learning_rate(lr),
    )


def _betas(betas: Any, *, complex_beta1: bool) -> tuple[Any, Any]:
    """``betas`` checked where both are numbers (a member may also be a tensor or a function)."""
    if not isinstance(betas, tuple | list) or len(betas) != 2:
        raise InvalidArgumentError(f"Invalid betas: {betas!r}; expected (beta1, beta2)")
    numbers = all(not callable(b) and not hasattr(b, "shape") for b in betas)
    return check_betas(betas, complex_beta1=complex_beta1) if numbers else (betas[0], betas[1])


def optimistic_sgd(lr: LearningRate) -> FunctionalOptimizer:
    """Optimistic gradient descent: :math:`w_{t+1} = w_t - \\eta (2 g_t - g_{t-1})`, a plain step first.

    Example:
        >>> import torch
        >>> from nestopt.optim import functional
        >>> opt = functional.optimistic_sgd(lr=0.1)
        >>> params = {"w": torch.zeros(1)}
        >>> state = opt.init(params)
        >>> for g in (1.0, 3.0):
        ...     params, state = opt.update({"w": torch.full((1,), g)}, state, params, {})
        >>> params["w"]                                   # -0.1 * 1 - 0.1 * (2 * 3 - 1)
        tensor([-0.6000])
    """
    return _build(f"optimistic_sgd(lr={show(lr)})", T.scale_by_optimism(), T.scale_by_learning_rate(lr))


def optimistic_adam(
    lr: LearningRate,
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: float = 1e-8,
    *,
    eps_root: float = 1e-16,
) -> FunctionalOptimizer:
    """Optimistic Adam (Daskalakis et al., 2018): :math:`w_{t+1} = w_t - \\eta(2 u_t - u_{t-1})` with Adam's
    direction :math:`u_t`; :class:`~nestopt.optim.OptimisticAdam`'s steps with ``eps_root=0``.

    Example:
        >>> import torch
        >>> from nestopt.optim import functional
        >>> opt = functional.optimistic_adam(lr=0.1)
        >>> params = {"w": torch.ones(1)}
        >>> opt.update({"w": torch.ones(1)}, opt.init(params), params, {})[0]["w"]
        tensor([0.9000])
    """
    b1, b2 = _betas(betas, complex_beta1=False)
    return _build(
        f"optimistic_adam(lr={show(lr)})",
        T.scale_by_adam(b1, b2, eps, eps_root=eps_root),
        T.scale_by_optimism(),
        T.scale_by_learning_rate(lr),
    )
