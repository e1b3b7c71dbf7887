"""Games between ``torch.nn.Module`` players (:meth:`nestopt.games.Game.from_modules`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from nestopt.errors import InvalidArgumentError
from nestopt.tree import Tree

__all__ = ["ModuleLoss", "Players", "bind_losses", "module_trees"]


class Players(Mapping[str, Callable[..., Any]]):
    """The players' modules bound to the parameters a game evaluates them at.

    ``players["name"](*args, **kwargs)`` runs that player's module through ``torch.func.functional_call`` with
    its parameter tree (differentiable, possibly a point other than the modules' own weights), its frozen
    parameters and its buffers; ``players.params("name")`` is the tree itself.
    """

    def __init__(self, modules: Sequence[torch.nn.Module], names: Sequence[str], params: Sequence[Tree]) -> None:
        self._modules = dict(zip(names, modules))
        self._params = dict(zip(names, params))

    def _name(self, name: str) -> str:
        if name not in self._modules:
            raise InvalidArgumentError(f"no player named {name!r}; the players are {list(self._modules)}")
        return name

    def __getitem__(self, name: str) -> Callable[..., Any]:
        module = self._modules[self._name(name)]
        tensors = {**dict(module.named_parameters()), **dict(module.named_buffers()), **self._params[name]}

        def run(*args: Any, **kwargs: Any) -> Any:
            return functional_call(module, tensors, args, kwargs)

        return run

    def params(self, name: str) -> Tree:
        """Player ``name``'s parameter tree at the point being evaluated."""
        return self._params[self._name(name)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __len__(self) -> int:
        return len(self._modules)


ModuleLoss = Callable[[Players, Any], Any]
"""``loss(players, batch)``: one player's scalar loss, or (as the joint loss) the list of every player's."""


def module_trees(modules: Sequence[torch.nn.Module], names: Sequence[str]) -> list[Tree]:
    """Each module's trainable parameters (``requires_grad``), the very ``nn.Parameter`` tensors."""
    trees = []
    for name, module in zip(names, modules):
        if not isinstance(module, torch.nn.Module):
            raise InvalidArgumentError(f"player {name!r} must be a torch.nn.Module, got {type(module).__name__}")
        trainable: Tree = {k: p for k, p in module.named_parameters() if p.requires_grad}
        trees.append(trainable)
    return trees


def bind_losses(
    modules: Sequence[torch.nn.Module], names: Sequence[str], losses: Sequence[ModuleLoss] | ModuleLoss, n: int
) -> Callable[[list[Tree], Any], Sequence[Tensor]] | list[Any]:
    """The game's losses ``(params, batch)`` from losses of :class:`Players`."""

    def bind(fn: ModuleLoss) -> Callable[[list[Tree], Any], Any]:
        return lambda params, batch: fn(Players(modules, names, params), batch)

    if callable(losses):
        return bind(losses)
    if isinstance(losses, Sequence):
        return [bind(f) if callable(f) else f for f in losses]  # the Game names what is wrong with the others
    raise InvalidArgumentError(f"losses must be {n} callables (one per player) or one joint callable")
