"""Differentiable games: n players, each with its own parameters and a loss of everyone's parameters.

Player :math:`i` has parameters :math:`\\theta_i` (a tree) and a loss :math:`L_i(\\theta_1, \\dots, \\theta_n)` that it
minimizes over :math:`\\theta_i` alone. The *simultaneous gradient* stacks each player's gradient of its own
loss, and the *game Jacobian* is its derivative:

.. math::

    \\xi(\\theta) = \\big(\\nabla_{\\theta_1} L_1, \\dots, \\nabla_{\\theta_n} L_n\\big), \\qquad
    J = \\nabla_\\theta \\xi = S + A, \\quad S = \\tfrac12 (J + J^\\top), \\quad A = \\tfrac12 (J - J^\\top),

    \\mathcal{H}(\\theta) = \\tfrac12 \\|\\xi(\\theta)\\|^2, \\qquad \\nabla \\mathcal{H} = J^\\top \\xi.

Block :math:`(i, j)` of :math:`J` is :math:`\\nabla_{\\theta_j} \\nabla_{\\theta_i} L_i`. The symmetric part :math:`S` is
the "potential" component, the antisymmetric part :math:`A` the rotational ("Hamiltonian") one. For small
games :meth:`Game.jacobian` forms :math:`J` densely; for large ones :meth:`Game.jvp` and :meth:`Game.vjp` give
:math:`Jv` and :math:`J^\\top u` without forming it (a few backward passes each).

Players' losses are ``loss_i(params, batch) -> scalar`` where ``params`` is the list of all players' trees;
or one joint function returning the n losses. :mod:`nestopt.games.schemes` steps the players with any
``torch.optim`` optimizers, simultaneously or in turn.

Example:
    >>> import torch
    >>> from nestopt.games import Game
    >>> x, y = {"x": torch.tensor([1.0])}, {"y": torch.tensor([2.0])}
    >>> game = Game([x, y], [lambda p, b: (p[0]["x"] * p[1]["y"]).sum(),      # min_x  x*y
    ...                      lambda p, b: -(p[0]["x"] * p[1]["y"]).sum()],    # min_y -x*y
    ...             names=["x", "y"])
    >>> [g[k].item() for g, k in zip(game.xi(), "xy")]
    [2.0, -1.0]
    >>> torch.equal(game.jacobian(), torch.tensor([[0.0, 1.0], [-1.0, 0.0]]))
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from nestopt.autodiff import Counter, check_loss_value, check_tree, vjp
from nestopt.errors import InvalidArgumentError, ShapeMismatchError, TooLargeError, UnsupportedError
from nestopt.tree import Tree

__all__ = ["Game", "GameLinearization", "JointLoss", "PlayerLoss"]

PlayerLoss = Callable[[list[Tree], Any], Tensor]
"""``loss_i(params, batch) -> scalar``: ``params`` is the list of every player's tree."""

JointLoss = Callable[[list[Tree], Any], Sequence[Tensor]]
"""``losses(params, batch) -> [L_1, ..., L_n]``: all losses at once (when they share computation)."""

Vector = list[Tree] | Tensor


def _extent(t: Tensor) -> tuple[int, int]:
    """The element range ``[lo, hi)`` that ``t`` touches in its storage."""
    lo = int(t.storage_offset())
    if t.numel() == 0:
        return lo, lo
    return lo, lo + sum((int(s) - 1) * int(st) for s, st in zip(t.shape, t.stride())) + 1


def _check_disjoint(params: list[Tree], names: list[str]) -> None:
    seen: dict[int, list[tuple[str, str, Tensor]]] = {}
    for name, tree in zip(names, params):
        for key, t in tree.items():
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


def _check_twice_differentiable(outputs: list[Tensor], what: str) -> None:
    """Raise if the graph of the gradients contains a node that refuses to be differentiated again.

    ``torch.autograd.function.once_differentiable`` puts an error node into the graph of a gradient built
    with ``create_graph=True``; depending on the graph, differentiating through it either raises or silently
    yields no gradient, so it is detected up front.
    """
    seen: set[int] = set()
    stack = [t.grad_fn for t in outputs if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if "Error" in node.name():
            raise UnsupportedError(
                f"{what} needs second derivatives of the players' losses (the game Jacobian), but a function in "
                "the losses can only be differentiated once (torch.autograd.function.once_differentiable). Use "
                "a first-order method (simultaneous or alternating gradient steps with any torch.optim optimizer)"
            )
        stack.extend(f for f, _ in node.next_functions if f is not None)


class GameLinearization:
    """The game at one point, with the autograd graph of :math:`\\xi` kept for repeated products.

    Build it with :meth:`Game.linearize`. Products take and return flat lists of tensors in the game's order
    (players in turn, each player's keys in tree order); :class:`Game` wraps them for trees and vectors.
    """

    def __init__(self, game: Game, params: list[Tree], batch: Any, what: str) -> None:
        self.game, self.what, self.batch = game, what, batch
        self.leaves: list[Tensor] = [v.detach().requires_grad_(True) for tree in params for v in tree.values()]
        trees = game._to_trees(self.leaves)
        with torch.enable_grad():
            self.losses = game._evaluate(trees, batch)
            xi: list[Tensor] = []
            for i, loss in enumerate(self.losses):
                own = [self.leaves[k] for k in game._player_index[i]]
                xi += self._grad([loss], own, None, create_graph=True)
        self.xi = xi
        _check_twice_differentiable(xi, what)
        game.counter.grads += game.n_players
        game.last_losses = [v.detach() for v in self.losses]
        game.last_player_losses = dict(enumerate(game.last_losses))

    def _grad(
        self, outputs: list[Tensor], inputs: list[Tensor], cotangents: list[Tensor] | None, **kw: Any
    ) -> list[Tensor]:
        try:
            return vjp(outputs, inputs, cotangents, retain_graph=True, **kw)
        except RuntimeError as err:
            raise UnsupportedError(
                f"{self.what} needs second derivatives of the players' losses (the game Jacobian), but autograd "
                f"could not form them: {err}. Use a first-order method (simultaneous or alternating gradient "
                "steps with any torch.optim optimizer) for this game"
            ) from err

    def vjp(self, u: list[Tensor]) -> list[Tensor]:
        """:math:`J^\\top u`."""
        self.game.counter.hvps += 1
        return [g.detach() for g in self._grad(self.xi, self.leaves, u)]

    def jvp(self, v: list[Tensor]) -> list[Tensor]:
        """:math:`J v`, by differentiating the linear map :math:`u \\mapsto J^\\top u` (two backward passes)."""
        self.game.counter.hvps += 1
        dummy = [torch.zeros_like(x).requires_grad_(True) for x in self.xi]
        jt_u = self._grad(self.xi, self.leaves, dummy, create_graph=True)
        return [g.detach() for g in self._grad(jt_u, dummy, v)]

    def jacobian(self, max_size: int) -> Tensor:
        """The dense :math:`d \\times d` Jacobian; row :math:`a` is :math:`e_a^\\top J`."""
        d = sum(x.numel() for x in self.leaves)
        if d > max_size:
            raise TooLargeError(
                f"the game has {d} parameters; a dense Jacobian is limited to max_size={max_size}. Use jvp/vjp "
                "products instead, or raise max_size"
            )
        x0 = self.leaves[0]
        eye = torch.eye(d, dtype=x0.dtype, device=x0.device)
        cols = torch.split(eye, [x.numel() for x in self.xi], dim=1)
        cots = [c.reshape(d, *x.shape) for c, x in zip(cols, self.xi)]
        self.game.counter.hvps += d
        try:
            rows = self._grad(self.xi, self.leaves, cots, is_grads_batched=True)
        except UnsupportedError:
            # some operations have no batching rule: fall back to one product per row
            rows_list = [self._grad(self.xi, self.leaves, [c[a] for c in cots]) for a in range(d)]
            return torch.stack([torch.cat([g.reshape(-1) for g in r]) for r in rows_list]).detach()
        return torch.cat([g.reshape(d, -1) for g in rows], dim=1).detach()

    def loss_gradient(self, i: int) -> list[Tensor]:
        """:math:`\\nabla_\\theta L_i` with respect to *every* player's parameters, with its graph kept."""
        return self._grad([self.losses[i]], self.leaves, None, create_graph=True)


class Game:
    """A differentiable game: players' parameter trees and their losses.

    Args:
        params: one tree (``dict[str, Tensor]``) per player. These tensors are the game's state: the update
            schemes step them in place, so build torch optimizers over :meth:`parameters`. No two players
            may share a tensor.
        losses: a sequence of n functions ``loss_i(params, batch) -> scalar`` (``params`` is the list of all
            players' trees), or one function returning all n losses.
        names: the players' names (default ``player0``, ``player1``, ...), used in messages.
        equilibrium: a known equilibrium (one tree per player), used by :meth:`distance`.
        info: anything else worth keeping with the game (payoff matrices, samplers, ...), kept as :attr:`info`.

    Raises:
        InvalidArgumentError: malformed trees, a wrong number of losses, or players sharing a tensor.
    """

    def __init__(
        self,
        params: Sequence[Mapping[str, Tensor]],
        losses: Sequence[PlayerLoss] | JointLoss,
        *,
        names: Sequence[str] | None = None,
        equilibrium: Sequence[Mapping[str, Tensor]] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(params, Mapping) or not isinstance(params, Sequence) or len(params) == 0:
            raise InvalidArgumentError(f"params must be a non-empty list with one tree per player, got {params!r}")
        n = len(params)
        self.names: list[str] = [f"player{i}" for i in range(n)] if names is None else [str(s) for s in names]
        if len(self.names) != n or len(set(self.names)) != n:
            raise InvalidArgumentError(f"names must be {n} distinct names, got {names!r}")
        self.params: list[Tree] = [check_tree(p, f"params of player {nm!r}") for p, nm in zip(params, self.names)]
        _check_disjoint(self.params, self.names)
        if callable(losses):
            self._joint: JointLoss | None = losses
            self._losses: list[PlayerLoss] | None = None
        else:
            if len(losses) != n or not all(callable(f) for f in losses):
                raise InvalidArgumentError(f"losses must be {n} callables (one per player) or one joint callable")
            self._joint, self._losses = None, list(losses)
        self.equilibrium: list[Tree] | None = None
        if equilibrium is not None:
            if len(equilibrium) != n:
                raise InvalidArgumentError(f"equilibrium must have one tree per player ({n}), got {len(equilibrium)}")
            self.equilibrium = [dict(e) for e in equilibrium]
        self.info: dict[str, Any] = dict(info or {})
        self._keys = [list(tree) for tree in self.params]
        self._player_index: list[list[int]] = []
        k = 0
        for tree in self.params:
            self._player_index.append(list(range(k, k + len(tree))))
            k += len(tree)
        self.counter = Counter()
        """Derivative evaluations so far: ``grads`` counts player gradients :math:`\\nabla_{\\theta_i} L_i` (a
        full :math:`\\xi` is ``n_players`` of them), ``hvps`` Jacobian-vector products."""
        self.last_losses: list[Tensor] = []
        """The players' losses at the point where the last full :math:`\\xi` (or linearization) was taken."""
        self.last_player_losses: dict[int, Tensor] = {}
        """The losses evaluated with the last gradient, by player (one player's gradient may evaluate only its own)."""

    # -- structure ---------------------------------------------------------------------------------------
    @property
    def n_players(self) -> int:
        return len(self.params)

    @property
    def sizes(self) -> list[int]:
        """The number of scalars of each player."""
        return [sum(v.numel() for v in tree.values()) for tree in self.params]

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

    def parameters(self, player: int | None = None) -> list[Tensor]:
        """The state tensors of one player, or of all players (for a ``torch.optim`` optimizer)."""
        trees = self.params if player is None else [self.params[player]]
        return [v for tree in trees for v in tree.values()]

    def flatten(self, params: Sequence[Mapping[str, Tensor]] | None = None) -> Tensor:
        """One vector: the players' parameters in turn, each tree in key order."""
        params = self._resolve(params)
        return torch.cat([v.detach().reshape(-1) for tree in params for v in tree.values()])

    def unflatten(self, vec: Tensor) -> list[Tree]:
        """Inverse of :meth:`flatten`, shaped like the game's parameters."""
        if vec.dim() != 1 or vec.numel() != self.numel:
            raise ShapeMismatchError(f"vec must be a vector of {self.numel} entries, got shape {tuple(vec.shape)}")
        parts = torch.split(vec, [v.numel() for v in self.parameters()])
        return self._to_trees([p.reshape(v.shape) for p, v in zip(parts, self.parameters())])

    def copy_(self, params: Sequence[Mapping[str, Tensor]]) -> None:
        """Overwrite the game's state tensors in place with ``params``."""
        params = self._resolve(params)
        with torch.no_grad():
            for dst, src in zip(self.parameters(), [v for tree in params for v in tree.values()]):
                dst.copy_(src)

    def _to_trees(self, flat: Sequence[Tensor]) -> list[Tree]:
        return [{k: flat[j] for k, j in zip(keys, idx)} for keys, idx in zip(self._keys, self._player_index)]

    def _resolve(self, params: Sequence[Mapping[str, Tensor]] | None) -> list[Tree]:
        if params is None:
            return self.params
        if len(params) != self.n_players:
            raise ShapeMismatchError(f"params must have one tree per player ({self.n_players}), got {len(params)}")
        out = []
        for name, mine, given in zip(self.names, self.params, params):
            if set(mine) != set(given):
                raise ShapeMismatchError(
                    f"params of player {name!r} have keys {sorted(given)}, expected {sorted(mine)}"
                )
            for k in mine:
                if given[k].shape != mine[k].shape:
                    raise ShapeMismatchError(
                        f"params of player {name!r}[{k!r}] has shape {tuple(given[k].shape)}, "
                        f"expected {tuple(mine[k].shape)}"
                    )
            out.append({k: given[k] for k in mine})
        return out

    def _vector_to_flat(self, v: Vector) -> tuple[list[Tensor], bool]:
        if isinstance(v, Tensor):
            return [t for tree in self.unflatten(v) for t in tree.values()], True
        return [t for tree in self._resolve(v) for t in tree.values()], False

    def _flat_to_vector(self, flat: list[Tensor], as_vector: bool) -> Vector:
        if as_vector:
            return torch.cat([t.reshape(-1) for t in flat])
        return self._to_trees(flat)

    # -- evaluation ---------------------------------------------------------------------------------------
    def _evaluate(self, params: list[Tree], batch: Any) -> list[Tensor]:
        if self._joint is not None:
            values = list(self._joint(params, batch))
            if len(values) != self.n_players:
                raise InvalidArgumentError(f"the joint loss returned {len(values)} values for {self.n_players} players")
        else:
            values = [f(params, batch) for f in self._losses or []]
        return [check_loss_value(v, f"the loss of player {name!r}") for v, name in zip(values, self.names)]

    def _evaluate_some(self, params: list[Tree], batch: Any, players: list[int]) -> dict[int, Tensor]:
        """The losses of ``players`` only, when each player has its own loss function (saves work)."""
        if self._losses is None or len(players) == self.n_players:
            values = self._evaluate(params, batch)
            return {i: values[i] for i in players}
        return {
            i: check_loss_value(self._losses[i](params, batch), f"the loss of player {self.names[i]!r}")
            for i in players
        }

    def losses(self, params: Sequence[Mapping[str, Tensor]] | None = None, batch: Any = None) -> list[Tensor]:
        """Every player's loss (detached).

        Raises:
            NonFiniteError: naming the player whose loss is NaN or infinite.
        """
        with torch.no_grad():
            return [v.detach() for v in self._evaluate(self._resolve(params), batch)]

    def linearize(
        self, params: Sequence[Mapping[str, Tensor]] | None = None, batch: Any = None, *, what: str = "this method"
    ) -> GameLinearization:
        """:math:`\\xi` at ``params`` with its graph kept, ready for Jacobian products."""
        return GameLinearization(self, self._resolve(params), batch, what)

    def xi(self, params: Sequence[Mapping[str, Tensor]] | None = None, batch: Any = None) -> list[Tree]:
        """The simultaneous gradient :math:`\\xi`: each player's gradient of its own loss, one tree per player."""
        return self._own_grads(params, batch, range(self.n_players))

    def player_grad(self, player: int, params: Sequence[Mapping[str, Tensor]] | None = None, batch: Any = None) -> Tree:
        """One block of :math:`\\xi`: :math:`\\nabla_{\\theta_i} L_i` for ``player`` :math:`i`."""
        if not 0 <= player < self.n_players:
            raise InvalidArgumentError(f"player must be in [0, {self.n_players}), got {player}")
        return self._own_grads(params, batch, [player])[player]

    def _own_grads(self, params: Sequence[Mapping[str, Tensor]] | None, batch: Any, players: Any) -> list[Tree]:
        params = self._resolve(params)
        leaves = [v.detach().requires_grad_(True) for tree in params for v in tree.values()]
        wanted = list(players)
        flat: list[Tensor] = [torch.zeros_like(x) for x in leaves]
        with torch.enable_grad():
            losses = self._evaluate_some(self._to_trees(leaves), batch, wanted)
            for n_done, i in enumerate(wanted):
                own = [leaves[k] for k in self._player_index[i]]
                if losses[i].requires_grad:
                    got = torch.autograd.grad(losses[i], own, allow_unused=True, retain_graph=n_done < len(wanted) - 1)
                    for k, g in zip(self._player_index[i], got):
                        if g is not None:
                            flat[k] = g.detach()
        self.counter.grads += len(wanted)
        self.last_player_losses = {i: v.detach() for i, v in losses.items()}
        if len(losses) == self.n_players:
            self.last_losses = [losses[i].detach() for i in range(self.n_players)]
        return self._to_trees(flat)

    def hamiltonian(self, params: Sequence[Mapping[str, Tensor]] | None = None, batch: Any = None) -> Tensor:
        """:math:`\\mathcal{H} = \\tfrac12 \\|\\xi\\|^2` (zero exactly at the game's fixed points)."""
        xi = self.xi(params, batch)
        return 0.5 * sum((v * v).sum() for tree in xi for v in tree.values())  # type: ignore[return-value]

    def jvp(self, v: Vector, params: Sequence[Mapping[str, Tensor]] | None = None, batch: Any = None) -> Vector:
        """:math:`J v`; ``v`` is one tree per player or a flat vector, and the result has the same form."""
        flat, as_vec = self._vector_to_flat(v)
        return self._flat_to_vector(self.linearize(params, batch, what="jvp").jvp(flat), as_vec)

    def vjp(self, u: Vector, params: Sequence[Mapping[str, Tensor]] | None = None, batch: Any = None) -> Vector:
        """:math:`J^\\top u`; ``u`` is one tree per player or a flat vector, and the result has the same form."""
        flat, as_vec = self._vector_to_flat(u)
        return self._flat_to_vector(self.linearize(params, batch, what="vjp").vjp(flat), as_vec)

    def jacobian(
        self, params: Sequence[Mapping[str, Tensor]] | None = None, batch: Any = None, *, max_size: int = 4096
    ) -> Tensor:
        """The dense game Jacobian :math:`J` (``numel x numel``), rows and columns in :meth:`flatten` order.

        Raises:
            TooLargeError: when the game has more than ``max_size`` parameters (use :meth:`jvp`/:meth:`vjp`).
        """
        return self.linearize(params, batch, what="the dense game Jacobian").jacobian(max_size)

    def decompose(
        self, params: Sequence[Mapping[str, Tensor]] | None = None, batch: Any = None, *, max_size: int = 4096
    ) -> tuple[Tensor, Tensor]:
        """The symmetric and antisymmetric parts :math:`(S, A)` of the dense Jacobian."""
        jac = self.jacobian(params, batch, max_size=max_size)
        return 0.5 * (jac + jac.T), 0.5 * (jac - jac.T)

    def distance(self, params: Sequence[Mapping[str, Tensor]] | None = None) -> float:
        """The Euclidean distance from ``params`` (default: the current state) to :attr:`equilibrium`."""
        if self.equilibrium is None:
            raise UnsupportedError("this game has no known equilibrium; pass equilibrium= when building it")
        return float((self.flatten(params) - self.flatten(self.equilibrium)).norm())

    def step(
        self,
        optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
        *,
        scheme: str = "simultaneous",
        rule: Any = None,
        batch: Any = None,
    ) -> list[Tensor]:
        """One step of every player: see :func:`nestopt.games.schemes.step`."""
        from nestopt.games.schemes import step

        return step(self, optimizers, scheme=scheme, rule=rule, batch=batch)

    def __repr__(self) -> str:
        players = ", ".join(f"{n}: {s}" for n, s in zip(self.names, self.sizes))
        return f"Game({players})"
