"""Weight decays with their derivatives written out, for linearizations that would otherwise differentiate the
penalty's graph.

A weight decay :math:`R = \\sum_k \\sum_j e^{\\lambda_{kj}} w_{kj}^2` has a diagonal Hessian and a mixed derivative
that is one elementwise product:

.. math::  \\nabla_{w_k} R = 2 e^{\\lambda_k} w_k, \\qquad \\nabla^2_{w_k w_k} R\\, v = 2 e^{\\lambda_k} v,
           \\qquad \\partial_{\\lambda_k} (x \\cdot \\nabla_w R) = 2 e^{\\lambda_k} w_k x_k.

Differentiated by autograd, every curvature product and every mixed term is a backward pass through the
penalty's graph: per weight tensor, an autograd function's call and its bookkeeping, several times what the
elementwise operation costs on a small network. A loss that names its decays (:class:`DecayTerms`, which
:class:`nestopt.hparams.Objective` hands to :func:`nestopt.autodiff.linearize`) gets them from these formulas
instead (:class:`BoundDecays`), for the exact Hessian (``mode="rev-rev"``) and the Gauss-Newton matrix alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from nestopt.autodiff._core import raw_vjp

__all__ = ["BoundDecays", "DecayTerms", "Rest", "add_terms"]


class DecayTerms:
    """The weight decays of a loss's rest (the terms outside the criterion), named so that a linearization can
    write out their derivatives (:mod:`nestopt.autodiff._decays`): :math:`R = \\sum_k \\sum_j e^{\\lambda_{kj}}
    w_{kj}^2 + R_{\\text{other}}`.

    A loss's ``gauss_newton_parts`` may return one as its rest (the losses of :class:`nestopt.hparams.Objective`
    with a :class:`~nestopt.hparams.WeightDecay` do). The formulas apply when every weight is one of the
    tensors the linearization differentiates in; otherwise (a weight computed from them, a batched transform)
    the rest is ``total()``, differentiated by autograd.

    Args:
        decays: pairs ``(lam, w)`` of a log-coefficient tensor (one element, or one per entry of ``w``) and a
            weight.
        total: ``() -> tensor``, the whole rest (decays and other terms) as one differentiable scalar.
        other: the rest's terms other than the decays, a differentiable scalar, or ``None``.

    Example:
        >>> import torch
        >>> from nestopt import autodiff
        >>> x, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, dtype=torch.float64)
        >>> lam = torch.full((3,), -1.0, dtype=torch.float64)
        >>> penalty = lambda p, h: (h["lam"].exp() * p["w"] ** 2).sum()
        >>> loss = autodiff.GaussNewtonLoss(
        ...     outputs=lambda p, h, b: b[0] @ p["w"], head=lambda z, h, b: 0.5 * ((z - b[1]) ** 2).mean(),
        ...     rest=lambda p, h, b: autodiff.DecayTerms([(h["lam"], p["w"])], total=lambda: penalty(p, h)))
        >>> w, v = {"w": torch.zeros(3, dtype=torch.float64)}, {"w": torch.ones(3, dtype=torch.float64)}
        >>> lin = autodiff.linearize(loss, w, {"lam": lam}, (x, y))
        >>> torch.allclose(lin.hvp(v)["w"], x.T @ x @ v["w"] / 20 + 2 * lam.exp() * v["w"])
        True
    """

    def __init__(
        self, decays: Sequence[tuple[Tensor, Tensor]], *, total: Callable[[], Tensor], other: Tensor | None = None
    ) -> None:
        self.decays, self.total, self.other = list(decays), total, other

    def bind(self, w: Sequence[Tensor]) -> list[tuple[int, Tensor]] | None:
        """The pairs as ``(index of the weight in w, lam)``, or ``None`` when the formulas do not apply."""
        index = {id(t): i for i, t in enumerate(w)}
        bound = []
        for lam, weight in self.decays:
            if id(weight) not in index or _wrapped(lam) or _wrapped(weight) or lam.numel() not in (1, weight.numel()):
                return None
            bound.append((index[id(weight)], lam))
        return bound


Rest = Tensor | DecayTerms | None
"""The rest of a Gauss-Newton split: a differentiable scalar, weight decays named for their formulas, or none."""


class BoundDecays:
    """Weight decays bound to the weights ``w`` of a linearization: their value, gradient, curvature products
    and mixed products from the formulas, with no graph. The curvatures :math:`2 e^\\lambda` are computed by the
    first product and kept for the others and the mixed term (one weight-sized buffer for per-entry
    coefficients, not alive while a caller computes its right-hand side after the linearization)."""

    def __init__(self, pairs: list[tuple[int, Tensor]], w: Sequence[Tensor]) -> None:
        self.pairs, self.w = pairs, [t.detach() for t in w]
        self._curvatures: list[Tensor] | None = None

    @classmethod
    def split(cls, rest: Rest, w: Sequence[Tensor]) -> tuple[Tensor | None, BoundDecays | None]:
        """``rest`` as the part that autograd differentiates and the decays bound to ``w`` (``None`` if none)."""
        if not isinstance(rest, DecayTerms):
            return rest, None
        pairs = rest.bind(w)
        if pairs is None:
            return rest.total(), None
        return rest.other, cls(pairs, w)

    def value_and_gradient(self) -> tuple[Tensor, list[Tensor]]:
        """:math:`\\sum e^\\lambda w^2` and the gradient :math:`2 e^\\lambda w`, one tensor per weight (zeros where
        no decay applies)."""
        value = self.w[0].new_zeros(())
        grad: list[Tensor | None] = [None] * len(self.w)
        for i, lam in self.pairs:
            w = self.w[i]
            cw = _curvature(lam, w).mul_(w) if lam.numel() > 1 else _curvature(lam, w) * w
            value = value + 0.5 * torch.dot(cw.reshape(-1), w.reshape(-1))
            g = grad[i]
            grad[i] = cw if g is None else g.add_(cw)
        return value, [torch.zeros_like(w) if g is None else g for w, g in zip(self.w, grad)]

    def add_product(self, out: list[Tensor], v: Sequence[Tensor]) -> list[Tensor]:
        """``out += 2 e^lam v`` in place for each decay (``v`` and ``out`` may carry a leading batch dimension)."""
        for (i, _), c in zip(self.pairs, self._curvature_list()):
            out[i].addcmul_(v[i], c)
        return out

    def mixed(self, x: Sequence[Tensor], hparams: Sequence[Tensor]) -> list[Tensor | None]:
        """:math:`\\partial_\\lambda (x \\cdot 2 e^\\lambda w)` for each of ``hparams``: :math:`2 e^\\lambda w x` on each
        decay (summed over the entries of a single log-coefficient), carried through any map that made ``lam``
        from them (``None`` where no decay reaches a hyperparameter)."""
        index = {id(t): j for j, t in enumerate(hparams)}
        out: list[Tensor | None] = [None] * len(hparams)
        for (i, lam), c in zip(self.pairs, self._curvature_list()):
            w = self.w[i]
            if lam.numel() == 1:
                d = (c * torch.dot(w.reshape(-1), x[i].reshape(-1))).reshape(lam.shape)
            else:
                d = (c * w).mul_(x[i]).reshape(lam.shape)
            if id(lam) in index:
                j = index[id(lam)]
                out[j] = d if out[j] is None else out[j].add_(d)  # type: ignore[union-attr]
            elif lam.requires_grad:
                out = add_terms(out, raw_vjp([lam], list(hparams), [d], retain_graph=True))
            # else a constant coefficient: no hyperparameter behind it
        return out

    def _curvature_list(self) -> list[Tensor]:
        if self._curvatures is None:
            self._curvatures = [_curvature(lam, self.w[i]) for i, lam in self.pairs]
        return self._curvatures


def add_terms(total: list[Tensor | None], term: Sequence[Tensor | None]) -> list[Tensor | None]:
    """``total + term`` entry by entry, ``None`` standing for zero; into ``total``'s fresh tensors in place."""
    for j, t in enumerate(term):
        if t is not None:
            total[j] = t if total[j] is None else total[j].add_(t)  # type: ignore[union-attr]
    return total


def _wrapped(t: Tensor) -> bool:
    f = torch._C._functorch
    return f.is_functorch_wrapped_tensor(t) or f.is_legacy_batchedtensor(t)


def _curvature(lam: Tensor, like: Tensor) -> Tensor:
    """:math:`2 e^\\lambda`, the decay's curvature, shaped to broadcast against ``like`` and batches of it."""
    lam = lam.detach()
    return (lam.reshape(()) if lam.numel() == 1 else lam.reshape(like.shape)).exp().mul_(2.0)
