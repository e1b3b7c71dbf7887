"""Complex momentum: SGD and Adam whose momentum coefficient is a complex number.

Lorraine et al. (2022) generalize heavy-ball momentum to a complex coefficient :math:`\\beta`. The momentum
buffer :math:`\\mu` becomes complex while the parameters stay real, because only the real part of the
step is applied:

.. math::

    \\mu_{t+1} = \\beta \\mu_t - g_t, \\qquad w_{t+1} = w_t + \\Re(\\alpha \\mu_{t+1}),

with :math:`\\alpha = \\mathrm{lr} \\cdot \\mathrm{alpha}` (``lr`` real, so that learning-rate schedulers keep
working; ``alpha`` an optional complex factor, 1 by default). For real positive :math:`\\beta` and
``alpha = 1`` this is exactly ``torch.optim.SGD(lr=lr, momentum=beta)``. On bilinear zero-sum games a
non-real :math:`\\beta` converges with simultaneous updates, where gradient descent-ascent diverges for every
step size (see :mod:`nestopt.games.dynamics`).

**State.** The complex buffer is kept as two real tensors, ``momentum_real`` and ``momentum_imag``. A
complex tensor would not survive ``load_state_dict``: torch casts every floating-point state tensor to the
dtype of its parameter, and casting complex to real drops the imaginary part. Two real buffers also run on
devices without complex kernels and keep the ``_foreach`` path in plain real arithmetic:

.. math::

    \\Re \\mu' = \\beta_r \\Re\\mu - \\beta_i \\Im\\mu - g, \\qquad \\Im \\mu' = \\beta_r \\Im\\mu + \\beta_i \\Re\\mu,
    \\qquad w' = w + \\mathrm{lr}\\,(\\alpha_r \\Re\\mu' - \\alpha_i \\Im\\mu').

References:
    Lorraine, Acuna, Vicol, Duvenaud. Complex Momentum for Optimization in Games. AISTATS 2022.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor

from nestopt._validate import nonnegative
from nestopt.optim import _kernels as K
from nestopt.optim._checks import check_betas, check_coefficient, check_lr, warn_if_not_decaying
from nestopt.optim._common import ValidatedOptimizer, one_or_list, state_buffers
from nestopt.optim._fused import run
from nestopt.optim._ops import Ops
from nestopt.optim._scale_by import COMPLEX_BETA1

__all__ = ["ComplexAdam", "ComplexMomentum", "complex_adam", "complex_momentum"]

Params = Iterable[Tensor] | Iterable[dict[str, Any]]


class ComplexMomentum(ValidatedOptimizer):
    """SGD with complex momentum (Lorraine et al., 2022): real parameters, complex momentum buffer.

    .. math::  \\mu \\leftarrow \\beta \\mu - g, \\qquad w \\leftarrow w + \\Re(\\mathrm{lr}\\cdot\\mathrm{alpha}\\cdot\\mu)

    Args:
        params: parameters or parameter groups, as for any ``torch.optim`` optimizer.
        lr: the real step size (what learning-rate schedulers scale).
        beta: the momentum coefficient: a Python ``complex`` (or a real), or ``(magnitude, phase)``.
            ``|beta| >= 1`` warns (:class:`~nestopt.errors.OptimizerWarning`): the buffer would not decay.
        alpha: an optional complex factor of the step; the paper's complex step size is ``lr * alpha``.
        weight_decay: L2 penalty added to the gradient.
        maximize: ascend instead of descend.
        foreach: use the ``torch._foreach_*`` kernels (default: only when every parameter is on CUDA).
        fused: run the step as one ``torch.compile``-fused pass per tensor (7 passes over parameter-sized
            memory instead of 18; compiled on the first step, falling back to the for-loop kernel
            with a warning where compilation is unavailable). Not combinable with ``foreach=True``.

    The same kernel, out of place, is :func:`nestopt.optim.functional.complex_momentum` (unrollable).

    Example:
        >>> import cmath, math, torch
        >>> from nestopt.optim import ComplexMomentum
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = ComplexMomentum([w], lr=0.1, beta=cmath.rect(0.9, math.pi / 8))
        >>> for _ in range(300):
        ...     opt.zero_grad()
        ...     (w ** 2).sum().backward()
        ...     opt.step()
        >>> bool(w.abs().max() < 1e-3)
        True
    """

    def __init__(
        self,
        params: Params,
        lr: float,
        beta: complex | float | tuple[float, float] = 0.9,
        *,
        alpha: complex | float = 1.0,
        weight_decay: float = 0.0,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": check_lr(lr),
            "beta": check_coefficient(beta, "beta"),
            "alpha": check_coefficient(alpha, "alpha"),
            "weight_decay": nonnegative("weight_decay", weight_decay),
            "maximize": bool(maximize),
            "foreach": foreach,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        group["lr"] = check_lr(group["lr"])
        group["beta"] = check_coefficient(group["beta"], "beta")
        group["alpha"] = check_coefficient(group["alpha"], "alpha")
        group["weight_decay"] = nonnegative("weight_decay", group["weight_decay"])
        warn_if_not_decaying(group["beta"], "beta", stacklevel=5)

    def _step_group(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> None:
        (re, im), _ = state_buffers(self, params, ("momentum_real", "momentum_imag"))
        complex_momentum(
            params,
            grads,
            re,
            im,
            lr=group["lr"],
            beta=complex(group["beta"]),
            alpha=complex(group["alpha"]),
            weight_decay=group["weight_decay"],
            **self._backend(group, params),
        )


def complex_momentum(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_real: list[Tensor],
    momentum_imag: list[Tensor],
    *,
    lr: float,
    beta: complex,
    alpha: complex = 1.0,
    weight_decay: float = 0.0,
    foreach: bool = False,
    fused: bool = False,
) -> None:
    """The in-place step of :class:`ComplexMomentum`: updates params and both buffers."""
    beta, alpha = complex(beta), complex(alpha)
    run(
        _complex_momentum_step, params, grads, momentum_real, momentum_imag, foreach=foreach, fused=fused,
        lr=lr, br=beta.real, bi=beta.imag, ar=alpha.real, ai=alpha.imag, weight_decay=weight_decay,
    )  # fmt: skip


def _complex_momentum_step(
    ops: Ops, params: list[Tensor], grads: list[Tensor], re: list[Tensor], im: list[Tensor], *,
    lr: Any, br: Any, bi: Any, ar: Any, ai: Any, weight_decay: Any,
) -> None:  # fmt: skip
    grads = K.add_decayed_weights(ops, grads, params, weight_decay)
    terms, _, _ = K.complex_momentum(ops, grads, re, im, (br, bi), (ar, ai))
    K.apply_terms(ops, params, terms, -lr)


class ComplexAdam(ValidatedOptimizer):
    """Adam whose first-moment coefficient :math:`\\beta_1` is complex; the step uses the real part.

    The paper's Adam variant (Lorraine et al., 2022, appendix): Adam with the first-moment EMA coefficient
    replaced by a complex number and the real part taken in the update,

    .. math::

        m_t = \\beta_1 m_{t-1} + (1 - \\beta_1) g_t, \\quad v_t = \\beta_2 v_{t-1} + (1 - \\beta_2) g_t^2,

        w_t = w_{t-1} - \\mathrm{lr}\\, \\frac{\\Re\\big(m_t / (1 - \\beta_1^t)\\big)}{\\sqrt{v_t / (1 - \\beta_2^t)} + \\epsilon}.

    For real :math:`\\beta_1` this is exactly ``torch.optim.Adam``. The complex first moment is stored as
    ``exp_avg_real`` and ``exp_avg_imag`` (see :mod:`nestopt.optim.complex_momentum` for why two real tensors).
    The same kernel, out of place, is :func:`nestopt.optim.functional.complex_adam` (unrollable).

    Args:
        params: parameters or parameter groups.
        lr: the step size.
        betas: ``(beta1, beta2)``; ``beta1`` complex, real or ``(magnitude, phase)`` (default
            :math:`0.8 e^{i\\pi/16}`, close to Adam on minimization; tune the phase for games), ``beta2`` real
            in ``[0, 1)``.
        eps: added to the denominator.
        weight_decay: L2 penalty added to the gradient.
        maximize: ascend instead of descend.
        foreach: use the ``torch._foreach_*`` kernels (default: only on CUDA).
        fused: one ``torch.compile``-fused pass per tensor (see :class:`ComplexMomentum`).

    Example:
        >>> import torch
        >>> from nestopt.optim import ComplexAdam
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = ComplexAdam([w], lr=0.02)
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
        betas: tuple[complex | float | tuple[float, float], float] = (COMPLEX_BETA1, 0.999),
        eps: float = 1e-8,
        *,
        weight_decay: float = 0.0,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": check_lr(lr),
            "betas": check_betas(betas, complex_beta1=True),
            "eps": nonnegative("eps", eps),
            "weight_decay": nonnegative("weight_decay", weight_decay),
            "maximize": bool(maximize),
            "foreach": foreach,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        group["lr"] = check_lr(group["lr"])
        group["betas"] = check_betas(group["betas"], complex_beta1=True)
        group["eps"] = nonnegative("eps", group["eps"])
        group["weight_decay"] = nonnegative("weight_decay", group["weight_decay"])
        warn_if_not_decaying(group["betas"][0], "beta1", stacklevel=5)

    def _step_group(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> None:
        (re, im, sq), steps = state_buffers(
            self, params, ("exp_avg_real", "exp_avg_imag", "exp_avg_sq"), count_steps=True
        )
        beta1, beta2 = group["betas"]
        complex_adam(
            params,
            grads,
            re,
            im,
            sq,
            steps,
            lr=group["lr"],
            beta1=complex(beta1),
            beta2=float(beta2),
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            **self._backend(group, params),
        )


def complex_adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avg_real: list[Tensor],
    exp_avg_imag: list[Tensor],
    exp_avg_sq: list[Tensor],
    steps: list[int],
    *,
    lr: float,
    beta1: complex,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    foreach: bool = False,
    fused: bool = False,
) -> None:
    """The in-place step of :class:`ComplexAdam`; ``steps`` holds each tensor's step count *after* this step."""
    b1 = K.parts(beta1)
    a, b, s = zip(*(K.adam_corrections(b1, beta2, t) for t in steps))
    run(
        _complex_adam_step, params, grads, exp_avg_real, exp_avg_imag, exp_avg_sq, foreach=foreach, fused=fused,
        lr=lr, br=b1[0], bi=b1[1], beta2=beta2, a=one_or_list(list(a)), b=one_or_list(list(b)),
        s=one_or_list(list(s)), eps=eps, weight_decay=weight_decay,
    )  # fmt: skip


def _complex_adam_step(
    ops: Ops, params: list[Tensor], grads: list[Tensor], m_re: list[Tensor], m_im: list[Tensor], v: list[Tensor],
    *, lr: Any, br: Any, bi: Any, beta2: Any, a: Any, b: Any, s: Any, eps: Any, weight_decay: Any,
) -> None:  # fmt: skip
    grads = K.add_decayed_weights(ops, grads, params, weight_decay)
    m_re, _, v = K.adam_moments(ops, grads, m_re, m_im, v, (br, bi), beta2)
    d = K.adam_direction(ops, m_re, m_im, v, (a, b, s), eps)
    K.apply(ops, params, d, -lr)
