"""The players' parameters as one joint tree keyed ``"player/name"``, with per-player views.

A game's state is the joint tree ``{"x/x": ..., "y/y": ...}`` (the prefix convention of the hyperparameter
families); its tensors are the game's own, stepped in place by the update schemes. :class:`JointState` holds
them, checks that no two players share memory, and converts between the joint tree, one tree per player
and one flat vector (all in the same order: players in turn, each tree in key order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from nestopt import tree
from nestopt.autodiff import check_tree
from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.tree import Tree

__all__ = ["JointState", "Params"]

Params = Mapping[str, Tensor] | Sequence[Mapping[str, Tensor]]
"""A point of a game: a joint tree keyed ``"player/name"``, or one tree per player."""


def _extent(t: Tensor) -> tuple[int, int]:
    """The element range ``[lo, hi)`` that ``t`` touches in its storage."""
    lo = int(t.storage_offset())
    if t.numel() == 0:
        return lo, lo
    return lo, lo + sum((int(s) - 1) * int(st) for s, st in zip(t.shape, t.stride())) + 1


def _check_disjoint(params: list[Tree], names: list[str]) -> None:
    seen: dict[int, list[tuple[str, str, Tensor]]] = {}
    for name, player in zip(names, params):
        for key, t in player.items():
            ptr = t.untyped_storage().data_ptr()
            lo, hi = _extent(t)
            for other_name, other_key, other in seen.get(ptr, []):
                olo, ohi = _extent(other)
                if other is t or (lo < ohi and olo < hi and t.numel() > 0):
                    where = "the same player" if other_name == name else f"players {other_name!r} and {name!r}"
                    raise InvalidArgumentError(
                        f"{where} share a parameter tensor ({other_name}[{other_key!r}] and {name}[{key!r}] use the "
                        "same memory); every player needs its own tensors (clone one of them)"
                    )
            seen.setdefault(ptr, []).append((name, key, t))


def _players_of(joint: Mapping[str, Tensor]) -> tuple[list[str], list[Tree]]:
    """Split a joint tree ``{"player/name": tensor}`` by prefix, players in order of first appearance."""
    trees: dict[str, Tree] = {}
    for key, value in joint.items():
        player, sep, name = str(key).partition("/")
        if not sep or not player or not name:
            raise InvalidArgumentError(f"joint state keys must look like 'player/name', got {key!r}")
        trees.setdefault(player, {})[name] = value
    return list(trees), list(trees.values())


class JointState:
    """The players' parameter trees as one joint tree (:attr:`state`) and as per-player views (:attr:`params`).

    Args:
        params: one tree per player, or one joint tree keyed ``"player/name"``.
        names: the players' names (default ``player0``, ``player1``, ..., or the prefixes of a joint tree);
            a name may not contain ``"/"``.

    Example:
        >>> import torch
        >>> s = JointState([{"w": torch.zeros(2)}, {"w": torch.ones(1)}], names=["a", "b"])
        >>> list(s.state), s.split(s.state)[1]["w"] is s.params[1]["w"]
        (['a/w', 'b/w'], True)
    """

    def __init__(self, params: Params, names: Sequence[str] | None = None) -> None:
        prefixes: list[str] | None = None
        if isinstance(params, Mapping) and len(params) > 0:
            prefixes, params = _players_of(params)
        if isinstance(params, Mapping) or not isinstance(params, Sequence) or len(params) == 0:
            raise InvalidArgumentError(f"params must be a non-empty list with one tree per player, got {params!r}")
        n = len(params)
        given = names if names is not None else prefixes
        self.names: list[str] = [f"player{i}" for i in range(n)] if given is None else [str(s) for s in given]
        if len(self.names) != n or len(set(self.names)) != n:
            raise InvalidArgumentError(f"names must be {n} distinct names, got {names!r}")
        if prefixes is not None and self.names != prefixes:
            raise InvalidArgumentError(f"names {self.names} do not match the joint state's players {prefixes}")
        if any("/" in name or not name for name in self.names):
            raise InvalidArgumentError(f"player names must be non-empty and contain no '/', got {self.names}")
        self.params: list[Tree] = [check_tree(p, f"params of player {nm!r}") for p, nm in zip(params, self.names)]
        _check_disjoint(self.params, self.names)
        self._keys = [[f"{name}/{k}" for k in player] for name, player in zip(self.names, self.params)]
        self.state: Tree = {
            key: v for keys, player in zip(self._keys, self.params) for key, v in zip(keys, player.values())
        }

    @property
    def n_players(self) -> int:
        return len(self.params)

    @property
    def sizes(self) -> list[int]:
        """The number of scalars of each player."""
        return [sum(v.numel() for v in player.values()) for player in self.params]

    @property
    def numel(self) -> int:
        return sum(self.sizes)

    @property
    def slices(self) -> list[slice]:
        """Where each player's parameters sit in the flat vector of :meth:`flatten`."""
        out, start = [], 0
        for s in self.sizes:
            out.append(slice(start, start + s))
            start += s
        return out

    def player_keys(self, player: int) -> list[str]:
        """The keys of player ``player``'s tensors in the joint tree (``"name/key"``)."""
        if isinstance(player, bool) or not isinstance(player, int) or not 0 <= player < self.n_players:
            raise InvalidArgumentError(f"player must be in [0, {self.n_players}), got {player!r}")
        return list(self._keys[player])

    def parameters(self, player: int | None = None) -> list[Tensor]:
        """The state tensors of one player, or of all players (for a ``torch.optim`` optimizer)."""
        trees = self.params if player is None else [self.params[player]]
        return [v for player_tree in trees for v in player_tree.values()]

    def split(self, joint: Mapping[str, Tensor]) -> list[Tree]:
        """A joint tree ``{"player/name": ...}`` as one tree per player (keys without the prefix)."""
        tree.check_like(self.state, joint, "the game state", "the joint tree")
        return [{k: joint[key] for k, key in zip(player, keys)} for player, keys in zip(self.params, self._keys)]

    def join(self, trees: Sequence[Mapping[str, Tensor]]) -> Tree:
        """One tree per player as a joint tree keyed ``"player/name"``."""
        return self._joint_tree(trees, "params")

    def _joint_tree(self, params: Params, name: str) -> Tree:
        if isinstance(params, Mapping):
            tree.check_like(self.state, params, "the game state", name)
            return {k: params[k] for k in self.state}
        if isinstance(params, Tensor) or not isinstance(params, Sequence) or len(params) != self.n_players:
            raise ShapeMismatchError(
                f"{name} must be a joint tree or have one tree per player ({self.n_players}), got "
                f"{len(params) if isinstance(params, Sequence) else type(params).__name__}"
            )
        out: Tree = {}
        for player, mine, given, keys in zip(self.names, self.params, params, self._keys):
            if not isinstance(given, Mapping) or set(mine) != set(given):
                got = sorted(given) if isinstance(given, Mapping) else type(given).__name__
                raise ShapeMismatchError(f"{name} of player {player!r} have keys {got}, expected {sorted(mine)}")
            for k, key in zip(mine, keys):
                if given[k].shape != mine[k].shape:
                    raise ShapeMismatchError(
                        f"{name} of player {player!r}[{k!r}] has shape {tuple(given[k].shape)}, "
                        f"expected {tuple(mine[k].shape)}"
                    )
                out[key] = given[k]
        return out

    def _point(self, params: Params | None) -> Tree:
        return self.state if params is None else self._joint_tree(params, "params")

    def flatten(self, params: Params | None = None) -> Tensor:
        """One vector: the players' parameters in turn, each tree in key order (the joint tree's order)."""
        return torch.cat([v.detach().reshape(-1) for v in self._point(params).values()])

    def unflatten(self, vec: Tensor) -> list[Tree]:
        """Inverse of :meth:`flatten`, one tree per player (``join`` it for the joint form)."""
        if vec.dim() != 1 or vec.numel() != self.numel:
            raise ShapeMismatchError(f"vec must be a vector of {self.numel} entries, got shape {tuple(vec.shape)}")
        spec = tree.TreeSpec(tuple(self.state), tuple(v.shape for v in self.state.values()))
        return self.split(tree.unflatten(vec, spec))

    def copy_(self, params: Params) -> None:
        """Overwrite the game's state tensors in place with ``params``."""
        point = self._point(params)
        with torch.no_grad():
            for key, dst in self.state.items():
                dst.copy_(point[key])
