"""Linearizations of a loss's gradient: Hessian-vector products and mixed second-derivative products."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from nestopt import _rng, tree
from nestopt.autodiff._core import (
    Counter,
    LossFn,
    _leaves_requiring_grad,
    check_loss_value,
    edges_vjp,
    evaluate_loss,
    gradient_edges,
    raw_vjp,
    vjp,
)
from nestopt.autodiff._decays import BoundDecays, add_terms
from nestopt.autodiff._gauss_newton import GaussNewtonProducts
from nestopt.errors import InvalidArgumentError, NonFiniteError, UnsupportedError
from nestopt.tree import Tree

__all__ = [
    "CURVATURES",
    "DEFAULT_HVP_MODE",
    "Curvature",
    "HVPMode",
    "Linearization",
    "hvp",
    "linearize",
    "mixed_jvp",
    "mixed_vjp",
]

HVPMode = Literal["rev-rev", "fwd-rev"]
_MODES = ("rev-rev", "fwd-rev")
DEFAULT_HVP_MODE: HVPMode = "rev-rev"
Curvature = Literal["hessian", "gauss-newton"]
CURVATURES = ("hessian", "gauss-newton")


class Linearization:
    """The gradient of ``loss`` at ``(params, hparams)``, ready for repeated second-order products.

    Build it with :func:`linearize`. With ``mode="rev-rev"`` the gradient's autograd graph is built once and
    kept until the object is garbage collected; every :meth:`hvp`, :meth:`hvp_batched` and :meth:`mixed_vjp`
    is then a single backward pass through it.

    Every evaluation of the loss (the first one, and each forward-mode product with ``mode="fwd-rev"``) runs
    with torch's global generators seeded from ``seed`` (by default one draw from the global generator), so
    a loss with dropout sees the same masks in every product: the operator is one fixed matrix.

    With ``curvature="gauss-newton"`` the products :meth:`hvp` and :meth:`hvp_batched` are with the
    generalized Gauss-Newton matrix instead of the Hessian (:mod:`nestopt.autodiff._gauss_newton`; the loss
    must expose ``gauss_newton_parts``); the gradient and the mixed products stay exact. A loss whose split
    names its weight decays (:class:`~nestopt.autodiff.DecayTerms`, as :class:`nestopt.hparams.Objective`'s
    do) gets their part of the value, the gradient and every product from their formulas, with either curvature
    (``mode="rev-rev"``): the gradient's graph then holds none of the penalty.

    The gradient's value is available as :attr:`grad` (and its norm as :attr:`grad_norm`). With
    ``keep_grad=False`` only the norm is kept: the products need the gradient's graph, not its value, so
    one parameter-sized tensor is freed for as long as the linearization lives (what an implicit
    hypergradient does: it reads only the norm).
    """

    def __init__(
        self,
        loss: LossFn,
        params: Tree,
        hparams: Tree,
        batch: Any,
        *,
        mode: HVPMode = DEFAULT_HVP_MODE,
        counter: Counter | None = None,
        name: str = "inner_loss",
        seed: int | None = None,
        curvature: Curvature = "hessian",
        keep_grad: bool = True,
    ) -> None:
        if mode not in _MODES:
            raise InvalidArgumentError(f"mode must be one of {_MODES}, got {mode!r}")
        if curvature not in CURVATURES:
            raise InvalidArgumentError(f"curvature must be one of {CURVATURES}, got {curvature!r}")
        parts = getattr(loss, "gauss_newton_parts", None)
        if curvature == "gauss-newton":
            if mode != "rev-rev":
                raise InvalidArgumentError('curvature="gauss-newton" forms its products in mode="rev-rev"')
            if parts is None:
                raise UnsupportedError(
                    f"{name} does not expose its Gauss-Newton split (a gauss_newton_parts method): build it with "
                    "nestopt.hparams.Objective or nestopt.autodiff.GaussNewtonLoss, or use curvature='hessian'"
                )
        self.mode: HVPMode = mode
        self.curvature: Curvature = curvature
        self._gn: GaussNewtonProducts | None = None
        self._decays: BoundDecays | None = None  # the weight decays the loss names, for an exact rev-rev Hessian
        self.counter = counter if counter is not None else Counter()
        self._loss, self._batch, self._name = loss, batch, name
        self.seed = _rng.fresh_seed() if seed is None else int(seed)
        self._w = _leaves_requiring_grad(params)
        self._h = _leaves_requiring_grad(hparams)
        keys = list(self._w)
        w = [self._w[k] for k in keys]
        self._edges = gradient_edges([])
        with torch.enable_grad(), _rng.fork(self.seed):
            if curvature == "gauss-newton":
                assert parts is not None
                z, head, rest = evaluate_loss(parts, self._w, self._h, batch, name, scalar=False)
                self._gn = GaussNewtonProducts(z, head, rest, w, hparams=list(self._h.values()))
                value = check_loss_value(self._gn.value, name)
                assert self._gn.gradient_parts is not None
                pieces = self._gn.gradient_parts  # the head's and the rest's parts of the gradient
                self._gn.drop_gradient()
            else:
                value = self._evaluate_splitting_decays(loss, parts, w, batch, name)
                g = vjp([value], w, create_graph=(mode == "rev-rev"))
                self._edges = gradient_edges(g)  # the products go through the gradient's graph, not its value
                pieces = [[t.detach() for t in g]]
                del g
                if self._decays is not None:  # their value and gradient from the formulas
                    decay_value, decay_grad = self._decays.value_and_gradient()
                    value = value.detach() + decay_value
                    pieces.append(decay_grad)
        self.counter.grads += 1
        self.last_unused: tuple[str, ...] = ()
        self.value: Tensor = value.detach()
        self.like: Tree = tree.detach(self._w)
        """A tree shaped like ``params`` (the point itself, no copy)."""
        self.grad_norm: float = _checked_norm_of_sum(pieces, name)
        """The norm of the gradient :math:`\\|\\nabla_w L\\|`."""
        self._grad: Tree | None = None
        if keep_grad:
            first, *others = pieces
            self._grad = {k: first[i] + sum(p[i] for p in others) if others else first[i] for i, k in enumerate(keys)}
        del pieces

    def _evaluate_splitting_decays(self, loss: LossFn, parts: Any, w: list[Tensor], batch: Any, name: str) -> Tensor:
        """The loss, less the weight decays it names (:class:`~nestopt.autodiff.DecayTerms`) when its Hessian
        products go through the gradient's graph (``rev-rev``): those are then added from their formulas
        (:attr:`_decays`), and the gradient's graph holds none of the penalty."""
        if parts is None or self.mode != "rev-rev":
            return evaluate_loss(loss, self._w, self._h, batch, name)

        def split(p: Tree, h: Tree, b: Any) -> tuple[Tensor, BoundDecays | None]:
            z, head, rest = parts(p, h, b)
            rest, decays = BoundDecays.split(rest, w)
            return (head(z) if rest is None else head(z) + rest), decays

        value, self._decays = evaluate_loss(split, self._w, self._h, batch, name, scalar=False)
        return check_loss_value(value, name)

    @property
    def grad(self) -> Tree:
        """The gradient :math:`\\nabla_w L` (detached), unless built with ``keep_grad=False``."""
        if self._grad is None:
            raise UnsupportedError(
                "this linearization was built with keep_grad=False and kept only the gradient's norm (grad_norm); "
                "build it with keep_grad=True to read the gradient"
            )
        return self._grad

    # -- products ---------------------------------------------------------------------------------
    def _pure(self) -> Callable[[Tree, Tree], Tensor]:
        loss, batch = self._loss, self._batch
        return lambda w, h: loss(w, h, batch)

    def _through_gradient(self, cotangents: list[Tensor], **kw: Any) -> Tree:
        """The VJP of the gradient's graph with respect to ``params`` (zeros where it does not depend on one)."""
        got = edges_vjp(self._edges, list(self._w.values()), cotangents, **kw)
        batch = (int(cotangents[0].shape[0]),) if kw.get("is_grads_batched") and cotangents else ()
        return {
            k: w.new_zeros((*batch, *w.shape)) if t is None else t.detach() for (k, w), t in zip(self._w.items(), got)
        }

    def _with_decays(self, out: Tree, v: Tree) -> Tree:
        """``out`` (a fresh product through the gradient's graph) plus the named decays' curvature times ``v``."""
        if self._decays is not None:
            self._decays.add_product([out[k] for k in self._w], [v[k] for k in self._w])
        return out

    def hvp(self, v: Tree) -> Tree:
        """:math:`\\nabla^2_{ww} L \\; v` for a tree ``v`` shaped like ``params`` (or :math:`G v`, the
        Gauss-Newton product, with ``curvature="gauss-newton"``)."""
        self.counter.hvps += 1
        if self._gn is not None:
            with torch.enable_grad():
                return dict(zip(self._w, (g.detach() for g in self._gn.product([v[k] for k in self._w]))))
        if self.mode == "rev-rev":
            return self._with_decays(self._through_gradient([v[k] for k in self._w], retain_graph=True), v)
        f = self._pure()
        h = tree.detach(self._h)

        def grad_fn(w: Tree) -> Tree:
            return torch.func.grad(f)(w, h)

        with _rng.fork(self.seed):
            out = torch.func.jvp(grad_fn, (tree.detach(self._w),), (v,))[1]
        return tree.detach(out)

    def hvp_batched(self, vs: Tree) -> Tree:
        """Hessian products with a batch of vectors: every leaf of ``vs`` has a leading batch dimension."""
        n = next(iter(vs.values())).shape[0]
        self.counter.hvps += n
        if self._gn is not None:
            with torch.enable_grad():
                out = self._gn.product([vs[k] for k in self._w], batched=True)
            return dict(zip(self._w, (g.detach() for g in out)))
        if self.mode == "rev-rev":
            products = self._through_gradient([vs[k] for k in self._w], retain_graph=True, is_grads_batched=True)
            return self._with_decays(products, vs)
        f = self._pure()
        h = tree.detach(self._h)
        w = tree.detach(self._w)
        grad_fn = torch.func.grad(lambda w_: f(w_, h))
        with _rng.fork(self.seed):
            out = torch.func.vmap(lambda v: torch.func.jvp(grad_fn, (w,), (v,))[1], randomness="same")(vs)
        return tree.detach(out)

    def mixed_vjp(self, v: Tree) -> Tree:
        """:math:`(\\partial^2 L / \\partial \\lambda \\partial w)\\, v`, a tree shaped like ``hparams``.

        Hyperparameters on which the gradient does not depend at all (no autograd path) get zeros, and their
        names are left in :attr:`last_unused`.
        """
        self.counter.mixed += 1
        keys = list(self._h)
        if self._gn is not None:
            with torch.enable_grad():
                got = self._gn.mixed([v[k] for k in self._w], [self._h[k] for k in keys])
        elif self.mode == "rev-rev":
            hs, xs = [self._h[k] for k in keys], [v[k] for k in self._w]
            got = edges_vjp(self._edges, hs, xs, retain_graph=True)
            if self._decays is not None:
                got = add_terms(got, self._decays.mixed(xs, hs))
        else:
            f = self._pure()
            with torch.enable_grad(), _rng.fork(self.seed):
                directional = torch.func.jvp(lambda w_: f(w_, self._h), (tree.detach(self._w),), (v,))[1]
            got = raw_vjp([directional], [self._h[k] for k in keys])
        self.last_unused = tuple(k for k, g in zip(keys, got) if g is None)
        return {k: torch.zeros_like(self._h[k]) if g is None else g.detach() for k, g in zip(keys, got)}


def _checked_norm_of_sum(pieces: list[list[Tensor]], name: str) -> float:
    """:math:`\\|\\sum_p \\text{pieces}_p\\|` over every leaf, without forming the sum, and a
    :class:`NonFiniteError` naming ``name`` if a piece holds NaN or inf; one host read for both.

    .. math::  \\Big\\|\\sum_p a_p\\Big\\|^2 = \\sum_p \\|a_p\\|^2 + 2 \\sum_{p < q} a_p \\cdot a_q,

    with the leaves' norms from one multi-tensor kernel per piece, summed in float64. A piece is finite when its
    leaves' norms are; a norm that overflows is confirmed entry by entry before anything is raised.
    """
    norms = [n.double() for piece in pieces if piece for n in tree.leaf_norms(piece)]
    if not norms:
        return 0.0
    leaf_norms = torch.stack(norms)
    total = leaf_norms.square().sum()
    for i, a in enumerate(pieces):
        for b in pieces[i + 1 :]:
            total = total + 2.0 * sum(torch.dot(x.reshape(-1), y.reshape(-1)).double() for x, y in zip(a, b))
    finite, square = torch.stack([torch.isfinite(leaf_norms).all().double(), total]).tolist()
    if not finite and not all(bool(torch.isfinite(t).all()) for piece in pieces for t in piece):
        raise NonFiniteError(f"the gradient of {name} with respect to params contains NaN or inf")
    return max(square, 0.0) ** 0.5


def linearize(
    loss: LossFn,
    params: Tree,
    hparams: Tree,
    batch: Any,
    *,
    mode: HVPMode = DEFAULT_HVP_MODE,
    counter: Counter | None = None,
    name: str = "inner_loss",
    seed: int | None = None,
    curvature: Curvature = "hessian",
    keep_grad: bool = True,
) -> Linearization:
    """Linearize :math:`\\nabla_w L` at ``(params, hparams)`` for repeated curvature and mixed products."""
    return Linearization(
        loss, params, hparams, batch, mode=mode, counter=counter, name=name, seed=seed, curvature=curvature,
        keep_grad=keep_grad,
    )  # fmt: skip


def hvp(loss: LossFn, params: Tree, hparams: Tree, batch: Any, v: Tree, *, mode: HVPMode = DEFAULT_HVP_MODE) -> Tree:
    """One Hessian-vector product :math:`\\nabla^2_{ww} L(w, \\lambda)\\, v`.

    Example:
        >>> import torch
        >>> loss = lambda p, h, b: (p["w"] ** 3).sum()
        >>> hvp(loss, {"w": torch.tensor([1.0, 2.0])}, {}, None, {"w": torch.ones(2)}, mode="fwd-rev")["w"]
        tensor([ 6., 12.])
    """
    tree.check_like(params, v, "params", "v")
    return linearize(loss, params, hparams, batch, mode=mode).hvp(v)


def mixed_vjp(loss: LossFn, params: Tree, hparams: Tree, batch: Any, v: Tree) -> Tree:
    """:math:`(\\partial^2 L / \\partial \\lambda \\partial w)\\, v` for ``v`` shaped like ``params``."""
    tree.check_like(params, v, "params", "v")
    return linearize(loss, params, hparams, batch).mixed_vjp(v)


def mixed_jvp(loss: LossFn, params: Tree, hparams: Tree, batch: Any, u: Tree) -> Tree:
    """:math:`(\\partial^2 L / \\partial w \\partial \\lambda)\\, u` for ``u`` shaped like ``hparams``.

    The change of the gradient :math:`\\nabla_w L` along the hyperparameter direction ``u`` (forward mode).
    """
    tree.check_like(hparams, u, "hparams", "u")
    w, h = tree.detach(params), tree.detach(hparams)
    grad_fn = torch.func.grad(lambda w_, h_: loss(w_, h_, batch))
    out = torch.func.jvp(lambda h_: grad_fn(w, h_), (h,), (u,))[1]
    return tree.detach(out)
