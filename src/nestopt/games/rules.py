"""Game-aware update rules: directions built from the simultaneous gradient and the game Jacobian.

Each rule is an object with ``evaluate(game, params=None, batch=None) -> Direction``: the direction as a
joint tree (keyed like :attr:`Game.state <nestopt.games.Game.state>`) and the players' losses at the point;
``direction(...)`` gives the same direction as one tree per player. Pass a rule as ``rule=`` to
:meth:`Game.step <nestopt.games.Game.step>` and any ``torch.optim`` optimizer follows that direction instead
of :math:`\\xi`. Rules use only the public products of :class:`~nestopt.games.GameLinearization`. With :math:`J = H` the game Jacobian, :math:`H_o` its off-diagonal blocks
(:math:`H_{ij} = \\nabla_{\\theta_j}\\nabla_{\\theta_i} L_i`, :math:`i \\ne j`) and :math:`A = \\tfrac12 (J - J^\\top)`:

============================  ==========================================================================
:class:`Consensus`            :math:`\\xi + \\gamma J^\\top \\xi` (Mescheder et al., 2017)
:class:`SGA`                  :math:`\\xi + \\lambda A^\\top \\xi`, :math:`\\lambda = \\lambda_0 \\,\\mathrm{sign}\\big(\\tfrac1d
                              \\langle \\xi, J^\\top\\xi\\rangle \\langle A^\\top\\xi, J^\\top\\xi\\rangle + \\epsilon\\big)` with
                              the alignment sign rule (Balduzzi et al., 2018)
:class:`LookAhead`            :math:`\\xi - \\alpha H_o \\xi` (Zhang & Lesser, 2010)
:class:`LOLA`                 :math:`\\xi - \\alpha H_o \\xi - \\alpha \\chi`, :math:`\\chi_i = \\sum_{j \\ne i} H_{ji}^\\top
                              \\nabla_{\\theta_j} L_i` (Foerster et al., 2018)
:class:`SOS`                  :math:`\\xi_0 - p\\,\\alpha\\chi`, :math:`\\xi_0 = \\xi - \\alpha H_o\\xi`, with :math:`p \\in [0,1]`
                              chosen by the SOS criterion, :math:`a = 0.5`, :math:`b = 0.1` (Letcher et al., 2019)
============================  ==========================================================================

All rules use exact derivatives of the players' losses (Jacobian-vector products, no dense Jacobian). A
game whose losses autograd cannot differentiate twice raises :class:`~nestopt.errors.UnsupportedError`
naming the rule.

Example:
    >>> import torch
    >>> from nestopt.games import rules, zoo
    >>> game = zoo.bilinear(dim=1, init=1.0)
    >>> opt = torch.optim.SGD(game.parameters(), lr=0.2)
    >>> for _ in range(300):
    ...     _ = game.step(opt, rule=rules.SGA())
    >>> game.distance() < 1e-3
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor

from nestopt import tree
from nestopt._validate import nonnegative
from nestopt.errors import InvalidArgumentError
from nestopt.tree import Tree

if TYPE_CHECKING:
    from nestopt.games.game import Game, Params
    from nestopt.games.linearization import GameLinearization

__all__ = ["LOLA", "SGA", "SOS", "Consensus", "Direction", "Gradient", "LookAhead", "Rule"]


class Direction(NamedTuple):
    """A rule's direction (a joint tree) and every player's loss at the point where it was computed."""

    value: Tree
    losses: list[Tensor]


def _axpy(alpha: float | Tensor, x: Tree, y: Tree) -> Tree:
    """``y + alpha * x`` key by key, with that rounding (the rules' arithmetic, unchanged)."""
    return tree.map(lambda a, b: b + alpha * a, x, y)


class Rule:
    """Base class of the update rules: :meth:`evaluate` gives the direction and the losses."""

    name = "rule"

    def evaluate(self, game: Game, params: Params | None = None, batch: Any = None) -> Direction:
        """The direction at ``params`` (default: the game's state) as a joint tree, with the losses there."""
        lin = game.linearize(params, batch, what=self.name)
        return Direction(tree.detach(self._direction(game, lin)), lin.losses)

    def direction(self, game: Game, params: Params | None = None, batch: Any = None) -> list[Tree]:
        """The direction as one tree per player."""
        return game.split(self.evaluate(game, params, batch).value)

    def _direction(self, game: Game, lin: GameLinearization) -> Tree:  # pragma: no cover - overridden
        raise NotImplementedError


class Gradient(Rule):
    """The simultaneous gradient :math:`\\xi` itself (first order; for uniform code paths)."""

    name = "Gradient"

    def evaluate(self, game: Game, params: Params | None = None, batch: Any = None) -> Direction:
        losses, xi = game.value_and_xi(params, batch)
        return Direction(xi, losses)


class Consensus(Rule):
    """Consensus optimization: :math:`\\xi + \\gamma J^\\top \\xi = \\xi + \\gamma \\nabla \\mathcal{H}`.

    Args:
        gamma: weight of the Hamiltonian gradient, >= 0.
    """

    name = "Consensus optimization"

    def __init__(self, gamma: float = 1.0) -> None:
        self.gamma = nonnegative("gamma", gamma)

    def _direction(self, game: Game, lin: GameLinearization) -> Tree:
        return _axpy(self.gamma, lin.vjp(lin.xi), lin.xi)


class SGA(Rule):
    """Symplectic gradient adjustment :math:`\\xi + \\lambda A^\\top \\xi` with the alignment sign rule.

    Args:
        lam: the magnitude :math:`\\lambda_0 > 0`.
        align: choose the sign of :math:`\\lambda` so that the adjustment points towards stable fixed points
            and away from unstable ones: :math:`\\mathrm{sign}(\\tfrac1d \\langle\\xi, \\nabla\\mathcal H\\rangle
            \\langle A^\\top\\xi, \\nabla\\mathcal H\\rangle + \\epsilon)`. Without it :math:`\\lambda = \\lambda_0`.
        eps: the :math:`\\epsilon` of the sign rule (0.1 in the paper).
    """

    name = "SGA"

    def __init__(self, lam: float = 1.0, *, align: bool = True, eps: float = 0.1) -> None:
        self.lam = nonnegative("lam", lam, positive=True)
        self.align = bool(align)
        self.eps = nonnegative("eps", eps)
        self.last_sign: float = 1.0

    def _direction(self, game: Game, lin: GameLinearization) -> Tree:
        xi = lin.xi
        jt_xi = lin.vjp(xi)
        j_xi = lin.jvp(xi)
        at_xi = tree.map(lambda a, b: 0.5 * (a - b), jt_xi, j_xi)
        sign = 1.0
        if self.align:
            score = tree.dot(xi, jt_xi) * tree.dot(at_xi, jt_xi) / tree.numel(xi) + self.eps
            sign = 1.0 if float(score) >= 0 else -1.0
        self.last_sign = sign
        return _axpy(sign * self.lam, at_xi, xi)


def _shaping_terms(game: Game, lin: GameLinearization, need_chi: bool) -> tuple[Tree, Tree]:
    """:math:`H_o \\xi` and :math:`\\chi` (zeros when not needed), as joint trees."""
    ho_xi, chi = tree.zeros_like(lin.xi), tree.zeros_like(lin.xi)
    for i in range(game.n_players):
        own = set(game.player_keys(i))
        others = [k for k in lin.point if k not in own]
        if not others:
            continue
        with torch.enable_grad():
            grad_li = lin.loss_gradient(i)  # nabla L_i over every player, graph kept
            t_i = tree.dot({k: grad_li[k] for k in others}, {k: lin.xi[k] for k in others})
            ho_xi.update(lin.grad(t_i, i))
            if need_chi:
                s_i = tree.dot({k: lin.xi_graph[k] for k in others}, {k: grad_li[k].detach() for k in others})
                chi.update(lin.grad(s_i, i))
        game.counter.hvps += 2 if need_chi else 1
    return ho_xi, chi


class LookAhead(Rule):
    """Look-ahead: each player reacts to its opponents' next naive step, :math:`\\xi - \\alpha H_o \\xi`.

    Args:
        alpha: the opponents' assumed learning rate (the look-ahead distance), >= 0.
    """

    name = "LookAhead"

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = nonnegative("alpha", alpha)

    def _direction(self, game: Game, lin: GameLinearization) -> Tree:
        ho_xi, _ = _shaping_terms(game, lin, need_chi=False)
        return _axpy(-self.alpha, ho_xi, lin.xi)


class LOLA(Rule):
    """Learning with opponent-learning awareness, with exact derivatives.

    With ``taylor=True`` (the usual form) the first-order expansion of player :math:`i`'s loss after its
    opponents' naive step, differentiated through that step: :math:`\\xi - \\alpha H_o \\xi - \\alpha \\chi`.
    With ``taylor=False`` no expansion: the gradient of :math:`L_i(\\theta_i, \\theta_{-i} - \\alpha
    \\xi_{-i}(\\theta))` with respect to :math:`\\theta_i`, through the opponents' step.

    Args:
        alpha: the opponents' assumed learning rate, >= 0.
        taylor: use the first-order expansion (default) or differentiate through the step exactly.
    """

    name = "LOLA"

    def __init__(self, alpha: float = 1.0, *, taylor: bool = True) -> None:
        self.alpha = nonnegative("alpha", alpha)
        self.taylor = bool(taylor)

    def _direction(self, game: Game, lin: GameLinearization) -> Tree:
        if self.taylor:
            ho_xi, chi = _shaping_terms(game, lin, need_chi=True)
            return tree.map(lambda x, h, c: x - self.alpha * (h + c), lin.xi, ho_xi, chi)
        out = tree.zeros_like(lin.xi)
        for i in range(game.n_players):
            own = set(game.player_keys(i))
            with torch.enable_grad():
                stepped = {k: v if k in own else v - self.alpha * lin.xi_graph[k] for k, v in lin.point.items()}
                (loss,) = game.evaluate(stepped, lin.batch, players=[i])
                out.update(lin.grad(loss, i))
            game.counter.hvps += 1
        return out


class SOS(Rule):
    """Stable opponent shaping: LOLA's shaping term scaled by :math:`p \\in [0, 1]` so that it never
    fights the look-ahead direction and vanishes near fixed points.

    .. math::

        \\xi_0 = \\xi - \\alpha H_o \\xi, \\qquad
        p_1 = \\begin{cases} 1 & \\langle -\\alpha\\chi, \\xi_0\\rangle \\ge 0 \\\\
              \\min\\big(1, \\frac{-a \\|\\xi_0\\|^2}{\\langle -\\alpha\\chi, \\xi_0\\rangle}\\big) & \\text{otherwise}\\end{cases},
        \\qquad p_2 = \\begin{cases} \\|\\xi\\|^2 & \\|\\xi\\| < b \\\\ 1 & \\text{otherwise}\\end{cases},

        p = \\min(p_1, p_2), \\qquad \\xi_{SOS} = \\xi_0 - p\\,\\alpha\\chi.

    Args:
        alpha: the opponents' assumed learning rate, >= 0.
        a: in (0, 1); 0.5 as in the paper.
        b: in (0, 1); 0.1 as in the paper.
    """

    name = "SOS"

    def __init__(self, alpha: float = 1.0, *, a: float = 0.5, b: float = 0.1) -> None:
        self.alpha = nonnegative("alpha", alpha)
        self.a = nonnegative("a", a, positive=True)
        self.b = nonnegative("b", b, positive=True)
        if self.a >= 1 or self.b >= 1:
            raise InvalidArgumentError(f"a and b must be in (0, 1), got a={a!r}, b={b!r}")
        self.last_p: float = 1.0

    def _direction(self, game: Game, lin: GameLinearization) -> Tree:
        ho_xi, chi = _shaping_terms(game, lin, need_chi=True)
        xi = lin.xi
        xi0 = _axpy(-self.alpha, ho_xi, xi)
        inner = float(tree.dot(tree.scale(chi, -self.alpha), xi0))
        p1 = 1.0 if inner >= 0 else min(1.0, -self.a * float(tree.dot(xi0, xi0)) / inner)
        xi_norm = float(tree.norm(xi))
        p2 = xi_norm**2 if xi_norm < self.b else 1.0
        self.last_p = min(p1, p2)
        return _axpy(-self.last_p * self.alpha, chi, xi0)
