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

import cmath
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from nestopt._validate import nonnegative
from nestopt.optim._common import (
    ValidatedOptimizer,
    check_coefficient,
    check_lr,
    state_buffers,
    use_foreach,
    warn_if_not_decaying,
    with_weight_decay,
)

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
        foreach: use the fused ``torch._foreach_*`` kernels (default: only when every parameter is on CUDA).

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
    ) -> None:
        defaults = {
            "lr": check_lr(lr),
            "beta": check_coefficient(beta, "beta"),
            "alpha": check_coefficient(alpha, "alpha"),
            "weight_decay": nonnegative("weight_decay", weight_decay),
            "maximize": bool(maximize),
            "foreach": foreach,
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
            foreach=use_foreach(group, params),
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
) -> None:
    """The functional kernel of :class:`ComplexMomentum`: updates params and both buffers in place."""
    br, bi = beta.real, beta.imag
    ar, ai = lr * alpha.real, lr * alpha.imag
    grads = with_weight_decay(params, grads, weight_decay, foreach)
    if foreach:
        old_im = torch._foreach_mul(momentum_imag, bi) if bi != 0 else None
        if bi != 0:
            torch._foreach_mul_(momentum_imag, br)
            torch._foreach_add_(momentum_imag, momentum_real, alpha=bi)
        torch._foreach_mul_(momentum_real, br)
        if old_im is not None:
            torch._foreach_sub_(momentum_real, old_im)
        torch._foreach_sub_(momentum_real, grads)
        torch._foreach_add_(params, momentum_real, alpha=ar)
        if ai != 0:
            torch._foreach_add_(params, momentum_imag, alpha=-ai)
        return
    for p, g, re, im in zip(params, grads, momentum_real, momentum_imag):
        im_times_bi = im * bi if bi != 0 else None
        if bi != 0:
            im.mul_(br).add_(re, alpha=bi)
        re.mul_(br)
        if im_times_bi is not None:
            re.sub_(im_times_bi)
        re.sub_(g)
        p.add_(re, alpha=ar)
        if ai != 0:
            p.add_(im, alpha=-ai)


class ComplexAdam(ValidatedOptimizer):
    """Adam whose first-moment coefficient :math:`\\beta_1` is complex; the step uses the real part.

    The paper's Adam variant (Lorraine et al., 2022, appendix): Adam with the first-moment EMA coefficient
    replaced by a complex number and the real part taken in the update,

    .. math::

        m_t = \\beta_1 m_{t-1} + (1 - \\beta_1) g_t, \\quad v_t = \\beta_2 v_{t-1} + (1 - \\beta_2) g_t^2,

        w_t = w_{t-1} - \\mathrm{lr}\\, \\frac{\\Re\\big(m_t / (1 - \\beta_1^t)\\big)}{\\sqrt{v_t / (1 - \\beta_2^t)} + \\epsilon}.

    For real :math:`\\beta_1` this is exactly ``torch.optim.Adam``. The complex first moment is stored as
    ``exp_avg_real`` and ``exp_avg_imag`` (see :mod:`nestopt.optim.complex_momentum` for why two real tensors).

    Args:
        params: parameters or parameter groups.
        lr: the step size.
        betas: ``(beta1, beta2)``; ``beta1`` complex, real or ``(magnitude, phase)`` (default
            :math:`0.8 e^{i\\pi/16}`, close to Adam on minimization; tune the phase for games), ``beta2`` real
            in ``[0, 1)``.
        eps: added to the denominator.
        weight_decay: L2 penalty added to the gradient.
        maximize: ascend instead of descend.
        foreach: use the fused ``torch._foreach_*`` kernels (default: only on CUDA).

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
        betas: tuple[complex | float | tuple[float, float], float] = (cmath.rect(0.8, math.pi / 16), 0.999),
        eps: float = 1e-8,
        *,
        weight_decay: float = 0.0,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        defaults = {
            "lr": check_lr(lr),
            "betas": _check_betas(betas),
            "eps": nonnegative("eps", eps),
            "weight_decay": nonnegative("weight_decay", weight_decay),
            "maximize": bool(maximize),
            "foreach": foreach,
        }
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        group["lr"] = check_lr(group["lr"])
        group["betas"] = _check_betas(group["betas"])
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
            foreach=use_foreach(group, params),
        )


def _check_betas(betas: Any) -> tuple[complex, float]:
    from nestopt.errors import InvalidArgumentError

    if not isinstance(betas, tuple | list) or len(betas) != 2:
        raise InvalidArgumentError(f"Invalid betas: {betas!r}; expected (beta1, beta2)")
    beta1 = check_coefficient(betas[0] if not isinstance(betas[0], list) else tuple(betas[0]), "beta1")
    beta2 = check_coefficient(betas[1], "beta2", allow_complex=False).real
    if not 0.0 <= beta2 < 1.0:
        raise InvalidArgumentError(f"Invalid beta2: beta2={betas[1]!r}; it must be in [0, 1)")
    return beta1, beta2


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
) -> None:
    """The functional kernel of :class:`ComplexAdam`: updates params and state in place.

    ``steps`` holds each tensor's step count *after* this step (for the bias corrections).
    """
    br, bi = beta1.real, beta1.imag
    grads = with_weight_decay(params, grads, weight_decay, foreach)
    # Re(m / c) = (Re m Re c + Im m Im c) / |c|^2 with c = 1 - beta1^t.
    corrections = []
    for t in steps:
        c = 1 - beta1**t
        scale = 1.0 / (abs(c) ** 2)
        corrections.append((c.real * scale, c.imag * scale, math.sqrt(1 - beta2**t)))
    if foreach:
        old_im = torch._foreach_mul(exp_avg_imag, bi) if bi != 0 else None
        if bi != 0:
            torch._foreach_mul_(exp_avg_imag, br)
            torch._foreach_add_(exp_avg_imag, exp_avg_real, alpha=bi)
            torch._foreach_add_(exp_avg_imag, grads, alpha=-bi)
        torch._foreach_mul_(exp_avg_real, br)
        torch._foreach_add_(exp_avg_real, grads, alpha=1 - br)
        if old_im is not None:
            torch._foreach_sub_(exp_avg_real, old_im)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, [c[2] for c in corrections])
        torch._foreach_add_(denom, eps)
        numer = torch._foreach_mul(exp_avg_real, [c[0] for c in corrections])
        if bi != 0:
            torch._foreach_add_(numer, torch._foreach_mul(exp_avg_imag, [c[1] for c in corrections]))
        torch._foreach_addcdiv_(params, numer, denom, value=-lr)
        return
    for i, (p, g, re, im, sq) in enumerate(zip(params, grads, exp_avg_real, exp_avg_imag, exp_avg_sq)):
        cr, ci, bias2_sqrt = corrections[i]
        im_times_bi = im * bi if bi != 0 else None
        if bi != 0:
            im.mul_(br).add_(re, alpha=bi).sub_(g, alpha=bi)
        re.mul_(br).add_(g, alpha=1 - br)
        if im_times_bi is not None:
            re.sub_(im_times_bi)
        sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denominator = (sq.sqrt() / bias2_sqrt).add_(eps)
        real_mhat = re * cr
        if ci != 0:
            real_mhat.add_(im, alpha=ci)
        p.addcdiv_(real_mhat, denominator, value=-lr)
