"""The stateful transforms: momentum traces (real and complex), Adam moments (real and complex), RMS, optimism.

Each keeps its buffers as trees under the key names the ``torch.optim`` classes use for the same buffers
(``momentum_buffer``, ``momentum_real``/``momentum_imag``, ``exp_avg``/``exp_avg_real``/``exp_avg_imag``,
``exp_avg_sq``, ``square_avg``, ``grad_avg``), and its step count as the int ``step``.
"""

from __future__ import annotations

import cmath
import math
from typing import Any

import torch

from nestopt._validate import in_range, nonnegative, real
from nestopt.errors import InvalidArgumentError
from nestopt.optim import _kernels as K
from nestopt.optim._checks import (
    Coefficient,
    check_coefficient,
    coefficient,
    complex_value,
    resolve,
    warn_if_not_decaying,
)
from nestopt.optim._ops import FUNCTIONAL
from nestopt.optim._transform import State, Transform, as_tree, lists, show, uses
from nestopt.tree import Tree

__all__ = [
    "scale_by_adam",
    "scale_by_complex_adam",
    "scale_by_complex_momentum",
    "scale_by_optimism",
    "scale_by_rms",
    "trace",
]


COMPLEX_BETA1 = cmath.rect(0.8, math.pi / 16)
"""The default complex first-moment coefficient :math:`0.8 e^{i\\pi/16}` (close to Adam on minimization)."""


def _zeros(params: Tree) -> Tree:
    return {k: torch.zeros_like(v) for k, v in params.items()}


def _unit(name: str, value: Any) -> float:
    return in_range(name, value, 0.0, 1.0, high_open=True)


def _complex(name: str, value: Any, *, warn: bool = False) -> Any:
    """A complex coefficient: a number or ``(magnitude, phase)`` of numbers is checked (and with ``warn``,
    ``|value| >= 1`` warns); tensors, pairs of tensors and functions of the hyperparameters are kept."""
    if isinstance(value, tuple | list) and any(isinstance(v, torch.Tensor) for v in value):
        return tuple(value)
    if callable(value) or isinstance(value, torch.Tensor):
        return coefficient(name, value)
    z = check_coefficient(value, name)
    if warn:
        warn_if_not_decaying(z, name, stacklevel=4)
    return z


def trace(momentum: Coefficient = 0.9, *, nesterov: bool = False) -> Transform:
    """Heavy-ball momentum (any real sign), torch's ``SGD`` convention; state ``{"momentum_buffer": tree}``.

    .. math::  b \\leftarrow \\mu b + u, \\qquad u \\leftarrow b \\quad (\\text{Nesterov: } u + \\mu b)

    Example:
        >>> import torch
        >>> from nestopt.optim import transforms
        >>> t, p = transforms.trace(0.5), {"w": torch.zeros(1)}
        >>> s = t.init(p)
        >>> for _ in range(2):
        ...     u, s = t.update({"w": torch.ones(1)}, s, p, {})
        >>> u["w"]                                        # 1 + 0.5 * 1
        tensor([1.5000])
    """
    momentum = coefficient("momentum", momentum, real)
    if nesterov and isinstance(momentum, float) and momentum == 0.0:
        raise InvalidArgumentError("nesterov=True needs a non-zero momentum")

    def update(updates: Tree, state: State, params: Tree, hparams: Tree) -> tuple[Tree, State]:
        keys = list(updates)
        u, buf = lists([updates, state["momentum_buffer"]], keys)
        d, buf = K.momentum(FUNCTIONAL, u, buf, resolve(momentum, hparams, keys, "momentum"), nesterov)
        return as_tree(keys, d), {"momentum_buffer": as_tree(keys, buf)}

    name = f"trace(momentum={show(momentum)}{', nesterov' if nesterov else ''})"
    return Transform(name, lambda p: {"momentum_buffer": _zeros(p)}, update, uses(momentum))


def scale_by_complex_momentum(beta: Coefficient | tuple[Any, Any], alpha: Coefficient = 1.0) -> Transform:
    """Complex momentum (Lorraine et al., 2022) with a gradient-like output; the buffer is two real trees.

    .. math::  \\mu \\leftarrow \\beta \\mu - u, \\qquad u \\leftarrow -\\Re(\\alpha \\mu)

    so that :func:`scale_by_learning_rate` gives :math:`w + \\eta \\Re(\\alpha \\mu)`, the step of
    :class:`~nestopt.optim.ComplexMomentum`. State ``{"momentum_real": tree, "momentum_imag": tree}``.

    Args:
        beta: a complex number, ``(magnitude, phase)``, a complex tensor, or a function of the
            hyperparameters returning one of those. ``|beta| >= 1`` warns.
        alpha: the complex factor of the step (same forms).

    Example:
        >>> import cmath, torch
        >>> from nestopt.optim import transforms
        >>> t, p = transforms.scale_by_complex_momentum(0.5j), {"w": torch.zeros(1)}
        >>> s = t.init(p)
        >>> for _ in range(2):
        ...     u, s = t.update({"w": torch.ones(1)}, s, p, {})
        >>> u["w"], s["momentum_imag"]["w"]      # mu = 0.5j * (-1) - 1
        (tensor([1.]), tensor([-0.5000]))
    """
    beta, alpha = _complex("beta", beta, warn=True), _complex("alpha", alpha)

    def update(updates: Tree, state: State, params: Tree, hparams: Tree) -> tuple[Tree, State]:
        keys = list(updates)
        u, re, im = lists([updates, state["momentum_real"], state["momentum_imag"]], keys)
        b = K.parts(complex_value(resolve(beta, hparams, keys, "beta")))
        a = K.parts(complex_value(resolve(alpha, hparams, keys, "alpha")))
        terms, re, im = K.complex_momentum(FUNCTIONAL, u, re, im, b, a)
        return as_tree(keys, K.combine(FUNCTIONAL, terms)), {
            "momentum_real": as_tree(keys, re),
            "momentum_imag": as_tree(keys, im),
        }

    def init(params: Tree) -> State:
        return {"momentum_real": _zeros(params), "momentum_imag": _zeros(params)}

    name = f"scale_by_complex_momentum(beta={show(beta)}, alpha={show(alpha)})"
    return Transform(name, init, update, uses(beta, alpha))


def _adam(name: str, beta1: Any, b2: Any, eps: float, eps_root: float, complex_moment: bool) -> Transform:
    eps = nonnegative("eps", eps)
    eps_root = nonnegative("eps_root", eps_root)
    b2 = coefficient("b2", b2, _unit)
    keys_m: tuple[str, ...] = ("exp_avg_real", "exp_avg_imag") if complex_moment else ("exp_avg",)

    def init(params: Tree) -> State:
        return {"step": 0, **{k: _zeros(params) for k in (*keys_m, "exp_avg_sq")}}

    def update(updates: Tree, state: State, params: Tree, hparams: Tree) -> tuple[Tree, State]:
        keys = list(updates)
        u, v, m_re = lists([updates, state["exp_avg_sq"], state[keys_m[0]]], keys)
        m_im = lists([state[keys_m[1]]], keys)[0] if complex_moment else None
        b1 = K.parts(complex_value(resolve(beta1, hparams, keys, "b1")))
        beta2 = resolve(b2, hparams, keys, "b2")
        step = state["step"] + 1
        m_re, m_im, v = K.adam_moments(FUNCTIONAL, u, m_re, m_im, v, b1, beta2)
        d = K.adam_direction(FUNCTIONAL, m_re, m_im, v, K.adam_corrections(b1, beta2, step), eps, eps_root)
        new = {"step": step, keys_m[0]: as_tree(keys, m_re), "exp_avg_sq": as_tree(keys, v)}
        if m_im is not None:
            new[keys_m[1]] = as_tree(keys, m_im)
        return as_tree(keys, d), new

    return Transform(f"{name}(b1={show(beta1)}, b2={show(b2)})", init, update, uses(beta1, b2))


def scale_by_adam(
    b1: Coefficient = 0.9, b2: Coefficient = 0.999, eps: float = 1e-8, *, eps_root: float = 0.0
) -> Transform:
    """Adam's direction (Kingma & Ba, 2015); state ``{"step", "exp_avg", "exp_avg_sq"}``.

    .. math::  m \\leftarrow b_1 m + (1-b_1) u, \\quad v \\leftarrow b_2 v + (1-b_2) u^2, \\quad
               u \\leftarrow \\frac{m / (1-b_1^t)}{\\sqrt{v / (1-b_2^t) + \\epsilon_{root}} + \\epsilon}

    ``b1`` and ``b2`` (in ``[0, 1)``) may be functions of the hyperparameters. ``eps_root > 0`` keeps the
    derivative of the square root finite where a gradient entry is exactly zero (for unrolling).

    Example:
        >>> import torch
        >>> from nestopt.optim import transforms
        >>> t, p = transforms.scale_by_adam(), {"w": torch.zeros(1)}
        >>> u, s = t.update({"w": torch.full((1,), -3.0)}, t.init(p), p, {})
        >>> round(float(u["w"]), 6), s["step"]            # the first step is the sign of the gradient
        (-1.0, 1)
    """
    b1 = coefficient("b1", b1, _unit)
    return _adam("scale_by_adam", b1, b2, eps, eps_root, complex_moment=False)


def scale_by_complex_adam(
    beta1: Coefficient | tuple[Any, Any] = COMPLEX_BETA1,
    beta2: Coefficient = 0.999,
    eps: float = 1e-8,
    *,
    eps_root: float = 0.0,
) -> Transform:
    """Adam with a complex first-moment coefficient, the real part taken (Lorraine et al., 2022, appendix).

    .. math::  m \\leftarrow \\beta_1 m + (1-\\beta_1) u, \\quad
               u \\leftarrow \\frac{\\Re\\big(m / (1-\\beta_1^t)\\big)}{\\sqrt{v / (1-\\beta_2^t) + \\epsilon_{root}} + \\epsilon}

    with ``v`` as in :func:`scale_by_adam`. State ``{"step", "exp_avg_real", "exp_avg_imag", "exp_avg_sq"}``;
    a real ``beta1`` gives exactly :func:`scale_by_adam`'s direction.

    Example:
        >>> import torch
        >>> from nestopt.optim import transforms
        >>> t, p = transforms.scale_by_complex_adam(), {"w": torch.zeros(1)}
        >>> u, s = t.update({"w": torch.full((1,), 2.0)}, t.init(p), p, {})
        >>> round(float(u["w"]), 6), sorted(s)
        (1.0, ['exp_avg_imag', 'exp_avg_real', 'exp_avg_sq', 'step'])
    """
    beta1 = _complex("beta1", beta1, warn=True)
    return _adam("scale_by_complex_adam", beta1, beta2, eps, eps_root, complex_moment=True)


def scale_by_rms(
    decay: Coefficient = 0.99, eps: float = 1e-8, *, centered: bool = False, eps_root: float = 0.0
) -> Transform:
    """RMSprop's direction (torch's ``RMSprop``); state ``{"square_avg"}`` (and ``"grad_avg"`` if centered).

    .. math::  s \\leftarrow \\rho s + (1-\\rho) u^2, \\quad \\bar u \\leftarrow \\rho \\bar u + (1-\\rho) u, \\quad
               u \\leftarrow \\frac{u}{\\sqrt{s - \\bar u^2 + \\epsilon_{root}} + \\epsilon}

    (:math:`\\bar u` only when ``centered``.)

    Example:
        >>> import torch
        >>> from nestopt.optim import transforms
        >>> t, p = transforms.scale_by_rms(decay=0.75), {"w": torch.zeros(1)}
        >>> u, s = t.update({"w": torch.full((1,), 2.0)}, t.init(p), p, {})
        >>> round(float(u["w"]), 6)                       # 2 / sqrt(0.25 * 4)
        2.0
    """
    decay = coefficient("decay", decay, _unit)
    eps = nonnegative("eps", eps)
    eps_root = nonnegative("eps_root", eps_root)

    def init(params: Tree) -> State:
        return {"square_avg": _zeros(params), **({"grad_avg": _zeros(params)} if centered else {})}

    def update(updates: Tree, state: State, params: Tree, hparams: Tree) -> tuple[Tree, State]:
        keys = list(updates)
        u, sq = lists([updates, state["square_avg"]], keys)
        ga = lists([state["grad_avg"]], keys)[0] if centered else None
        d, sq, ga = K.rms(FUNCTIONAL, u, sq, ga, resolve(decay, hparams, keys, "decay"), eps, eps_root)
        new = {"square_avg": as_tree(keys, sq)}
        if ga is not None:
            new["grad_avg"] = as_tree(keys, ga)
        return as_tree(keys, d), new

    return Transform(f"scale_by_rms(decay={show(decay)}{', centered' if centered else ''})", init, update, uses(decay))


def scale_by_optimism(strength: Coefficient = 1.0) -> Transform:
    """The optimistic correction (Popov, 1980; Daskalakis et al., 2018); state ``{"step", "previous"}``.

    .. math::  u_t \\leftarrow u_t + \\gamma\\,(u_t - u_{t-1})

    With :math:`\\gamma = 1` after :func:`scale_by_learning_rate` this is optimistic gradient descent,
    :math:`w - \\eta(2 g_t - g_{t-1})`; after :func:`scale_by_adam`, optimistic Adam. The first step is
    uncorrected (the previous update is taken equal to the current one).

    Example:
        >>> import torch
        >>> from nestopt.optim import transforms
        >>> t, p = transforms.scale_by_optimism(), {"w": torch.zeros(1)}
        >>> u, s = t.update({"w": torch.ones(1)}, t.init(p), p, {})
        >>> u, s = t.update({"w": torch.full((1,), 3.0)}, s, p, {})
        >>> u["w"]                                        # 2 * 3 - 1
        tensor([5.])
    """
    strength = coefficient("strength", strength, real)

    def update(updates: Tree, state: State, params: Tree, hparams: Tree) -> tuple[Tree, State]:
        keys = list(updates)
        u, prev = lists([updates, state["previous"]], keys)
        gamma = 0.0 if state["step"] == 0 else resolve(strength, hparams, keys, "strength")
        d, prev = K.optimism(FUNCTIONAL, u, prev, gamma)
        return as_tree(keys, d), {"step": state["step"] + 1, "previous": as_tree(keys, prev)}

    name = f"scale_by_optimism(strength={show(strength)})"
    return Transform(name, lambda p: {"step": 0, "previous": _zeros(p)}, update, uses(strength))
