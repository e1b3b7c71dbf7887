"""Weight decays with their derivatives written out, for linearizations that would otherwise differentiate the
penalty's graph.

A weight decay towards a centre :math:`c` (zero for a plain decay; the meta-parameters for iMAML's proximal
term; the pre-trained weights for L2-SP), :math:`R = \\sum_k \\sum_j e^{\\lambda_{kj}} (w_{kj} - c_{kj})^2`, has a
diagonal Hessian and mixed derivatives that are elementwise products:

.. math::  \\nabla_{w_k} R = 2 e^{\\lambda_k} (w_k - c_k), \\qquad \\nabla^2_{w_k w_k} R\\, v = 2 e^{\\lambda_k} v,
           \\qquad \\partial_{\\lambda_k} (x \\cdot \\nabla_w R) = 2 e^{\\lambda_k} (w_k - c_k)\\, x_k,
           \\qquad \\partial_{c_k} (x \\cdot \\nabla_w R) = -2 e^{\\lambda_k} x_k.

Differentiated by autograd, every curvature product and every mixed term is a backward pass through the
penalty's graph: per weight tensor, an autograd function's call and its bookkeeping, several times what the
elementwise operation costs on a small network. A loss that names its decays (:class:`DecayTerms`, which
:class:`nestopt.hparams.Objective` hands to :func:`nestopt.autodiff.linearize`) gets them from these formulas
instead (:class:`BoundDecays`), for the exact Hessian (``mode="rev-rev"``) and the Gauss-Newton matrix alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from nestopt.autodiff._core import raw_vjp

__all__ = ["BoundDecays", "DecayTerms", "Rest", "add_terms"]

_Bound = tuple[int, Tensor, "Tensor | None"]  # a decay bound to a linearization: (weight's index, lam, centre)


class DecayTerms:
    """The weight decays of a loss's rest (the terms outside the criterion), named so that a linearization can
    write out their derivatives (:mod:`nestopt.autodiff._decays`): :math:`R = \\sum_k \\sum_j e^{\\lambda_{kj}}
    (w_{kj} - c_{kj})^2 + R_{\\text{other}}`, with centres :math:`c` zero unless given.

    A loss's ``gauss_newton_parts`` may return one as its rest (the losses of :class:`nestopt.hparams.Objective`
    with a :class:`~nestopt.hparams.WeightDecay` do). The formulas apply when every weight is one of the
    tensors the linearization differentiates in; otherwise (a weight computed from them, a batched transform)
    the rest is ``total()``, differentiated by autograd.

    Args:
        decays: pairs ``(lam, w)`` of a log-coefficient tensor (one element, or one per entry of ``w``) and a
            weight, or triples ``(lam, w, centre)`` with a centre shaped like ``w``: a constant, a hyperparameter
            (iMAML's meta-parameters) or a tensor computed from the hyperparameters. A coefficient that is no
            hyperparameter (a fixed proximal strength) is a constant ``lam``.
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
        self,
        decays: Sequence[tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]],
        *,
        total: Callable[[], Tensor],
        other: Tensor | None = None,
    ) -> None:
        self.decays = [(d[0], d[1], d[2] if len(d) > 2 else None) for d in decays]
        self.total, self.other = total, other

    def bind(self, w: Sequence[Tensor]) -> list[_Bound] | None:
        """The decays as ``(index of the weight in w, lam, centre)``, or ``None`` when the formulas do not apply."""
        index = {id(t): i for i, t in enumerate(w)}
        bound = []
        for lam, weight, centre in self.decays:
            if id(weight) not in index or _wrapped(lam) or _wrapped(weight) or lam.numel() not in (1, weight.numel()):
                return None
            if centre is not None and (_wrapped(centre) or centre.shape != weight.shape):
                return None
            bound.append((index[id(weight)], lam, centre))
        return bound


Rest = Tensor | DecayTerms | None
"""The rest of a Gauss-Newton split: a differentiable scalar, weight decays named for their formulas, or none."""


class BoundDecays:
    """Weight decays bound to the weights ``w`` of a linearization: their value, gradient, curvature products
    and mixed products from the formulas, with no graph. The curvatures :math:`2 e^\\lambda` are computed by the
    first product and kept for the others and the mixed term (one weight-sized buffer for per-entry
    coefficients, not alive while a caller computes its right-hand side after the linearization); several
    decays of one weight (a weight decay and a proximal term) are kept as the sum of their curvatures, so that a
    product is one fused multiply-add per weight."""

    def __init__(self, pairs: list[_Bound], w: Sequence[Tensor]) -> None:
        self.pairs, self.w = pairs, [t.detach() for t in w]
        self._decays_of = Counter(i for i, _, _ in pairs)  # weight -> how many decays it has
        self._curvatures: dict[int, Tensor] | None = None  # weight -> the sum of its decays' curvatures

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
        """:math:`\\sum e^\\lambda (w - c)^2` and the gradient :math:`2 e^\\lambda (w - c)`, one tensor per weight
        (zeros where no decay applies)."""
        value = self.w[0].new_zeros(())
        grad: list[Tensor | None] = [None] * len(self.w)
        for i, lam, centre in self.pairs:
            w = _offset(self.w[i], centre)
            cw = _curvature(lam, w).mul_(w) if lam.numel() > 1 else _curvature(lam, w) * w
            value = value + 0.5 * torch.dot(cw.reshape(-1), w.reshape(-1))
            g = grad[i]
            grad[i] = cw if g is None else g.add_(cw)
        return value, [torch.zeros_like(w) if g is None else g for w, g in zip(self.w, grad)]

    def add_product(self, out: list[Tensor], v: Sequence[Tensor]) -> list[Tensor]:
        """``out += 2 e^lam v`` in place for each decay (``v`` and ``out`` may carry a leading batch dimension)."""
        for i, c in self._summed_curvatures().items():
            out[i].addcmul_(v[i], c)
        return out

    def mixed(self, x: Sequence[Tensor], hparams: Sequence[Tensor]) -> list[Tensor | None]:
        """:math:`\\partial_h (x \\cdot 2 e^\\lambda (w - c))` for each of ``hparams`` ``h``: :math:`2 e^\\lambda (w - c)
        x` in the log-coefficient (summed over its entries when it is a single one) and :math:`-2 e^\\lambda x` in
        the centre, carried through any map that made ``lam`` or the centre from the hyperparameters (``None``
        where no decay reaches a hyperparameter)."""
        index = {id(t): j for j, t in enumerate(hparams)}
        out: list[Tensor | None] = [None] * len(hparams)
        summed = self._summed_curvatures()
        for i, lam, centre in self.pairs:
            c = summed[i] if self._decays_of[i] == 1 else _curvature(lam, self.w[i])
            if _depends(lam, index):
                w = _offset(self.w[i], centre)
                if lam.numel() == 1:
                    d = (c * torch.dot(w.reshape(-1), x[i].reshape(-1))).reshape(lam.shape)
                else:
                    d = (c * w).mul_(x[i]).reshape(lam.shape)
                out = _add_into(out, lam, d, index, hparams)
            if centre is not None and _depends(centre, index):
                out = _add_into(out, centre, (c * x[i]).neg_(), index, hparams)
        return out

    def _summed_curvatures(self) -> dict[int, Tensor]:
        if self._curvatures is None:
            self._curvatures = {}
            for i, lam, _ in self.pairs:
                c, kept = _curvature(lam, self.w[i]), self._curvatures.get(i)
                if kept is not None:  # into whichever is weight-sized (a scalar one broadcasts)
                    c = kept.add_(c) if kept.numel() >= c.numel() else c.add_(kept)
                self._curvatures[i] = c
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


def _depends(t: Tensor, index: dict[int, int]) -> bool:
    """Whether ``t`` is one of the hyperparameters (``index``: their ids) or computed from tensors with grad."""
    return id(t) in index or t.requires_grad


def _add_into(
    out: list[Tensor | None], target: Tensor, d: Tensor, index: dict[int, int], hparams: Sequence[Tensor]
) -> list[Tensor | None]:
    """``out`` plus the cotangent ``d`` of ``target``: in place when ``target`` is a hyperparameter, else carried
    to the hyperparameters through the map that made it."""
    if id(target) in index:
        j = index[id(target)]
        out[j] = d if out[j] is None else out[j].add_(d)  # type: ignore[union-attr]
        return out
    return add_terms(out, raw_vjp([target], list(hparams), [d], retain_graph=True))


def _offset(w: Tensor, centre: Tensor | None) -> Tensor:
    """:math:`w - c` (``w`` itself without a centre)."""
    return w if centre is None else w - centre.detach()


def _curvature(lam: Tensor, like: Tensor) -> Tensor:
    """:math:`2 e^\\lambda`, the decay's curvature, shaped to broadcast against ``like`` and batches of it."""
    lam = lam.detach()
    return (lam.reshape(()) if lam.numel() == 1 else lam.reshape(like.shape)).exp().mul_(2.0)
