"""A game at one point, with the autograd graph of its simultaneous gradient kept for Jacobian products."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from nestopt import linalg, tree
from nestopt.autodiff import vjp
from nestopt.errors import TooLargeError, UnsupportedError
from nestopt.tree import Tree

if TYPE_CHECKING:
    from nestopt.games.game import Game

__all__ = ["GameLinearization"]


def _check_twice_differentiable(outputs: Sequence[Tensor], what: str) -> None:
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
    """The game at one point :math:`\\theta`, ready for repeated products with its Jacobian :math:`J`.

    Build it with :meth:`Game.linearize <nestopt.games.Game.linearize>`. Vectors are joint trees keyed
    ``"player/name"`` like :attr:`Game.state <nestopt.games.Game.state>`. :meth:`vjp` costs one backward pass;
    :meth:`jvp` differentiates the linear map :math:`u \\mapsto J^\\top u` once more (its graph is built on
    the first call, then each product is one backward pass).

    Attributes:
        point: the point as a joint tree of leaves that require grad (the graph's inputs).
        losses: every player's loss at the point (detached).
        xi: the simultaneous gradient :math:`\\xi` (detached joint tree).
        xi_graph: :math:`\\xi` with its autograd graph, for rules that differentiate through it.
        batch: the batch the losses were evaluated on.
    """

    def __init__(self, game: Game, point: Tree, batch: Any, what: str) -> None:
        self.game, self.what, self.batch = game, what, batch
        self.point: Tree = {k: v.detach().requires_grad_(True) for k, v in point.items()}
        with torch.enable_grad():
            losses = game.evaluate(self.point, batch)
            xi: Tree = {}
            for i, loss in enumerate(losses):
                keys = game.player_keys(i)
                xi.update(zip(keys, self._grad([loss], [self.point[k] for k in keys], None, create_graph=True)))
        self.xi_graph = xi
        _check_twice_differentiable(list(xi.values()), what)
        game.counter.grads += game.n_players
        self._losses = losses
        self.losses: list[Tensor] = [v.detach() for v in losses]
        self.xi: Tree = tree.detach(xi)
        self._transpose_graph: tuple[list[Tensor], list[Tensor]] | None = None

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

    # -- Jacobian products ---------------------------------------------------------------------------
    def vjp(self, u: Tree) -> Tree:
        """:math:`J^\\top u` for a joint tree ``u``."""
        self.game.counter.hvps += 1
        got = self._grad(list(self.xi_graph.values()), list(self.point.values()), [u[k] for k in self.xi])
        return {k: g.detach() for k, g in zip(self.xi, got)}

    def _transposed(self) -> tuple[list[Tensor], list[Tensor]]:
        """The graph of :math:`J^\\top w` for a dummy :math:`w` (linear in it), built once."""
        if self._transpose_graph is None:
            dummy = [torch.zeros_like(x).requires_grad_(True) for x in self.xi.values()]
            with torch.enable_grad():
                jt = self._grad(list(self.xi_graph.values()), list(self.point.values()), dummy, create_graph=True)
            self._transpose_graph = (dummy, jt)
        return self._transpose_graph

    def jvp(self, v: Tree) -> Tree:
        """:math:`J v` for a joint tree ``v``: the derivative of :math:`w \\mapsto J^\\top w` along ``v``."""
        self.game.counter.hvps += 1
        dummy, jt = self._transposed()
        return {k: g.detach() for k, g in zip(self.xi, self._grad(jt, dummy, [v[k] for k in self.xi]))}

    def _batched(self, outputs: list[Tensor], inputs: list[Tensor], vs: Tree) -> Tree:
        """Products with a batch (leading dimension); a ``RuntimeError`` lets the operator fall back to a loop."""
        self.game.counter.hvps += int(next(iter(vs.values())).shape[0])
        got = vjp(outputs, inputs, [vs[k] for k in self.xi], retain_graph=True, is_grads_batched=True)
        return {k: g.detach() for k, g in zip(self.xi, got)}

    def operator(self) -> linalg.LinearOperator:
        """:math:`J` as a non-symmetric :class:`~nestopt.linalg.LinearOperator`: ``matvec`` is :meth:`jvp`,
        ``rmatvec`` :meth:`vjp` (both batched with ``is_grads_batched`` where autograd can)."""
        xi_out, leaves = list(self.xi_graph.values()), list(self.point.values())

        def batched_jvp(vs: Tree) -> Tree:
            dummy, jt = self._transposed()
            return self._batched(jt, dummy, vs)

        return linalg.LinearOperator(
            self.jvp, self.xi, batched_matvec=batched_jvp, rmatvec=self.vjp,
            batched_rmatvec=lambda us: self._batched(xi_out, leaves, us), symmetric=False,
        )  # fmt: skip

    def jacobian(self, max_size: int) -> Tensor:
        """The dense :math:`d \\times d` Jacobian (rows and columns in the joint tree's order); row :math:`a`
        is :math:`e_a^\\top J`, all rows from one batched backward pass."""
        d = tree.numel(self.xi)
        if d > max_size:
            raise TooLargeError(
                f"the game has {d} parameters; a dense Jacobian is limited to max_size={max_size}. Use jvp/vjp "
                "products or jacobian_operator() instead, or raise max_size"
            )
        x0 = next(iter(self.xi.values()))
        eye = torch.eye(d, dtype=x0.dtype, device=x0.device)
        cols = torch.split(eye, [x.numel() for x in self.xi.values()], dim=1)
        cots = [c.reshape(d, *x.shape) for c, x in zip(cols, self.xi.values())]
        outputs, leaves = list(self.xi_graph.values()), list(self.point.values())
        self.game.counter.hvps += d
        try:
            rows = self._grad(outputs, leaves, cots, is_grads_batched=True)
        except UnsupportedError:
            # some operations have no batching rule: fall back to one product per row
            rows_list = [self._grad(outputs, leaves, [c[a] for c in cots]) for a in range(d)]
            return torch.stack([torch.cat([g.reshape(-1) for g in r]) for r in rows_list]).detach()
        return torch.cat([g.reshape(d, -1) for g in rows], dim=1).detach()

    # -- building blocks of the game-aware rules -----------------------------------------------------
    def loss_gradient(self, player: int) -> Tree:
        """:math:`\\nabla_\\theta L_i` with respect to *every* player's parameters, with its graph kept."""
        got = self._grad([self._losses[player]], list(self.point.values()), None, create_graph=True)
        return dict(zip(self.point, got))

    def grad(self, output: Tensor, player: int) -> Tree:
        """:math:`\\partial\\, \\mathrm{output} / \\partial \\theta_i` for a scalar built from this graph (detached,
        keyed like the player's part of the joint tree)."""
        keys = self.game.player_keys(player)
        return {k: g.detach() for k, g in zip(keys, self._grad([output], [self.point[k] for k in keys], None))}
