"""Derivatives of losses ``loss(params, hparams, batch) -> scalar`` with respect to trees.

For an inner loss :math:`L(w, \\lambda)` this module computes

* the gradient :math:`\\nabla_w L`,
* Hessian-vector products :math:`H v = \\nabla^2_{ww} L \\, v`,
* the mixed second-derivative VJP :math:`(\\partial^2 L / \\partial \\lambda \\partial w)\\, v`, a tree over
  ``hparams``: the term the implicit function theorem multiplies the inverse-Hessian-vector product with,
* the mixed JVP :math:`(\\partial^2 L / \\partial w \\partial \\lambda)\\, u`, a tree over ``params``.

Two ways of forming :math:`Hv` are offered (``mode``):

``"rev-rev"``
    reverse over reverse. :func:`linearize` builds the gradient's graph once and every product is one
    backward pass through it (``retain_graph``), so K products cost one forward/backward plus K double
    backward passes. The mixed VJP reuses the same graph. Measured fastest for MLPs on CPU
    (``benchmarks/hvp_modes.py``), hence the default.
``"fwd-rev"``
    forward over reverse (``torch.func.jvp`` of ``torch.func.grad``): no retained graph, but every product
    recomputes the forward and backward pass in forward mode.

Every call is counted in a :class:`Counter` that estimators return in their diagnostics.

Example:
    >>> import torch
    >>> from nestopt import autodiff
    >>> loss = lambda p, h, batch: 0.5 * (h["scale"] * p["w"] ** 2).sum()
    >>> params, hparams = {"w": torch.ones(3)}, {"scale": torch.tensor(2.0)}
    >>> lin = autodiff.linearize(loss, params, hparams, None)
    >>> lin.hvp({"w": torch.ones(3)})["w"]
    tensor([2., 2., 2.])
    >>> lin.mixed_vjp({"w": torch.ones(3)})["scale"]
    tensor(3.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from torch.func import functional_call

from nestopt import tree
from nestopt.errors import InvalidArgumentError, NonFiniteError, ShapeMismatchError
from nestopt.tree import Tree

__all__ = [
    "Counter",
    "HVPMode",
    "Linearization",
    "LossFn",
    "check_loss_value",
    "check_tree",
    "evaluate_loss",
    "functional_loss",
    "grad",
    "hvp",
    "linearize",
    "mixed_jvp",
    "mixed_vjp",
    "raw_vjp",
    "vjp",
]

LossFn = Callable[[Tree, Tree, Any], Tensor]
"""``loss(params, hparams, batch) -> scalar Tensor``: the one loss signature of nestopt."""

HVPMode = Literal["rev-rev", "fwd-rev"]
_MODES = ("rev-rev", "fwd-rev")
DEFAULT_HVP_MODE: HVPMode = "rev-rev"


@dataclass
class Counter:
    """How many derivative evaluations a computation spent.

    ``grads`` counts first-order gradients (each about one forward and one backward pass), ``hvps``
    Hessian-vector products (about two gradients each), ``mixed`` mixed second-derivative products,
    ``jvps`` forward-mode products.
    """

    grads: int = 0
    hvps: int = 0
    mixed: int = 0
    jvps: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def check_tree(t: Any, name: str, *, floating: bool = True) -> Tree:
    """Validate that ``t`` is a non-empty ``dict[str, Tensor]`` (of floating dtype) and return it."""
    if not isinstance(t, Mapping):
        raise InvalidArgumentError(f"{name} must be a dict mapping names to tensors, got {type(t).__name__}")
    if len(t) == 0:
        raise InvalidArgumentError(f"{name} is empty: it needs at least one tensor")
    for k, v in t.items():
        if not isinstance(k, str):
            raise InvalidArgumentError(f"{name} keys must be strings, got {k!r}")
        if not isinstance(v, Tensor):
            raise InvalidArgumentError(f"{name}[{k!r}] must be a torch.Tensor, got {type(v).__name__}")
        if floating and not (v.is_floating_point() or v.is_complex()):
            raise InvalidArgumentError(f"{name}[{k!r}] must have a floating dtype to be differentiated, got {v.dtype}")
    return dict(t)


def check_loss_value(value: Any, name: str) -> Tensor:
    """Validate that a loss returned a finite scalar tensor; ``name`` appears in the error."""
    if not isinstance(value, Tensor):
        raise InvalidArgumentError(f"{name} must return a scalar torch.Tensor, got {type(value).__name__}")
    if value.numel() != 1 or value.dim() > 1:
        raise InvalidArgumentError(
            f"{name} must return a scalar (0-d tensor), got shape {tuple(value.shape)}; reduce it, e.g. with .mean()"
        )
    value = value.reshape(())
    if not bool(torch.isfinite(value.detach())):
        raise NonFiniteError(f"{name} returned a non-finite value ({float(value.detach())})")
    return value


def _shapes(t: Mapping[str, Tensor]) -> str:
    return "{" + ", ".join(f"{k}: {tuple(v.shape)}" for k, v in t.items()) + "}"


def evaluate_loss(loss: LossFn, params: Tree, hparams: Tree, batch: Any, name: str) -> Tensor:
    """Call ``loss(params, hparams, batch)`` and check that it returned a finite scalar.

    A ``KeyError``, or a ``RuntimeError`` about sizes or shapes, raised inside the loss is re-raised as
    :class:`ShapeMismatchError` naming the keys and shapes of both trees: the usual cause is a
    hyperparameter tree that does not match the parameters.
    """
    try:
        value = loss(params, hparams, batch)
    except KeyError as err:
        raise ShapeMismatchError(
            f"{name} looked up the missing key {err}; params has keys {sorted(params)} and hparams has keys "
            f"{sorted(hparams)}"
        ) from err
    except RuntimeError as err:
        text = str(err)
        if "size" in text or "shape" in text:
            raise ShapeMismatchError(
                f"{name} failed on params {_shapes(params)} and hparams {_shapes(hparams)}: {text}"
            ) from err
        raise
    return check_loss_value(value, name)


def functional_loss(
    module: torch.nn.Module,
    criterion: Callable[[Tensor, Tensor], Tensor],
    regularizer: Callable[[Tree, Tree], Tensor] | None = None,
) -> LossFn:
    """Build ``loss(params, hparams, batch)`` from a module, a criterion and an optional regularizer.

    ``batch`` is ``(inputs, targets)``; the module runs with ``params`` through ``functional_call``.

    .. math::  L(w, \\lambda) = \\mathrm{criterion}(f_w(x), y) + \\mathrm{regularizer}(w, \\lambda)

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(3, 1)
        >>> loss = functional_loss(net, torch.nn.functional.mse_loss,
        ...                        lambda p, h: (h["wd"] * p["weight"] ** 2).sum())
        >>> params = dict(net.named_parameters())
        >>> batch = (torch.randn(8, 3), torch.randn(8, 1))
        >>> loss(params, {"wd": torch.tensor(0.1)}, batch).shape
        torch.Size([])
    """

    def loss(params: Tree, hparams: Tree, batch: Any) -> Tensor:
        inputs, targets = batch
        value = criterion(functional_call(module, params, (inputs,)), targets)
        if regularizer is not None:
            value = value + regularizer(params, hparams)
        return value

    return loss


def _leaves_requiring_grad(t: Mapping[str, Tensor]) -> Tree:
    return {k: v.detach().requires_grad_(True) for k, v in t.items()}


def raw_vjp(
    outputs: Sequence[Tensor],
    inputs: Sequence[Tensor],
    cotangents: Sequence[Tensor] | None = None,
    **kwargs: Any,
) -> list[Tensor | None]:
    """``torch.autograd.grad`` of the ``outputs`` that have a graph with respect to ``inputs``.

    Outputs without a graph (constants) are dropped with their cotangents; inputs that no output depends on
    get ``None``, as do all inputs when no output has a graph. ``kwargs`` go to ``torch.autograd.grad``
    (``retain_graph``, ``create_graph``, ``is_grads_batched``).
    """
    live = [i for i, o in enumerate(outputs) if o.requires_grad]
    if not live:
        return [None] * len(inputs)
    cots = None if cotangents is None else [cotangents[i] for i in live]
    with torch.enable_grad():
        got = torch.autograd.grad([outputs[i] for i in live], list(inputs), cots, allow_unused=True, **kwargs)
    return list(got)


def vjp(
    outputs: Sequence[Tensor],
    inputs: Sequence[Tensor],
    cotangents: Sequence[Tensor] | None = None,
    **kwargs: Any,
) -> list[Tensor]:
    """:func:`raw_vjp` with zeros for the inputs that no output depends on: the one vector-Jacobian product
    helper of nestopt.

    With ``is_grads_batched=True`` the cotangents carry a leading batch dimension, and so do the zeros.

    Example:
        >>> import torch
        >>> x, y = torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True)
        >>> [g.tolist() for g in vjp([(2 * x).sum()], [x, y])]
        [[2.0, 2.0], [0.0, 0.0, 0.0]]
    """
    got = raw_vjp(outputs, inputs, cotangents, **kwargs)
    batch: tuple[int, ...] = ()
    if kwargs.get("is_grads_batched") and cotangents:
        batch = (int(cotangents[0].shape[0]),)
    return [x.new_zeros((*batch, *x.shape)) if g is None else g for x, g in zip(inputs, got)]


def _grads_or_zeros(outputs: list[Tensor], inputs: Tree, cotangents: list[Tensor] | None, **kw: Any) -> Tree:
    """:func:`vjp` with respect to the tree ``inputs``."""
    return dict(zip(inputs, vjp(outputs, list(inputs.values()), cotangents, **kw)))


def grad(
    loss: LossFn, params: Tree, hparams: Tree, batch: Any, *, counter: Counter | None = None, name: str = "loss"
) -> tuple[Tensor, Tree]:
    """The loss value and its gradient with respect to ``params`` (both detached)."""
    w = _leaves_requiring_grad(params)
    with torch.enable_grad():
        value = evaluate_loss(loss, w, tree.detach(hparams), batch, name)
        g = _grads_or_zeros([value], w, None)
    if counter is not None:
        counter.grads += 1
    return value.detach(), tree.detach(g)


class Linearization:
    """The gradient of ``loss`` at ``(params, hparams)``, ready for repeated second-order products.

    Build it with :func:`linearize`. With ``mode="rev-rev"`` the gradient's autograd graph is built once and
    kept until the object is garbage collected; every :meth:`hvp`, :meth:`hvp_batched` and :meth:`mixed_vjp`
    is then a single backward pass through it.
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
    ) -> None:
        if mode not in _MODES:
            raise InvalidArgumentError(f"mode must be one of {_MODES}, got {mode!r}")
        self.mode: HVPMode = mode
        self.counter = counter if counter is not None else Counter()
        self._loss, self._batch, self._name = loss, batch, name
        self._w = _leaves_requiring_grad(params)
        self._h = _leaves_requiring_grad(hparams)
        with torch.enable_grad():
            value = evaluate_loss(loss, self._w, self._h, batch, name)
            keys = list(self._w)
            self._g = vjp([value], [self._w[k] for k in keys], create_graph=(mode == "rev-rev"))
        self.counter.grads += 1
        self.last_unused: tuple[str, ...] = ()
        self.value: Tensor = value.detach()
        self.grad: Tree = {k: g.detach() for k, g in zip(keys, self._g)}
        if not tree.all_finite(self.grad):
            raise NonFiniteError(f"the gradient of {name} with respect to params contains NaN or inf")

    # -- products ---------------------------------------------------------------------------------
    def _pure(self) -> Callable[[Tree, Tree], Tensor]:
        loss, batch = self._loss, self._batch
        return lambda w, h: loss(w, h, batch)

    def hvp(self, v: Tree) -> Tree:
        """:math:`\\nabla^2_{ww} L \\; v` for a tree ``v`` shaped like ``params``."""
        self.counter.hvps += 1
        if self.mode == "rev-rev":
            with torch.enable_grad():
                return tree.detach(_grads_or_zeros(self._g, self._w, [v[k] for k in self._w], retain_graph=True))
        f = self._pure()
        h = tree.detach(self._h)

        def grad_fn(w: Tree) -> Tree:
            return torch.func.grad(f)(w, h)

        out = torch.func.jvp(grad_fn, (tree.detach(self._w),), (v,))[1]
        return tree.detach(out)

    def hvp_batched(self, vs: Tree) -> Tree:
        """Hessian products with a batch of vectors: every leaf of ``vs`` has a leading batch dimension."""
        n = next(iter(vs.values())).shape[0]
        self.counter.hvps += n
        if self.mode == "rev-rev":
            keys = list(self._w)
            cots = [vs[k] for k in keys]
            got = vjp(self._g, [self._w[k] for k in keys], cots, retain_graph=True, is_grads_batched=True)
            return {k: g.detach() for k, g in zip(keys, got)}
        f = self._pure()
        h = tree.detach(self._h)
        w = tree.detach(self._w)
        grad_fn = torch.func.grad(lambda w_: f(w_, h))
        out = torch.func.vmap(lambda v: torch.func.jvp(grad_fn, (w,), (v,))[1])(vs)
        return tree.detach(out)

    def mixed_vjp(self, v: Tree) -> Tree:
        """:math:`(\\partial^2 L / \\partial \\lambda \\partial w)\\, v`, a tree shaped like ``hparams``.

        Hyperparameters on which the gradient does not depend at all (no autograd path) get zeros, and their
        names are left in :attr:`last_unused`.
        """
        self.counter.mixed += 1
        keys = list(self._h)
        if self.mode == "rev-rev":
            cots = [v[k] for k in self._w]
            got = raw_vjp(self._g, [self._h[k] for k in keys], cots, retain_graph=True)
        else:
            f = self._pure()
            with torch.enable_grad():
                directional = torch.func.jvp(lambda w_: f(w_, self._h), (tree.detach(self._w),), (v,))[1]
            got = raw_vjp([directional], [self._h[k] for k in keys])
        self.last_unused = tuple(k for k, g in zip(keys, got) if g is None)
        return {k: torch.zeros_like(self._h[k]) if g is None else g.detach() for k, g in zip(keys, got)}


def linearize(
    loss: LossFn,
    params: Tree,
    hparams: Tree,
    batch: Any,
    *,
    mode: HVPMode = DEFAULT_HVP_MODE,
    counter: Counter | None = None,
    name: str = "inner_loss",
) -> Linearization:
    """Linearize :math:`\\nabla_w L` at ``(params, hparams)`` for repeated Hessian and mixed products."""
    return Linearization(loss, params, hparams, batch, mode=mode, counter=counter, name=name)


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
