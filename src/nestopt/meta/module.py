"""Modules called at given tensors: ``torch.func.functional_call`` behind a module-like object.

A :class:`BoundModule` is a module together with a tree of tensors (its parameters and buffers) to run it
with. Calling it runs ``functional_call(module, tensors, args)``; its submodules are reached as attributes
(``bound.encoder``) or, for containers, by index (``bound[0]``), each bound to its share of the tensors. The
module itself is never modified (no monkey-patching): the same module serves every set of adapted weights
at once, and gradients flow to whatever tensors were bound. Losses written against a bound module read
like ordinary torch code::

    def finetune_loss(model, head, batch):
        x, y = batch
        return F.cross_entropy(head(model.encoder(x)), y)

Buffers (BatchNorm running statistics) are bound explicitly too; :func:`bind` with ``buffers="copy"`` binds
fresh copies, so that a train-mode pass cannot change the module's own statistics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import Tensor
from torch.func import functional_call

from nestopt import tree
from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.hparams.objective import model_mode
from nestopt.tree import Tree

__all__ = ["BoundModule", "bind", "buffers_of", "parameters_of"]


def parameters_of(module: torch.nn.Module) -> Tree:
    """The module's trainable parameters (the live tensors), by name."""
    return {k: p for k, p in module.named_parameters() if p.requires_grad}


def buffers_of(module: torch.nn.Module) -> Tree:
    """The module's buffers (the live tensors), by name."""
    return dict(module.named_buffers())


class BoundModule:
    """A module and the tensors to call it with (see the module docstring). Build it with :func:`bind`.

    Attributes:
        module: the module (never modified).
        tensors: the parameter and buffer tensors it runs with, by name.
        train: the mode it runs in (``None``: the module's own mode).
    """

    __slots__ = ("module", "tensors", "train")

    def __init__(self, module: torch.nn.Module, tensors: Tree, train: bool | None) -> None:
        self.module, self.tensors, self.train = module, tensors, train

    def _mode(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext() if self.train is None else model_mode(self.module, self.train)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._mode():
            return functional_call(self.module, self.tensors, args, kwargs)

    def _child(self, name: str) -> BoundModule:
        child = self.module._modules.get(name)
        if child is None:
            raise AttributeError(f"{type(self.module).__name__} has no submodule {name!r}")
        prefix = f"{name}."
        return BoundModule(
            child, {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}, self.train
        )

    def __getattr__(self, name: str) -> BoundModule:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._child(name)

    def __getitem__(self, index: int | str) -> BoundModule:
        if isinstance(index, int) and index < 0:
            index += len(self.module._modules)
        return self._child(str(index))

    def __iter__(self) -> Iterator[BoundModule]:
        return (self._child(name) for name in self.module._modules)

    def __repr__(self) -> str:
        mode = "own mode" if self.train is None else ("train mode" if self.train else "eval mode")
        return f"BoundModule({type(self.module).__name__}, {len(self.tensors)} tensors, {mode})"


def bind(
    module: torch.nn.Module,
    params: Tree | None = None,
    *,
    buffers: Tree | Literal["copy", "live"] = "live",
    train: bool | None = None,
) -> BoundModule:
    """``module`` bound to ``params`` (default: its own parameters) and buffers, to call like the module.

    Args:
        module: any ``torch.nn.Module``.
        params: a tree with the keys of the module's trainable parameters, e.g. adapted weights.
        buffers: a tree of buffers, ``"live"`` (the module's own: a train-mode pass updates them) or ``"copy"``
            (fresh copies: the module's statistics never change).
        train: run in train (``True``) or eval (``False``) mode, restoring the module's mode after each call;
            ``None`` keeps the module's own mode.

    Example:
        >>> import torch
        >>> from nestopt import meta
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
        >>> zeros = {k: torch.zeros_like(p) for k, p in net.named_parameters()}
        >>> bound = meta.bind(net, zeros)
        >>> bound(torch.ones(4, 2)).abs().sum().item(), bound[0](torch.ones(1, 2)).shape
        (0.0, torch.Size([1, 3]))
    """
    if not isinstance(module, torch.nn.Module):
        raise InvalidArgumentError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    own = parameters_of(module)
    if params is None:
        params = own
    elif set(params) != set(own):
        missing, extra = sorted(set(own) - set(params)), sorted(set(params) - set(own))
        raise ShapeMismatchError(
            f"params must hold exactly the module's trainable parameters: missing {missing}, unexpected {extra}"
        )
    if buffers == "live":
        bufs = buffers_of(module)
    elif buffers == "copy":
        bufs = tree.clone(buffers_of(module))
    elif isinstance(buffers, dict):
        bufs = buffers
    else:
        raise InvalidArgumentError(f"buffers must be a tree of tensors, 'live' or 'copy', got {buffers!r}")
    tensors: dict[str, Tensor] = {**params, **bufs}
    return BoundModule(module, tensors, train)
