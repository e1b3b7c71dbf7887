"""Learning maps of a game as differentiable functions: :math:`F(\\theta) = \\theta - \\eta\\, d(\\theta)` and its
Jacobian-vector products :math:`J_F v`, with autograd graphs kept so that anything built from them (a
Lyapunov exponent) can be differentiated with respect to the starting point.

The direction :math:`d` is the simultaneous gradient :math:`\\xi` (naive learning), look-ahead
:math:`\\xi - \\alpha H_o \\xi`, or LOLA :math:`\\xi - \\alpha H_o \\xi - \\alpha \\chi` (the same formulas as
:class:`nestopt.games.LookAhead` and :class:`nestopt.games.LOLA`, kept differentiable in :math:`\\theta`):
:math:`(H_o\\xi)_i = (\\partial \\nabla_{\\theta_{-i}} L_i / \\partial \\theta_i)^\\top \\xi_{-i}` and
:math:`\\chi_i = (\\partial \\xi_{-i} / \\partial \\theta_i)^\\top \\nabla_{\\theta_{-i}} L_i`.

:math:`J_F v = v - \\eta J_d v`, where :math:`J_d v` is formed by reverse mode twice: the vector-Jacobian
product :math:`u \\mapsto J_d^\\top u` is linear in a dummy :math:`u`, and its derivative with respect to
:math:`u` along :math:`v` is :math:`J_d v`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from nestopt.autodiff import vjp
from nestopt.errors import UnsupportedError
from nestopt.games.rules import LOLA, LookAhead
from nestopt.tree import Tree

if TYPE_CHECKING:
    from nestopt.games.game import Game

__all__ = ["LearningMap"]


class LearningMap:
    """:math:`F(\\theta) = \\theta - \\eta\\, d(\\theta)` of a game, differentiable (see the module docstring).

    Args:
        game: the game.
        lr: the learning rate :math:`\\eta`.
        rule: ``None`` (naive learning, :math:`d = \\xi`), a :class:`~nestopt.games.LookAhead` or a
            :class:`~nestopt.games.LOLA` with ``taylor=True``.
        batch: the batch the losses see (one fixed batch: the map is deterministic).
        what: the caller's name, for error messages.

    Raises:
        UnsupportedError: another rule, or losses that autograd cannot differentiate twice.
    """

    def __init__(self, game: Game, lr: float, rule: Any = None, batch: Any = None, what: str = "the learning map"):
        if rule is not None and not isinstance(rule, LookAhead | LOLA):
            raise UnsupportedError(
                f"{what} supports naive learning (rule=None), LookAhead and LOLA; got {type(rule).__name__}"
            )
        if isinstance(rule, LOLA) and not rule.taylor:
            raise UnsupportedError(f"{what} supports LOLA with taylor=True (the first-order form) only")
        self.game, self.lr, self.rule, self.batch, self.what = game, float(lr), rule, batch, what

    def check(self, point: Tree) -> None:
        """Raise :class:`~nestopt.errors.UnsupportedError` when the game Jacobian cannot be formed at ``point``."""
        lin = self.game.linearize(point, self.batch, what=self.what)  # raises for once-differentiable losses
        if not any(x.requires_grad for x in lin.xi_graph.values()):
            raise UnsupportedError(
                f"{self.what} needs the game Jacobian, but no player's gradient depends on the parameters (the "
                "losses are constant or detached from them)"
            )

    def _grad(self, outputs: list[Tensor], inputs: list[Tensor], cotangents: list[Tensor] | None) -> list[Tensor]:
        try:
            return vjp(outputs, inputs, cotangents, create_graph=True)
        except RuntimeError as err:
            raise UnsupportedError(
                f"{self.what} needs second derivatives of the players' losses, but autograd could not form them: {err}"
            ) from err

    def direction(self, point: Tree) -> Tree:
        """:math:`d(\\theta)` as a joint tree, with its graph (create_graph)."""
        game = self.game
        with torch.enable_grad():
            losses = game.evaluate(point, self.batch)
            keys = list(point)
            xi: Tree = {}
            full: list[dict[str, Tensor]] = []
            for i, loss in enumerate(losses):
                own = game.player_keys(i)
                if self.rule is None:
                    xi.update(zip(own, self._grad([loss], [point[k] for k in own], None)))
                else:
                    g = dict(zip(keys, self._grad([loss], [point[k] for k in keys], None)))
                    full.append(g)
                    xi.update({k: g[k] for k in own})
            game.counter.grads += game.n_players
            if self.rule is None:
                return xi
            alpha = self.rule.alpha
            out: Tree = dict(xi)
            for i in range(game.n_players):
                own = game.player_keys(i)
                others = [k for k in keys if k not in set(own)]
                if not others:
                    continue
                own_in = [point[k] for k in own]
                ho = self._grad([full[i][k] for k in others], own_in, [xi[k] for k in others])
                terms = [alpha * h for h in ho]
                if isinstance(self.rule, LOLA):
                    chi = self._grad([xi[k] for k in others], own_in, [full[i][k] for k in others])
                    terms = [t + alpha * c for t, c in zip(terms, chi)]
                out.update({k: out[k] - t for k, t in zip(own, terms)})
                game.counter.hvps += 2 if isinstance(self.rule, LOLA) else 1
            return out

    def step(self, point: Tree, tangents: list[Tree]) -> tuple[Tree, list[Tree]]:
        """:math:`(F(\\theta), [J_F v \\text{ for } v \\text{ in tangents}])`, all with their graphs."""
        with torch.enable_grad():
            d = self.direction(point)
            keys = list(d)
            dummy = [torch.zeros_like(d[k]).requires_grad_(True) for k in keys]
            jt = self._grad([d[k] for k in keys], [point[k] for k in keys], dummy)
            out = []
            for v in tangents:
                jv = self._grad(jt, dummy, [v[k] for k in keys])
                out.append({k: v[k] - self.lr * g for k, g in zip(keys, jv)})
                self.game.counter.hvps += 1
        return {k: point[k] - self.lr * d[k] for k in keys}, out
