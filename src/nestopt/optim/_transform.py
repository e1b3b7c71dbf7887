"""The transform abstraction, ``chain``, and the stateless transforms (scaling, schedules, decay, clipping).

A :class:`Transform` is a pair of pure functions on trees (``dict[str, Tensor]``)::

    state = t.init(params)
    updates, state = t.update(updates, state, params, hparams)

States are made only of dicts, lists, tuples, tensors, ints and floats, so that they load with
``torch.load(weights_only=True)`` and ``torch.utils._pytree`` finds their tensors. Every update is out of
place: the kernels run with the functional backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from nestopt._validate import nonnegative, real
from nestopt.errors import InvalidArgumentError
from nestopt.optim import _kernels as K
from nestopt.optim._checks import Coefficient, coefficient, resolve
from nestopt.optim._ops import FUNCTIONAL
from nestopt.tree import Tree

__all__ = [
    "Transform",
    "add_decayed_weights",
    "apply_updates",
    "chain",
    "clip",
    "clip_by_global_norm",
    "identity",
    "scale",
    "scale_by_learning_rate",
    "scale_by_schedule",
]

State = Any
UpdateFn = Callable[[Tree, Any, Tree, Tree], tuple[Tree, Any]]


@dataclass(frozen=True)
class Transform:
    """A gradient transformation: ``init(params) -> state`` and
    ``update(updates, state, params, hparams) -> (updates, state)``, both pure.

    Attributes:
        name: a readable description, e.g. ``"chain(trace(momentum=0.9), scale_by_learning_rate(lr=0.1))"``.
        init: the initial state for ``params``.
        update: transforms ``updates`` (a tree with the keys of ``params``) and returns the new state.
        uses_hparams: whether ``update`` reads ``hparams`` (a coefficient given as a function of them).
    """

    name: str
    init: Callable[[Tree], State]
    update: UpdateFn
    uses_hparams: bool = False


def show(value: Any) -> str:
    """How a coefficient appears in a name: ``fn`` for a function, ``tree`` for a tree, else the value."""
    if callable(value):
        return "fn"
    if isinstance(value, dict):
        return "tree"
    if isinstance(value, Tensor):
        return f"{float(value.detach()):g}" if value.numel() == 1 and not value.is_complex() else "tensor"
    return repr(value)


def uses(*coefficients: Any) -> bool:
    """Whether any coefficient is a function of the hyperparameters."""
    return any(callable(c) for c in coefficients)


def lists(trees: Sequence[Tree], keys: Sequence[str]) -> list[list[Tensor]]:
    """Each tree as the list of its values at ``keys``."""
    return [[t[k] for k in keys] for t in trees]


def as_tree(keys: Sequence[str], values: Sequence[Tensor]) -> Tree:
    """The tree ``{keys[i]: values[i]}``."""
    return dict(zip(keys, values))


def _empty(params: Tree) -> State:
    return {}


def identity() -> Transform:
    """The transform that returns its updates unchanged.

    Example:
        >>> import torch
        >>> from nestopt.optim import transforms
        >>> transforms.identity().update({"w": torch.ones(1)}, {}, {"w": torch.zeros(1)}, {})[0]
        {'w': tensor([1.])}
    """
    return Transform("identity()", _empty, lambda u, s, p, h: (u, s))


def chain(*transforms: Transform) -> Transform:
    """Apply ``transforms`` in order; the state is the tuple of their states.

    Example:
        >>> import torch
        >>> from nestopt.optim import transforms
        >>> t = transforms.chain(transforms.clip_by_global_norm(1.0), transforms.scale_by_learning_rate(0.5))
        >>> params = {"w": torch.zeros(2)}
        >>> t.update({"w": torch.tensor([3.0, 4.0])}, t.init(params), params, {})[0]["w"]
        tensor([-0.3000, -0.4000])
    """
    for i, t in enumerate(transforms):
        if not isinstance(t, Transform):
            raise InvalidArgumentError(f"chain() takes Transforms; argument {i} is {type(t).__name__}")

    def init(params: Tree) -> State:
        return tuple(t.init(params) for t in transforms)

    def update(updates: Tree, state: State, params: Tree, hparams: Tree) -> tuple[Tree, State]:
        if not isinstance(state, tuple | list) or len(state) != len(transforms):
            raise InvalidArgumentError(
                f"chain of {len(transforms)} transforms got a state that is not a {len(transforms)}-tuple"
            )
        new = []
        for t, s in zip(transforms, state):
            updates, s = t.update(updates, s, params, hparams)
            new.append(s)
        return updates, tuple(new)

    name = f"chain({', '.join(t.name for t in transforms)})"
    return Transform(name, init, update, any(t.uses_hparams for t in transforms))


def apply_updates(params: Tree, updates: Tree) -> Tree:
    """``params + updates``, out of place.

    Example:
        >>> import torch
        >>> from nestopt.optim import transforms
        >>> transforms.apply_updates({"w": torch.ones(2)}, {"w": torch.full((2,), -0.5)})["w"]
        tensor([0.5000, 0.5000])
    """
    keys = list(params)
    p, u = lists([params, updates], keys)
    return as_tree(keys, K.apply(FUNCTIONAL, p, u))


def _stateless(
    name: str, fn: Callable[[list[Tensor], list[Tensor], Tree, list[str]], list[Tensor]], hp: bool
) -> Transform:
    def update(updates: Tree, state: State, params: Tree, hparams: Tree) -> tuple[Tree, State]:
        keys = list(updates)
        u, p = lists([updates, params], keys)
        return as_tree(keys, fn(u, p, hparams, keys)), state

    return Transform(name, _empty, update, hp)


def _negate(c: Any) -> Any:
    return [-v for v in c] if isinstance(c, list) else -c


def scale(factor: Coefficient) -> Transform:
    """Multiply the updates by ``factor`` (a number, tensor, per-parameter tree, or function of the hyperparameters).

    Example:
        >>> import torch
        >>> from nestopt.optim import transforms
        >>> t = transforms.scale(lambda h: h["c"])
        >>> t.update({"w": torch.ones(2)}, {}, {"w": torch.zeros(2)}, {"c": torch.tensor(3.0)})[0]["w"]
        tensor([3., 3.])
    """
    factor = coefficient("factor", factor, real, tree=True)
    return _stateless(
        f"scale({show(factor)})",
        lambda u, p, h, keys: K.scale(FUNCTIONAL, u, resolve(factor, h, keys, "factor")),
        uses(factor),
    )


def scale_by_learning_rate(lr: Coefficient) -> Transform:
    """Multiply the updates by :math:`-\\eta`: the descent step of every named optimizer.

    Args:
        lr: :math:`\\eta >= 0`: a number, a one-element tensor, a per-parameter tree, or a function of the
            hyperparameters returning any of those (``lambda h: h["log_lr"].exp()``).

    Example:
        >>> import torch
        >>> from nestopt.optim import transforms
        >>> t = transforms.scale_by_learning_rate({"w": 0.1, "b": 1.0})
        >>> p = {"w": torch.zeros(1), "b": torch.zeros(1)}
        >>> t.update({"w": torch.ones(1), "b": torch.ones(1)}, {}, p, {})[0]
        {'w': tensor([-0.1000]), 'b': tensor([-1.])}
    """
    lr = coefficient("lr", lr, nonnegative, tree=True)
    return _stateless(
        f"scale_by_learning_rate(lr={show(lr)})",
        lambda u, p, h, keys: K.scale(FUNCTIONAL, u, _negate(resolve(lr, h, keys, "lr"))),
        uses(lr),
    )


def scale_by_schedule(schedule: Callable[[int], float | Tensor]) -> Transform:
    """Multiply the updates by ``schedule(step)``, ``step`` being the number of updates already taken (0 first).

    The state is ``{"step": int}``. Put it before :func:`scale_by_learning_rate` for a scheduled step size.

    Example:
        >>> import torch
        >>> from nestopt.optim import transforms
        >>> t = transforms.scale_by_schedule(lambda step: 0.5 ** step)
        >>> p = {"w": torch.zeros(1)}
        >>> s = t.init(p)
        >>> for _ in range(3):
        ...     u, s = t.update({"w": torch.ones(1)}, s, p, {})
        >>> u["w"], s
        (tensor([0.2500]), {'step': 3})
    """
    if not callable(schedule):
        raise InvalidArgumentError(f"schedule must be a function of the step count, got {schedule!r}")

    def update(updates: Tree, state: State, params: Tree, hparams: Tree) -> tuple[Tree, State]:
        keys = list(updates)
        (u,) = lists([updates], keys)
        step = state["step"]
        return as_tree(keys, K.scale(FUNCTIONAL, u, schedule(step))), {"step": step + 1}

    return Transform("scale_by_schedule(fn)", lambda p: {"step": 0}, update)


def add_decayed_weights(weight_decay: Coefficient) -> Transform:
    """Add ``weight_decay * params`` to the updates.

    Before a method it is L2 regularization (``torch.optim``'s ``weight_decay``); after it and before
    :func:`scale_by_learning_rate` it is decoupled weight decay (AdamW, Loshchilov & Hutter, 2019).

    Example:
        >>> import torch
        >>> from nestopt.optim import transforms
        >>> t = transforms.add_decayed_weights(0.1)
        >>> t.update({"w": torch.zeros(1)}, {}, {"w": torch.full((1,), 2.0)}, {})[0]["w"]
        tensor([0.2000])
    """
    weight_decay = coefficient("weight_decay", weight_decay, nonnegative, tree=True)
    return _stateless(
        f"add_decayed_weights({show(weight_decay)})",
        lambda u, p, h, keys: K.add_decayed_weights(FUNCTIONAL, u, p, resolve(weight_decay, h, keys, "weight_decay")),
        uses(weight_decay),
    )


def clip_by_global_norm(max_norm: float) -> Transform:
    """Rescale the updates so that their joint Euclidean norm is at most ``max_norm``.

    .. math::  u \\leftarrow u \\cdot \\frac{c}{\\max(\\|u\\|, c)}

    Example:
        >>> import torch
        >>> from nestopt.optim import transforms
        >>> t = transforms.clip_by_global_norm(1.0)
        >>> t.update({"w": torch.tensor([3.0, 4.0])}, {}, {"w": torch.zeros(2)}, {})[0]["w"]
        tensor([0.6000, 0.8000])
    """
    c = nonnegative("max_norm", max_norm, positive=True)
    return _stateless(
        f"clip_by_global_norm({c:g})", lambda u, p, h, keys: K.clip_by_global_norm(FUNCTIONAL, u, c), False
    )


def clip(max_delta: float) -> Transform:
    """Clamp each entry of the updates to ``[-max_delta, max_delta]``.

    Example:
        >>> import torch
        >>> from nestopt.optim import transforms
        >>> transforms.clip(0.5).update({"w": torch.tensor([-2.0, 0.1])}, {}, {"w": torch.zeros(2)}, {})[0]["w"]
        tensor([-0.5000,  0.1000])
    """
    c = nonnegative("max_delta", max_delta, positive=True)
    return _stateless(f"clip({c:g})", lambda u, p, h, keys: K.clip_by_value(FUNCTIONAL, u, c), False)
