"""Every optimizer update formula of :mod:`nestopt.optim`, written once.

Each kernel maps lists of tensors (the incoming updates ``u``, state buffers, parameters) to the outgoing
direction and the new buffers, through an ``ops`` backend (:mod:`nestopt.optim._ops`). With
:data:`~nestopt.optim._ops.FUNCTIONAL` it is an out-of-place, differentiable step (the transforms of
:mod:`nestopt.optim.transforms` and so every functional optimizer); with ``LOOP`` or ``FOREACH`` it updates
the buffers in place (the ``torch.optim`` classes; ``torch.compile`` of the ``LOOP`` form is their fused
path). Directions are gradient-like: the step is ``params + scale * direction`` with ``scale = -lr``.

Complex coefficients arrive as their real and imaginary parts ``(re, im)`` (see :func:`parts`); complex
buffers are pairs of real tensors. Coefficients may be numbers, tensors, or one value per tensor; a term
whose coefficient is the number 0 is skipped.

Example:
    >>> import torch
    >>> from nestopt.optim import _kernels, _ops
    >>> u, buf = [torch.ones(2)], [torch.zeros(2)]
    >>> d, buf = _kernels.momentum(_ops.FUNCTIONAL, u, buf, 0.9)
    >>> _kernels.apply(_ops.FUNCTIONAL, [torch.ones(2)], d, -0.1)[0]
    tensor([0.9000, 0.9000])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from nestopt.optim._ops import Coef, Ops, is_one, is_zero

__all__ = [
    "adam_corrections",
    "adam_direction",
    "adam_moments",
    "add_decayed_weights",
    "apply",
    "apply_terms",
    "clip_by_global_norm",
    "clip_by_value",
    "combine",
    "complex_momentum",
    "momentum",
    "optimism",
    "parts",
    "rms",
    "scale",
]

Tensors = list[Tensor]
Parts = tuple[Any, Any]
Terms = list[tuple[Any, Sequence[Tensor]]]
"""A direction kept as a linear combination ``[(c_k, x_k), ...]`` of buffers, formed only when needed."""


def parts(z: Any) -> Parts:
    """``(Re z, Im z)`` of a Python number or a (real or complex) tensor; ``Im`` of a real value is 0."""
    if isinstance(z, Tensor):
        return (z.real, z.imag) if z.is_complex() else (z, 0.0)
    z = complex(z)
    return z.real, z.imag


def scale(ops: Ops, u: Sequence[Tensor], c: Coef) -> Tensors:
    """``c u``."""
    return list(u) if is_one(c) else ops.scale(u, c)


def apply(ops: Ops, params: Sequence[Tensor], u: Sequence[Tensor], c: Coef = 1.0) -> Tensors:
    """``params <- params + c u`` (in place with an in-place backend)."""
    return ops.add_(params, u, c)


def combine(ops: Ops, terms: Terms) -> Tensors:
    """The direction :math:`\\sum_k c_k x_k` of ``terms = [(c_k, x_k), ...]``, as new tensors."""
    (c0, x0), *rest = terms
    out = ops.scale(x0, c0)
    for c, x in rest:
        out = ops.add_(out, x, c)
    return out


def apply_terms(ops: Ops, params: Sequence[Tensor], terms: Terms, c: Coef) -> Tensors:
    """``params <- params + c * sum_k c_k x_k`` without forming the sum (no temporary in place)."""
    params = list(params)
    for ck, x in terms:
        params = ops.add_(params, x, c * ck)
    return params


def add_decayed_weights(ops: Ops, u: Sequence[Tensor], params: Sequence[Tensor], weight_decay: Coef) -> Tensors:
    """``u + weight_decay * params``: L2 regularization before a method, decoupled decay (AdamW) after it."""
    return list(u) if is_zero(weight_decay) else ops.add(u, params, weight_decay)


def momentum(
    ops: Ops, u: Sequence[Tensor], buf: Sequence[Tensor], beta: Coef, nesterov: bool = False
) -> tuple[Tensors, Tensors]:
    """Heavy-ball trace ``b <- beta b + u`` (any real ``beta``); direction ``b``, or ``u + beta b`` (Nesterov).

    Returns ``(direction, buf)``; without Nesterov the direction *is* the buffer (read-only downstream).
    """
    buf = ops.add_(ops.scale_(buf, beta), u)
    return (ops.add(u, buf, beta) if nesterov else buf), buf


def complex_momentum(
    ops: Ops, u: Sequence[Tensor], re: Sequence[Tensor], im: Sequence[Tensor], beta: Parts, alpha: Parts = (1.0, 0.0)
) -> tuple[Terms, Tensors, Tensors]:
    """Complex momentum: ``mu <- beta mu - u`` on ``mu = re + i im``; direction ``-Re(alpha mu)``.

    .. math::  \\Re\\mu' = \\beta_r \\Re\\mu - \\beta_i \\Im\\mu - u, \\quad \\Im\\mu' = \\beta_r \\Im\\mu + \\beta_i \\Re\\mu,
               \\quad d = \\alpha_i \\Im\\mu' - \\alpha_r \\Re\\mu'

    Returns ``(direction, re, im)``, the direction as :data:`Terms` of the two buffers (see :func:`combine`,
    :func:`apply_terms`).
    """
    (br, bi), (ar, ai) = beta, alpha
    old_im = None if is_zero(bi) else ops.scale(im, bi)
    im = ops.scale_(im, br)
    if old_im is not None:
        im = ops.add_(im, re, bi)
    re = ops.scale_(re, br)
    if old_im is not None:
        re = ops.add_(re, old_im, -1.0)
    re = ops.add_(re, u, -1.0)
    terms: Terms = [(-ar, re)] if is_zero(ai) else [(-ar, re), (ai, im)]
    return terms, re, im


def adam_moments(
    ops: Ops,
    u: Sequence[Tensor],
    m_re: Sequence[Tensor],
    m_im: Sequence[Tensor] | None,
    v: Sequence[Tensor],
    beta1: Parts,
    beta2: Coef,
) -> tuple[Tensors, Tensors | None, Tensors]:
    """Adam's moments with a real or complex ``beta1`` (``m_im`` is ``None`` for a real one).

    .. math::  m \\leftarrow \\beta_1 m + (1 - \\beta_1) u, \\qquad v \\leftarrow \\beta_2 v + (1 - \\beta_2) u^2

    Returns ``(m_re, m_im, v)``.
    """
    br, bi = beta1
    # Re m' = br Re m - bi Im m + (1 - br) u,  Im m' = br Im m + bi Re m - bi u
    old_im = None if m_im is None or is_zero(bi) else ops.scale(m_im, bi)
    if m_im is not None:
        m_im = ops.scale_(m_im, br)
        if old_im is not None:
            m_im = ops.add_(ops.add_(m_im, m_re, bi), u, -bi)
    m_re = ops.add_(ops.scale_(m_re, br), u, 1 - br)
    if old_im is not None:
        m_re = ops.add_(m_re, old_im, -1.0)
    v = ops.addcmul_(ops.scale_(v, beta2), u, u, 1 - beta2)
    return m_re, m_im, v


def adam_corrections(beta1: Parts, beta2: Any, step: int) -> tuple[Any, Any, Any]:
    """The bias corrections of step ``step`` (>= 1): ``(a, b, s)`` with
    :math:`\\Re(m / (1 - \\beta_1^t)) = a \\Re m + b \\Im m` and :math:`s = 1 / (1 - \\beta_2^t)`.

    Works on Python numbers and on tensors (hyperparameters), so the same formula serves every front end.
    """
    br, bi = beta1
    s = 1 / (1 - beta2**step)
    if is_zero(bi):
        return 1 / (1 - br**step), 0.0, s
    if isinstance(br, Tensor) or isinstance(bi, Tensor):
        ct = 1 - torch.complex(torch.as_tensor(br), torch.as_tensor(bi)) ** step
        inv = 1 / (ct.real**2 + ct.imag**2)
        return ct.real * inv, ct.imag * inv, s
    c = 1 - complex(br, bi) ** step
    inv_abs2 = 1 / abs(c) ** 2
    return c.real * inv_abs2, c.imag * inv_abs2, s


def adam_direction(
    ops: Ops,
    m_re: Sequence[Tensor],
    m_im: Sequence[Tensor] | None,
    v: Sequence[Tensor],
    corrections: tuple[Coef, Coef, Coef],
    eps: Coef,
    eps_root: Coef = 0.0,
) -> Tensors:
    """Adam's direction :math:`\\Re(\\hat m) / (\\sqrt{\\hat v + \\epsilon_{root}} + \\epsilon)` with the bias
    corrections ``(a, b, s)`` of :func:`adam_corrections`: :math:`\\Re\\hat m = a \\Re m + b \\Im m`, :math:`\\hat v = s v`."""
    a, b, s = corrections
    denom = ops.scale(v, s)
    if not is_zero(eps_root):
        denom = ops.add_scalar_(denom, eps_root)
    denom = ops.add_scalar_(ops.sqrt_(denom), eps)
    num = ops.scale(m_re, a)
    if m_im is not None and not is_zero(b):
        num = ops.add_(num, m_im, b)
    return ops.div_(num, denom)


def rms(
    ops: Ops,
    u: Sequence[Tensor],
    square_avg: Sequence[Tensor],
    grad_avg: Sequence[Tensor] | None,
    alpha: Coef,
    eps: Coef,
    eps_root: Coef = 0.0,
) -> tuple[Tensors, Tensors, Tensors | None]:
    """RMSprop's direction (torch's ``RMSprop``; centered when ``grad_avg`` is given).

    .. math::  s \\leftarrow \\alpha s + (1-\\alpha) u^2, \\quad \\bar g \\leftarrow \\alpha \\bar g + (1-\\alpha) u,
               \\quad d = u / (\\sqrt{s - \\bar g^2 + \\epsilon_{root}} + \\epsilon)

    Returns ``(direction, square_avg, grad_avg)``.
    """
    square_avg = ops.addcmul_(ops.scale_(square_avg, alpha), u, u, 1 - alpha)
    variance = list(square_avg)
    if grad_avg is not None:
        grad_avg = ops.add_(ops.scale_(grad_avg, alpha), u, 1 - alpha)
        variance = ops.addcmul(square_avg, grad_avg, grad_avg, -1.0)
    if not is_zero(eps_root):
        variance = ops.add_scalar(variance, eps_root)
    denom = ops.add_scalar_(ops.sqrt(variance), eps)
    return ops.div(u, denom), square_avg, grad_avg


def optimism(ops: Ops, u: Sequence[Tensor], previous: Sequence[Tensor], strength: Coef) -> tuple[Tensors, Tensors]:
    """The optimistic correction :math:`d = u_t + \\gamma (u_t - u_{t-1})` (:math:`\\gamma = 1`: ``2 u_t - u_{t-1}``).

    On a tensor's first step the previous direction is taken equal to the current one, which is the same as
    ``strength = 0`` there: callers pass 0 (per tensor, if need be) on first steps. Returns
    ``(direction, previous)``, ``previous`` now holding ``u``.
    """
    d = list(u) if is_zero(strength) else ops.add_(ops.scale(u, 1 + strength), previous, -strength)
    return d, ops.copy_(previous, u)


def clip_by_global_norm(ops: Ops, u: Sequence[Tensor], max_norm: Coef) -> Tensors:
    """``u * max_norm / max(||u||, max_norm)``: rescaled so that the norm of all of ``u`` is at most ``max_norm``."""
    norm = ops.global_norm(u)
    if isinstance(max_norm, Tensor):
        return ops.scale(u, max_norm / torch.maximum(norm, max_norm))
    return ops.scale(u, max_norm / torch.clamp(norm, min=max_norm))


def clip_by_value(ops: Ops, u: Sequence[Tensor], max_delta: Coef) -> Tensors:
    """Each entry of ``u`` clamped to ``[-max_delta, max_delta]``."""
    return ops.clamp(u, -max_delta, max_delta)
