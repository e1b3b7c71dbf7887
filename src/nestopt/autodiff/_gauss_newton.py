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
:class:`nestopt.hparams.Objective`'s losses do, and :class:`GaussNewtonLoss` builds one from three functions. The
rest is a tensor (differentiated by autograd), ``None``, or :class:`DecayTerms`: weight decays whose derivatives
are written out, so that the products add their curvature without a pass through the penalty's graph.

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

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from nestopt.autodiff._core import edges_vjp, gradient_edges, raw_vjp, vjp
from nestopt.autodiff._decays import BoundDecays, DecayTerms, Rest, add_terms
from nestopt.tree import Tree

__all__ = ["GaussNewtonLoss", "GaussNewtonProducts"]


class GaussNewtonLoss:
    """``loss(params, hparams, batch) = head(outputs(params, hparams, batch), hparams, batch) + rest(...)``.

    Args:
        outputs: ``(params, hparams, batch) -> z``, the model's outputs.
        head: ``(z, hparams, batch) -> scalar``, convex in ``z`` (the criterion).
        rest: ``(params, hparams, batch) -> scalar`` (or :class:`DecayTerms`) or ``None``: terms outside the
            head (penalties); their exact Hessian is added to the Gauss-Newton matrix.
    """

    def __init__(
        self,
        outputs: Callable[[Tree, Tree, Any], Tensor],
        head: Callable[[Tensor, Tree, Any], Tensor],
        rest: Callable[[Tree, Tree, Any], Tensor | DecayTerms] | None = None,
    ) -> None:
        self.outputs, self.head, self.rest = outputs, head, rest

    def gauss_newton_parts(
        self, params: Tree, hparams: Tree, batch: Any
    ) -> tuple[Tensor, Callable[[Tensor], Tensor], Rest]:
        z = self.outputs(params, hparams, batch)
        rest = None if self.rest is None else self.rest(params, hparams, batch)
        return z, lambda out: self.head(out, hparams, batch), rest

    def __call__(self, params: Tree, hparams: Tree, batch: Any) -> Tensor:
        z, head, rest = self.gauss_newton_parts(params, hparams, batch)
        if isinstance(rest, DecayTerms):
            rest = rest.total()
        return head(z) if rest is None else head(z) + rest


class GaussNewtonProducts:
    """Products with :math:`G` at one point, from the outputs ``z`` (with their graph to the leaves ``w`` and
    ``hparams``), the head and the rest, and the loss's exact gradient and mixed products from the same graphs.
    Build inside ``torch.enable_grad()``.

    The graph of :math:`u \\mapsto J^\\top u` is built at :math:`u = \\nabla_z \\ell`, so that its value is the
    head's part of the gradient :math:`\\nabla_w L = J^\\top \\nabla_z \\ell + \\nabla_w R` (:attr:`gradient_parts`)
    while its VJP in :math:`u` is :math:`J v` at any :math:`u`: one backward pass through the network with
    ``create_graph`` serves the gradient, the products and the mixed term. The graphs are kept through their
    gradient edges only, not their values (parameter-sized tensors that no product reads), the graph of
    :math:`J^\\top u` keeps none of the values that depend on :math:`u` (the layers' backward signals, which only
    a derivative in the weights reads; :func:`_keeping_no_value_of`), and the rest's product is added into the
    Gauss-Newton product in place: a product allocates its output and the head's small temporaries. Weight
    decays given as :class:`DecayTerms` get no graph at all: their value, gradient, products and mixed term come
    from their formulas.

    The mixed product :math:`\\partial_\\lambda (\\nabla_w L \\cdot x)` is exact (:meth:`mixed`):

    .. math::  \\partial_\\lambda (x^\\top J^\\top u)\\big|_u + (Jx)^\\top \\partial_\\lambda \\nabla_z \\ell
               + (\\nabla^2_z \\ell\\, J x)^\\top \\partial_\\lambda z + \\partial_\\lambda (x \\cdot \\nabla_w R),

    each term taken only where :math:`\\lambda` reaches its graph (a weight decay reaches only the last one).
    """

    def __init__(
        self, z: Tensor, head: Callable[[Tensor], Tensor], rest: Rest, w: list[Tensor], hparams: Sequence[Tensor] = (),
    ) -> None:  # fmt: skip
        self.z, self.w = z, w
        rest, self._decays = BoundDecays.split(rest, w)  # named weight decays: their formulas, no graph
        self.z_leaf = z.detach().requires_grad_(True)
        head_value = head(self.z_leaf)
        self.value = head_value.detach() if rest is None else head_value.detach() + rest.detach()
        self.grad_z = vjp([head_value], [self.z_leaf], create_graph=True)[0]  # its graph: H_head products
        self.u = self.grad_z.detach().requires_grad_(True)
        leaves = list(hparams)
        self._z_reads_h = _reaches(z, leaves)
        # J^T u: linear in u, so its VJP in u is J v; at u = grad_z its value is the head's gradient in w. Unless
        # a hyperparameter reaches z (the mixed term then differentiates this graph in it), the graph keeps none
        # of the values that depend on u: only derivatives in u are taken of it.
        with contextlib.nullcontext() if self._z_reads_h else _keeping_no_value_of(self.u):
            jt = vjp([z], w, [self.u], create_graph=True)
        rest_grad = None if rest is None or not rest.requires_grad else vjp([rest], w, create_graph=True)
        parts = [[t.detach() for t in part] for part in (jt, rest_grad) if part is not None]
        if self._decays is not None:
            decay_value, decay_grad = self._decays.value_and_gradient()
            self.value = self.value + decay_value
            parts.append(decay_grad)
        self.gradient_parts: list[list[Tensor]] | None = parts
        """The values :math:`J^\\top \\nabla_z \\ell` and :math:`\\nabla_w R` (``None`` once :meth:`drop_gradient` ran)."""
        self._jt = gradient_edges(jt)
        self._rest = None if rest_grad is None else gradient_edges(rest_grad)
        self._head_reads_h = _reaches(self.grad_z, leaves)

    def drop_gradient(self) -> None:
        """Free the gradient's values (the products and the mixed term do not need them)."""
        self.gradient_parts = None

    def product(self, v: list[Tensor], *, batched: bool = False) -> list[Tensor]:
        """:math:`G v` for ``v`` shaped like ``w`` (with a leading batch dimension when ``batched``)."""
        kw: dict[str, Any] = {"retain_graph": True, "is_grads_batched": batched}
        jv = self._jvp(v, kw)
        hjv = vjp([self.grad_z], [self.z_leaf], [jv], **kw)[0]
        out = vjp([self.z], self.w, [hjv], **kw)
        if self._rest is not None:
            for o, r in zip(out, edges_vjp(self._rest, self.w, v, **kw)):
                if r is not None:
                    o.add_(r)  # o is a fresh output of this product
        return out if self._decays is None else self._decays.add_product(out, v)

    def mixed(self, x: list[Tensor], hparams: list[Tensor]) -> list[Tensor | None]:
        """:math:`\\partial_\\lambda (\\nabla_w L \\cdot x)` for each of ``hparams`` (``None`` where the gradient
        does not depend on it)."""
        kw: dict[str, Any] = {"retain_graph": True}
        terms: list[list[Tensor | None]] = []
        if self._rest is not None:
            terms.append(edges_vjp(self._rest, hparams, x, **kw))
        if self._decays is not None:
            terms.append(self._decays.mixed(x, hparams))
        if self._z_reads_h or self._head_reads_h:
            jx = self._jvp(x, kw)
            if self._head_reads_h:
                terms.append(raw_vjp([self.grad_z], hparams, [jx], **kw))
            if self._z_reads_h:
                hjx = vjp([self.grad_z], [self.z_leaf], [jx], **kw)[0]
                terms.append(raw_vjp([self.z], hparams, [hjx], **kw))
                terms.append(edges_vjp(self._jt, hparams, x, **kw))
        out: list[Tensor | None] = [None] * len(hparams)
        for term in terms:
            out = add_terms(out, term)
        return out

    def _jvp(self, v: list[Tensor], kw: dict[str, Any]) -> Tensor:
        """:math:`J v` (a VJP of :math:`J^\\top u` in :math:`u`); zeros when the outputs do not depend on ``w``."""
        jv = edges_vjp(self._jt, [self.u], v, **kw)[0]
        if jv is None:
            batched = kw.get("is_grads_batched", False)
            jv = self.u.new_zeros((v[0].shape[0], *self.u.shape) if batched else self.u.shape)
        return jv


def _reaches(t: Tensor, leaves: list[Tensor]) -> bool:
    """Whether the autograd graph of ``t`` reads any of the leaf tensors ``leaves``."""
    targets = {id(leaf) for leaf in leaves}
    if not targets or t.grad_fn is None:
        return False
    seen: set[int] = set()
    stack = [t.grad_fn]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)  # an AccumulateGrad node holds its leaf
        if variable is not None and id(variable) in targets:
            return True
        stack.extend(fn for fn, _ in node.next_functions if fn is not None)
    return False


class _Dropped(NamedTuple):
    """What :func:`_keeping_no_value_of` keeps of a dropped value."""

    shape: torch.Size
    dtype: torch.dtype
    device: torch.device


@contextlib.contextmanager
def _keeping_no_value_of(u: Tensor) -> Iterator[None]:
    """Record a graph that is linear in the leaf ``u`` without the values in it that depend on ``u``.

    Of a function linear in ``u`` (here :math:`J^\\top u`, a backward pass run with ``create_graph``) a derivative
    in ``u`` reads none of them: each product in its graph has at most one factor that depends on ``u``, and the
    derivative in that factor reads only the others. Those values serve derivatives in the other inputs (the
    weights, through the activations), which a Gauss-Newton product never takes; without them the graph holds
    about one activation-sized buffer less per hidden layer (the backward signal of each layer that a later
    weight multiplies). Autograd unpacks every value a node saved, needed or not, so a dropped value comes back
    as a broadcast zero of its shape, which only the derivatives that nobody asks for read.

    Which values depend on ``u`` is found by walking their graphs, each node once. The walk stops at nodes
    numbered before ``u`` (the forward pass's, recorded earlier on this thread), which cannot read ``u``. Nodes
    that a CUDA device's backward thread records carry that thread's numbers: one numbered below ``u`` is taken
    for old and keeps its value. An error of the walk can only keep a value, never drop one that is read.
    """
    try:
        marker: Any = u.view_as(u).grad_fn
        start = marker._sequence_nr()
        memo: dict[Any, bool] = {marker.next_functions[0][0]: True}  # u's own node reads u
    except (AttributeError, IndexError, RuntimeError):  # a torch without these introspection hooks
        yield
        return

    def reads_u(node: Any) -> bool:
        stack = [(node, False)]
        while stack:
            n, children_done = stack.pop()
            if n in memo:
                continue
            if children_done:
                memo[n] = any(memo.get(f, False) for f, _ in n.next_functions if f is not None)
            elif n._sequence_nr() < start:
                memo[n] = False
            else:
                stack.append((n, True))
                stack.extend((f, False) for f, _ in n.next_functions if f is not None and f not in memo)
        return memo[node]

    def pack(t: Tensor) -> Any:
        if t.requires_grad and t.grad_fn is not None and reads_u(t.grad_fn):
            return _Dropped(t.shape, t.dtype, t.device)
        return t

    def unpack(saved: Any) -> Tensor:
        if isinstance(saved, _Dropped):
            return torch.zeros((), dtype=saved.dtype, device=saved.device).expand(saved.shape)
        return saved

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            yield
    finally:
        memo.clear()  # the graph keeps its values' hooks: the walk's record must not keep the graph alive
