"""The loss signature, input checks, evaluation and the one VJP helper of nestopt."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.graph import GradientEdge, get_gradient_edge
from torch.func import functional_call

from nestopt import tree
from nestopt.errors import InvalidArgumentError, NonFiniteError, ShapeMismatchError
from nestopt.tree import Tree

__all__ = [
    "Counter",
    "Edges",
    "LossFn",
    "check_loss_value",
    "check_tree",
    "edges_vjp",
    "evaluate_loss",
    "functional_loss",
    "grad",
    "gradient_edges",
    "raw_vjp",
    "vjp",
]

LossFn = Callable[[Tree, Tree, Any], Tensor]
"""``loss(params, hparams, batch) -> scalar Tensor``: the one loss signature of nestopt."""


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


def _dtypes(value: Any) -> str:
    """The distinct dtypes of the tensors in a tree, a tuple or a tensor, for error messages."""
    if isinstance(value, Tensor):
        return str(value.dtype)
    if isinstance(value, Mapping):
        items = list(value.values())
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        return type(value).__name__
    kinds = sorted({str(v.dtype) for v in items if isinstance(v, Tensor)})
    return "/".join(kinds) if kinds else "no tensors"


_DTYPE_WORDS = ("dtype", "scalar type", "expected both", "same type")


def evaluate_loss(
    loss: Callable[..., Any], params: Tree, hparams: Tree, batch: Any, name: str, *, scalar: bool = True
) -> Any:
    """Call ``loss(params, hparams, batch)`` and check that it returned a finite scalar (with ``scalar=False``,
    return whatever it returned, unchecked).

    A ``KeyError``, or a ``RuntimeError`` about sizes, shapes or dtypes, raised inside the loss is re-raised as
    :class:`ShapeMismatchError` naming the keys, shapes or dtypes of the trees and the batch: the usual causes
    are a hyperparameter tree that does not match the parameters, or float32 parameters with float64 data.
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
        if any(word in text for word in _DTYPE_WORDS):
            raise ShapeMismatchError(
                f"{name} mixes dtypes: params are {_dtypes(params)}, hparams {_dtypes(hparams)} and the batch "
                f"{_dtypes(batch)}; convert them to one dtype (e.g. params with model.double(), or the data with "
                f".float()): {text}"
            ) from err
        if "size" in text or "shape" in text:
            raise ShapeMismatchError(
                f"{name} failed on params {_shapes(params)} and hparams {_shapes(hparams)}: {text}"
            ) from err
        raise
    return check_loss_value(value, name) if scalar else value


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


Edges = tuple[list[GradientEdge], list[int]]
"""The gradient edges of some outputs and the positions of the outputs that have a graph (:func:`gradient_edges`)."""


def gradient_edges(outputs: Sequence[Tensor]) -> Edges:
    """What a later VJP of ``outputs`` needs, without their values: the gradient edges of the outputs that have
    a graph, and their positions among ``outputs``.

    Keeping the edges instead of the tensors keeps the graph behind them alive while the values themselves can
    be freed: a gradient built with ``create_graph=True`` for Hessian-vector products is one parameter-sized
    tensor that no product reads.
    """
    live = [i for i, t in enumerate(outputs) if t.requires_grad]
    return [get_gradient_edge(outputs[i]) for i in live], live


def edges_vjp(
    edges: Edges, inputs: Sequence[Tensor], cotangents: Sequence[Tensor], **kwargs: Any
) -> list[Tensor | None]:
    """:func:`raw_vjp` of the outputs behind ``edges`` (``cotangents`` has one entry per output, live or not)."""
    found, live = edges
    if not found:
        return [None] * len(inputs)
    with torch.enable_grad():
        got = torch.autograd.grad(found, list(inputs), [cotangents[i] for i in live], allow_unused=True, **kwargs)
    return list(got)


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
