"""The weight-decay penalty :math:`\\sum_j e^{\\lambda_j} w_j^2` as one fused autograd function.

Written with elementwise torch operations, the penalty's gradient graph keeps :math:`e^\\lambda`, :math:`w^2` and
several products alive, and its double backward (every Hessian-vector product and mixed term of an implicit
hypergradient) allocates four to six parameter-sized temporaries per product. Here the first and second
derivatives are written out:

.. math::  \\partial_w = 2 g\\, e^\\lambda w, \\qquad \\partial_\\lambda = g\\, e^\\lambda w^2, \\qquad
           \\partial_w (2 g e^\\lambda w)\\, v = 2 g\\, e^\\lambda v, \\qquad
           \\partial_\\lambda (2 g e^\\lambda w)\\, v = 2 g\\, e^\\lambda w v,

each computed into one fresh buffer, and the graph saves only :math:`\\lambda` and :math:`w` themselves (the
coefficient :math:`e^\\lambda` is recomputed where needed). A backward pass skips the decays' derivatives when it
does not ask for them: a Hessian-vector product and a linearization (the weights' gradient, with
``create_graph``) then allocate one buffer instead of two. The engine says which inputs a pass reaches, through a
view that the penalty puts in front of leaf decays. The weights get no such view (autograd would then sum their
gradient from the network and from the penalty out of place, a buffer more in every training step), so a mixed
product still computes the weights' derivative beside the decays'. Forward mode
(``torch.func.jvp``) and ``vmap`` (batched products) are supported; ``tests/hparams/test_penalty.py`` checks
every derivative against the elementwise formula, ``gradcheck`` and ``gradgradcheck`` in float64.

With per-weight decays that are constants (no gradient, no transform: the inner steps of a training run) the
forward pass keeps :math:`e^\\lambda w` for the backward pass instead (one buffer for the step's duration): one
``exp`` per step instead of two, and a gradient that is one product.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["decay_penalty"]

_CHUNK = 1 << 16  # elements per chunk of the forward sum: bounds its temporaries


def _scalar(lam: Tensor) -> bool:
    return lam.numel() == 1


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a.reshape(-1) * b.reshape(-1)).sum()


def _wrapped(t: Tensor | float) -> bool:
    """Whether ``t`` is batched or traced by a transform (``vmap``, ``grad``, ``is_grads_batched``)."""
    f = torch._C._functorch
    return isinstance(t, Tensor) and (f.is_functorch_wrapped_tensor(t) or f.is_legacy_batchedtensor(t))


def _mul(a: Tensor, b: Tensor | float) -> Tensor:
    """``a * b``, in the buffer of ``a`` (a fresh intermediate) when nothing records or batches the product."""
    if torch.is_grad_enabled() or _wrapped(a) or _wrapped(b):
        return a * b
    return a.mul_(b)


def _edge(t: Tensor) -> Tensor:
    """``t`` behind a view of its own when it is a leaf that requires grad: the functions below can then ask the
    engine whether the backward pass now running reaches it (:func:`_wanted`), which the engine cannot say of a
    leaf under ``torch.autograd.grad``. Only for the decays: see :func:`decay_penalty`."""
    return t.view_as(t) if t.requires_grad and t.grad_fn is None else t


def _wanted(ctx: Any, i: int) -> bool:
    """Whether the backward pass now running uses the gradient of input ``i``.

    ``ctx.needs_input_grad`` says only whether the input requires grad. A Hessian-vector product asks for the
    weights' gradient alone and a mixed product for the decays' alone; the engine knows which of the graph's
    nodes such a pass executes (``torch.autograd.grad(..., inputs)`` prunes the rest), so the derivative that
    nobody reads is not computed: in an implicit hypergradient with per-weight decays, one ``exp`` and one
    parameter-sized buffer per tensor in every product. Where the engine cannot say (no pass running, as under
    ``torch.func`` transforms; a leaf without a view, as the weights are), the gradient is computed."""
    if not ctx.needs_input_grad[i]:
        return False
    try:
        if torch._C._current_graph_task_id() == -1:
            return True
        node = ctx.next_functions[i][0]
        return node is None or bool(torch._C._will_engine_execute_node(node))
    except (AttributeError, RuntimeError):
        return True


class _SavesInputs(torch.autograd.Function):
    """A function whose derivatives read only its inputs: it saves them, for reverse and forward mode."""

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)


class _DecayGrad(_SavesInputs):
    """:math:`2 g e^\\lambda w` (the penalty's gradient in ``w``), with its own derivatives."""

    generate_vmap_rule = True

    @staticmethod
    def forward(g: Tensor, lam: Tensor, w: Tensor) -> Tensor:
        if _scalar(lam):
            return w * (2.0 * g * lam.exp()).reshape(())
        return _mul(_mul(lam.exp(), w), 2.0 * g)

    @staticmethod
    def backward(ctx: Any, v: Tensor) -> tuple[Tensor | None, ...]:
        g, lam, w = ctx.saved_tensors
        dg = dlam = dw = None
        if _wanted(ctx, 0):
            dg = (2.0 * _dot(w * lam.exp(), v)).reshape(g.shape)
        if _wanted(ctx, 1):
            if _scalar(lam):
                dlam = (2.0 * g * lam.exp() * _dot(w, v)).reshape(lam.shape)
            else:
                dlam = _mul(_mul(_mul(lam.exp(), v), w), 2.0 * g)
        if _wanted(ctx, 2):
            dw = v * (2.0 * g * lam.exp()).reshape(()) if _scalar(lam) else _mul(_mul(lam.exp(), v), 2.0 * g)
        return dg, dlam, dw

    @staticmethod
    def jvp(ctx: Any, dg: Tensor | None, dlam: Tensor | None, dw: Tensor | None) -> Tensor:
        g, lam, w = ctx.saved_tensors
        c2 = 2.0 * lam.exp()
        out = torch.zeros_like(w)
        if dg is not None:
            out = out + c2 * dg * w
        if dlam is not None:
            out = out + c2 * g * dlam * w
        if dw is not None:
            out = out + c2 * g * dw
        return out


class _DecayLamGrad(_SavesInputs):
    """:math:`g e^\\lambda w^2` (the penalty's gradient in a per-weight ``lam``), with its own derivatives: a
    backward pass with ``create_graph`` that computes it (any second-order linearization, whether or not it
    asks for the decays' gradient) then allocates one buffer, not a product's graph of three."""

    generate_vmap_rule = True

    @staticmethod
    def forward(g: Tensor, lam: Tensor, w: Tensor) -> Tensor:
        return _mul(_mul(_mul(lam.exp(), w), w), g)

    @staticmethod
    def backward(ctx: Any, v: Tensor) -> tuple[Tensor | None, ...]:
        g, lam, w = ctx.saved_tensors
        dg = dlam = dw = None
        if _wanted(ctx, 0):
            dg = _dot(_mul(_mul(lam.exp(), w), w), v).reshape(g.shape)
        if _wanted(ctx, 1):
            dlam = _mul(_mul(_mul(_mul(lam.exp(), w), w), v), g)
        if _wanted(ctx, 2):
            dw = _mul(_mul(_mul(lam.exp(), w), v), 2.0 * g)
        return dg, dlam, dw

    @staticmethod
    def jvp(ctx: Any, dg: Tensor | None, dlam: Tensor | None, dw: Tensor | None) -> Tensor:
        g, lam, w = ctx.saved_tensors
        c = lam.exp()
        out = torch.zeros_like(w)
        if dg is not None:
            out = out + c * dg * w * w
        if dlam is not None:
            out = out + g * c * dlam * w * w
        if dw is not None:
            out = out + 2.0 * g * c * w * dw
        return out


class _DecayPenalty(_SavesInputs):
    """:math:`\\sum_j e^{\\lambda_j} w_j^2` for one tensor ``w`` (``lam`` one scalar or shaped like ``w``)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(lam: Tensor, w: Tensor) -> Tensor:
        if _scalar(lam):
            return lam.exp().reshape(()) * _dot(w, w)
        lf, wf = lam.reshape(-1), w.reshape(-1)
        return torch.stack([_dot(ws * ls.exp(), ws) for ls, ws in zip(lf.split(_CHUNK), wf.split(_CHUNK))]).sum()

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        lam, w = ctx.saved_tensors
        dlam = dw = None
        if _wanted(ctx, 0):
            if _scalar(lam):
                dlam = (g * lam.exp() * _dot(w, w)).reshape(lam.shape)
            elif torch.is_grad_enabled():  # create_graph: one fused buffer with its own derivatives
                dlam = _DecayLamGrad.apply(g, lam, w)
            else:
                dlam = _mul(_mul(_mul(lam.exp(), w), w), g)
        if _wanted(ctx, 1):
            dw = _DecayGrad.apply(g, lam, w)
        return dlam, dw

    @staticmethod
    def jvp(ctx: Any, dlam: Tensor | None, dw: Tensor | None) -> Tensor:
        lam, w = ctx.saved_tensors
        c = lam.exp()
        out = torch.zeros((), dtype=w.dtype, device=w.device)
        if dlam is not None:
            out = out + ((c * dlam).reshape(()) * _dot(w, w) if _scalar(lam) else _dot(c * dlam, w * w))
        if dw is not None:
            out = out + 2.0 * _dot(w * c, dw)
        return out


class _FixedDecayPenalty(torch.autograd.Function):
    """The penalty with per-weight decays that are constants here (no gradient, no transform: the inner steps of
    a training run). :math:`e^\\lambda w` is computed once by the forward pass and kept for the backward pass,
    whose gradient :math:`2 g\\, e^\\lambda w` is then one product: one ``exp`` per step instead of two, and no
    inner autograd function. A backward pass that builds a graph uses the differentiable :class:`_DecayGrad`."""

    @staticmethod
    def forward(ctx: Any, lam: Tensor, w: Tensor) -> Tensor:
        cw = lam.exp().mul_(w)
        ctx.save_for_backward(lam, w, cw)
        ctx.save_for_forward(w, cw)
        return _dot(cw, w)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        lam, w, cw = ctx.saved_tensors
        if not ctx.needs_input_grad[1]:
            return None, None
        if torch.is_grad_enabled():  # create_graph: the gradient must be differentiable in w
            return None, _DecayGrad.apply(g, lam, w)
        return None, cw * (2.0 * g)

    @staticmethod
    def jvp(ctx: Any, dlam: Tensor | None, dw: Tensor | None) -> Tensor:
        w, cw = ctx.saved_tensors
        out = torch.zeros((), dtype=w.dtype, device=w.device)
        if dlam is not None:
            out = out + _dot(cw * dlam, w)
        if dw is not None:
            out = out + 2.0 * _dot(cw, dw)
        return out


def decay_penalty(lam: Tensor, w: Tensor) -> Tensor:
    """:math:`\\sum_j e^{\\lambda_j} w_j^2` with lean first and second derivatives (see the module docstring).

    ``lam`` is one log-coefficient (a tensor with one element) or one per entry of ``w``.

    Example:
        >>> import torch
        >>> lam, w = torch.zeros(3, requires_grad=True), torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
        >>> value = decay_penalty(lam, w)
        >>> value, torch.autograd.grad(value, w)[0]
        (tensor(14., grad_fn=<_DecayPenaltyBackward>), tensor([2., 4., 6.]))
    """
    if not _scalar(lam) and not lam.requires_grad and not _wrapped(lam) and not _wrapped(w):
        return _FixedDecayPenalty.apply(lam, w)  # constant decays: cheaper steps, one buffer kept per step
    return _DecayPenalty.apply(_edge(lam), w)  # w itself: a view would make autograd sum its gradients out of place
