"""Game-aware update rules: directions built from the simultaneous gradient and the game Jacobian.

Each rule is an object with ``direction(game, params=None, batch=None) -> list[Tree]``; pass it as
``rule=`` to :meth:`Game.step <nestopt.games.Game.step>` and any ``torch.optim`` optimizer follows that
direction instead of :math:`\\xi`. With :math:`J = H` the game Jacobian, :math:`H_o` its off-diagonal blocks
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

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from nestopt._validate import nonnegative
from nestopt.errors import InvalidArgumentError
from nestopt.games.game import Game, GameLinearization
from nestopt.tree import Tree

__all__ = ["LOLA", "SGA", "SOS", "Consensus", "Gradient", "LookAhead", "Rule"]

Params = Sequence[Mapping[str, Tensor]] | None


def _dot(a: list[Tensor], b: list[Tensor]) -> Tensor:
    return torch.stack([(x * y).sum() for x, y in zip(a, b)]).sum()


def _axpy(alpha: float | Tensor, x: list[Tensor], y: list[Tensor]) -> list[Tensor]:
    return [yy + alpha * xx for xx, yy in zip(x, y)]


class Rule:
    """Base class of the update rules: :meth:`direction` returns one tree per player."""

    name = "rule"

    def direction(self, game: Game, params: Params = None, batch: Any = None) -> list[Tree]:
        lin = game.linearize(params, batch, what=self.name)
        return game._to_trees([d.detach() for d in self._flat(game, lin)])

    def _flat(self, game: Game, lin: GameLinearization) -> list[Tensor]:  # pragma: no cover - overridden
        raise NotImplementedError


class Gradient(Rule):
    """The simultaneous gradient :math:`\\xi` itself (first order; for uniform code paths)."""

    name = "Gradient"

    def direction(self, game: Game, params: Params = None, batch: Any = None) -> list[Tree]:
        return game.xi(params, batch)


class Consensus(Rule):
    """Consensus optimization: :math:`\\xi + \\gamma J^\\top \\xi = \\xi + \\gamma \\nabla \\mathcal{H}`.

    Args:
        gamma: weight of the Hamiltonian gradient, >= 0.
    """

    name = "Consensus optimization"

    def __init__(self, gamma: float = 1.0) -> None:
        self.gamma = nonnegative("gamma", gamma)

    def _flat(self, game: Game, lin: GameLinearization) -> list[Tensor]:
        xi = [x.detach() for x in lin.xi]
        return _axpy(self.gamma, lin.vjp(xi), xi)


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

    def _flat(self, game: Game, lin: GameLinearization) -> list[Tensor]:
        xi = [x.detach() for x in lin.xi]
        jt_xi = lin.vjp(xi)
        j_xi = lin.jvp(xi)
        at_xi = [0.5 * (a - b) for a, b in zip(jt_xi, j_xi)]
        sign = 1.0
        if self.align:
            d = sum(x.numel() for x in xi)
            score = _dot(xi, jt_xi) * _dot(at_xi, jt_xi) / d + self.eps
            sign = 1.0 if float(score) >= 0 else -1.0
        self.last_sign = sign
        return _axpy(sign * self.lam, at_xi, xi)


def _shaping_terms(game: Game, lin: GameLinearization, need_chi: bool) -> tuple[list[Tensor], list[Tensor]]:
    """:math:`H_o \\xi` and :math:`\\chi` (zeros when not needed), as flat lists."""
    xi_const = [x.detach() for x in lin.xi]
    ho_xi = [torch.zeros_like(x) for x in xi_const]
    chi = [torch.zeros_like(x) for x in xi_const]
    for i in range(game.n_players):
        own = game._player_index[i]
        others = [k for k in range(len(lin.leaves)) if k not in own]
        if not others:
            continue
        grad_li = lin.loss_gradient(i)  # nabla L_i over every player, graph kept
        own_leaves = [lin.leaves[k] for k in own]
        t_i = _dot([grad_li[k] for k in others], [xi_const[k] for k in others])
        for k, g in zip(own, lin._grad([t_i], own_leaves, None)):
            ho_xi[k] = g.detach()
        if need_chi:
            s_i = _dot([lin.xi[k] for k in others], [grad_li[k].detach() for k in others])
            for k, g in zip(own, lin._grad([s_i], own_leaves, None)):
                chi[k] = g.detach()
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

    def _flat(self, game: Game, lin: GameLinearization) -> list[Tensor]:
        ho_xi, _ = _shaping_terms(game, lin, need_chi=False)
        return _axpy(-self.alpha, ho_xi, [x.detach() for x in lin.xi])


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

    def _flat(self, game: Game, lin: GameLinearization) -> list[Tensor]:
        if self.taylor:
            ho_xi, chi = _shaping_terms(game, lin, need_chi=True)
            xi = [x.detach() for x in lin.xi]
            return [x - self.alpha * (h + c) for x, h, c in zip(xi, ho_xi, chi)]
        out: list[Tensor] = [torch.zeros_like(x) for x in lin.leaves]
        for i in range(game.n_players):
            own = set(game._player_index[i])
            with torch.enable_grad():
                stepped = [leaf if k in own else leaf - self.alpha * lin.xi[k] for k, leaf in enumerate(lin.leaves)]
                loss = game._evaluate(game._to_trees(stepped), lin.batch)[i]
            own_leaves = [lin.leaves[k] for k in game._player_index[i]]
            for k, g in zip(game._player_index[i], lin._grad([loss], own_leaves, None)):
                out[k] = g.detach()
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

    def _flat(self, game: Game, lin: GameLinearization) -> list[Tensor]:
        ho_xi, chi = _shaping_terms(game, lin, need_chi=True)
        xi = [x.detach() for x in lin.xi]
        xi0 = _axpy(-self.alpha, ho_xi, xi)
        inner = float(_dot([-self.alpha * c for c in chi], xi0))
        p1 = 1.0 if inner >= 0 else min(1.0, -self.a * float(_dot(xi0, xi0)) / inner)
        xi_norm = float(_dot(xi, xi).sqrt())
        p2 = xi_norm**2 if xi_norm < self.b else 1.0
        self.last_p = min(p1, p2)
        return _axpy(-self.last_p * self.alpha, chi, xi0)
