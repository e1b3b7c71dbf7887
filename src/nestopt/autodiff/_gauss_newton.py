"""The generalized Gauss-Newton matrix: a positive semi-definite stand-in for the Hessian.

For a loss :math:`L(w) = \\ell(f(w)) + R(w)` whose "head" :math:`\\ell` is convex in the model's outputs
:math:`z = f(w)` (cross-entropy, squared error, weighted or with soft targets),

.. math::  G = J^\\top \\nabla^2_{z} \\ell \\; J + \\nabla^2_w R, \\qquad J = \\partial z / \\partial w,

drops the term :math:`\\sum_j \\partial_{z_j} \\ell \\, \\nabla^2 z_j` of the Hessian that makes it indefinite away
from a minimum. With a convex head and a convex penalty (weight decay) :math:`G` is positive semi-definite, so
conjugate gradient never meets negative curvature on it (Schraudolph, 2002; Martens, 2010). A product
:math:`Gv` is one forward-mode-like pass for :math:`Jv` (a backward pass through the graph of
:math:`u \\mapsto J^\\top u`), a product with the small output Hessian, and one backward pass for
:math:`J^\\top`; the graphs are built once per point and reused for every product.

A loss exposes its split through ``gauss_newton_parts(params, hparams, batch) -> (z, head, rest)``:
:class:`nestopt.hparams.Objective`'s losses do, and :class:`GaussNewtonLoss` builds one from three functions.

Example:
    >>> import torch
    >>> from nestopt import autodiff
    >>> x, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, dtype=torch.float64)
    >>> loss = autodiff.GaussNewtonLoss(outputs=lambda p, h, b: b[0] @ p["w"],
    ...                                 head=lambda z, h, b: 0.5 * ((z - b[1]) ** 2).mean())
    >>> w = {"w": torch.zeros(3, dtype=torch.float64)}
    >>> lin = autodiff.linearize(loss, w, {}, (x, y), curvature="gauss-newton")
    >>> v = {"w": torch.ones(3, dtype=torch.float64)}
    >>> torch.allclose(lin.hvp(v)["w"], x.T @ x @ v["w"] / 20)   # linear model: G is the Hessian
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from nestopt.autodiff._core import edges_vjp, gradient_edges, vjp
from nestopt.tree import Tree

__all__ = ["GaussNewtonLoss", "GaussNewtonProducts"]


class GaussNewtonLoss:
    """``loss(params, hparams, batch) = head(outputs(params, hparams, batch), hparams, batch) + rest(...)``.

    Args:
        outputs: ``(params, hparams, batch) -> z``, the model's outputs.
        head: ``(z, hparams, batch) -> scalar``, convex in ``z`` (the criterion).
        rest: ``(params, hparams, batch) -> scalar`` or ``None``: terms outside the head (penalties); their
            exact Hessian is added to the Gauss-Newton matrix.
    """

    def __init__(
        self,
        outputs: Callable[[Tree, Tree, Any], Tensor],
        head: Callable[[Tensor, Tree, Any], Tensor],
        rest: Callable[[Tree, Tree, Any], Tensor] | None = None,
    ) -> None:
        self.outputs, self.head, self.rest = outputs, head, rest

    def gauss_newton_parts(
        self, params: Tree, hparams: Tree, batch: Any
    ) -> tuple[Tensor, Callable[[Tensor], Tensor], Tensor | None]:
        z = self.outputs(params, hparams, batch)
        rest = None if self.rest is None else self.rest(params, hparams, batch)
        return z, lambda out: self.head(out, hparams, batch), rest

    def __call__(self, params: Tree, hparams: Tree, batch: Any) -> Tensor:
        z, head, rest = self.gauss_newton_parts(params, hparams, batch)
        return head(z) if rest is None else head(z) + rest


class GaussNewtonProducts:
    """Products with :math:`G` at one point, from the outputs ``z`` (with their graph to the leaves ``w``),
    the head and the rest. Build inside ``torch.enable_grad()``.

    The graphs of :math:`u \\mapsto J^\\top u` and of the rest's gradient are kept through their gradient edges
    only, not their values (parameter-sized tensors that no product reads), and the rest's product is added into
    the Gauss-Newton product in place: a product allocates its output and the head's small temporaries.
    """

    def __init__(self, z: Tensor, head: Callable[[Tensor], Tensor], rest: Tensor | None, w: list[Tensor]) -> None:
        self.z, self.w = z, w
        self.z_leaf = z.detach().requires_grad_(True)
        self.grad_z = vjp([head(self.z_leaf)], [self.z_leaf], create_graph=True)[0]  # its graph: H_head products
        self.u = z.detach().new_zeros(z.shape).requires_grad_(True)
        # J^T u: linear in u, so its VJP in u is J v
        self._jt = gradient_edges(vjp([z], w, [self.u], create_graph=True))
        self._rest = (
            None if rest is None or not rest.requires_grad else gradient_edges(vjp([rest], w, create_graph=True))
        )

    def product(self, v: list[Tensor], *, batched: bool = False) -> list[Tensor]:
        """:math:`G v` for ``v`` shaped like ``w`` (with a leading batch dimension when ``batched``)."""
        kw: dict[str, Any] = {"retain_graph": True, "is_grads_batched": batched}
        jv = edges_vjp(self._jt, [self.u], v, **kw)[0]
        if jv is None:  # the outputs do not depend on w
            jv = self.u.new_zeros((v[0].shape[0], *self.u.shape) if batched else self.u.shape)
        hjv = vjp([self.grad_z], [self.z_leaf], [jv], **kw)[0]
        out = vjp([self.z], self.w, [hjv], **kw)
        if self._rest is not None:
            for o, r in zip(out, edges_vjp(self._rest, self.w, v, **kw)):
                if r is not None:
                    o.add_(r)  # o is a fresh output of this product
        return out
