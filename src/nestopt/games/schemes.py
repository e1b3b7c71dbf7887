"""Update schemes: step the players of a :class:`~nestopt.games.Game` with ``torch.optim`` optimizers.

*Simultaneous* updates give every player the gradient at the same point :math:`\\theta_t`:

.. math::  \\theta_{i, t+1} = \\mathrm{opt}_i(\\theta_{i,t}, \\; d_i(\\theta_t)).

*Alternating* updates move the players in turn, each seeing the others' newest parameters:

.. math::  \\theta_{i, t+1} = \\mathrm{opt}_i\\big(\\theta_{i,t}, \\; d_i(\\theta_{1,t+1}, \\dots, \\theta_{i-1,t+1}, \\theta_{i,t}, \\dots, \\theta_{n,t})\\big).

The direction :math:`d` is the simultaneous gradient :math:`\\xi` by default, or what a game-aware rule of
:mod:`nestopt.games.rules` makes of it (consensus, SGA, LookAhead, LOLA, SOS): ``rule.evaluate(game, batch=)``
returns the direction and the losses it saw, and the schemes return those losses. The optimizers only ever see
``.grad``, so any ``torch.optim`` optimizer works: SGD, Adam, :class:`~nestopt.optim.ComplexMomentum`, ... An
:class:`~nestopt.optim.ExtraGradient` optimizer gets its second gradient at the look-ahead point.

Example:
    >>> import torch
    >>> from nestopt.games import zoo
    >>> from nestopt.optim import ComplexMomentum
    >>> game = zoo.bilinear(dim=1, init=1.0)
    >>> opts = [ComplexMomentum(game.parameters(i), lr=0.43, beta=(0.68, 1.0)) for i in range(2)]
    >>> for _ in range(200):
    ...     _ = game.step(opts, scheme="simultaneous")
    >>> game.distance() < 1e-3
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from nestopt.errors import InvalidArgumentError, UnsupportedError
from nestopt.optim.extragradient import ExtraGradient
from nestopt.tree import Tree

if TYPE_CHECKING:
    from nestopt.games.game import Game

__all__ = ["SCHEMES", "alternating", "simultaneous", "step"]

SCHEMES = ("simultaneous", "alternating")


def _direction(game: Game, rule: Any, batch: Any, player: int | None = None) -> tuple[Tree, list[Tensor]]:
    """The direction (a joint tree) and the losses it was computed with: of ``player`` only, or of all."""
    if rule is None:
        losses, xi = game.value_and_xi(batch=batch, players=None if player is None else [player])
        return xi, losses
    if hasattr(rule, "evaluate"):
        direction, losses = rule.evaluate(game, batch=batch)
    else:  # a rule with only direction(game, params, batch) -> one tree per player
        direction, losses = game.join(rule.direction(game, batch=batch)), game.losses(batch=batch)
    return direction, losses if player is None else [losses[player]]


def _write_grads(game: Game, direction: Tree, players: Sequence[int]) -> None:
    for i in players:
        for key in game.player_keys(i):
            p = game.state[key]
            p.grad = direction[key].detach().to(p.dtype).clone()


def _as_list(optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer]) -> list[torch.optim.Optimizer]:
    if isinstance(optimizers, torch.optim.Optimizer):
        return [optimizers]
    opts = list(optimizers)
    if not opts or not all(isinstance(o, torch.optim.Optimizer) for o in opts):
        raise InvalidArgumentError("optimizers must be a torch.optim.Optimizer or a non-empty list of them")
    return opts


def _check_coverage(game: Game, opts: list[torch.optim.Optimizer], per_player: bool) -> None:
    owner = {id(p): i for i in range(game.n_players) for p in game.parameters(i)}
    for k, opt in enumerate(opts):
        for group in opt.param_groups:
            for p in group["params"]:
                if id(p) not in owner:
                    raise InvalidArgumentError(
                        f"optimizer {k} steps a tensor that is not a parameter of the game; build optimizers over "
                        "game.parameters(i)"
                    )
                if per_player and owner[id(p)] != k:
                    raise InvalidArgumentError(
                        f"optimizer {k} steps a parameter of player {game.names[owner[id(p)]]!r}; with alternating "
                        "updates optimizer i must step only player i (game.parameters(i))"
                    )


def simultaneous(
    game: Game,
    optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
    *,
    rule: Any = None,
    batch: Any = None,
) -> list[Tensor]:
    """Every player steps from the gradient at the same point. Returns the losses before the step.

    ``optimizers`` is one optimizer over all players or any list of optimizers over the game's parameters.
    """
    opts = _as_list(optimizers)
    _check_coverage(game, opts, per_player=False)
    everyone = range(game.n_players)
    direction, losses = _direction(game, rule, batch)
    _write_grads(game, direction, everyone)
    extra = [isinstance(o, ExtraGradient) for o in opts]
    if any(extra) and not all(extra):
        raise UnsupportedError("mixing ExtraGradient with other optimizers in one simultaneous step is not supported")
    if all(extra):
        for o in opts:
            o.extrapolate()  # type: ignore[attr-defined]
        _write_grads(game, _direction(game, rule, batch)[0], everyone)
    for o in opts:
        o.step()
    return losses


def alternating(
    game: Game,
    optimizers: Sequence[torch.optim.Optimizer],
    *,
    rule: Any = None,
    batch: Any = None,
) -> list[Tensor]:
    """The players step in turn (player 0 first), each from the gradient at the newest parameters.

    ``optimizers[i]`` must step exactly player ``i``'s tensors. Returns each player's loss at the point where
    it took its gradient.
    """
    opts = _as_list(optimizers)
    if len(opts) != game.n_players:
        raise InvalidArgumentError(
            f"alternating updates need one optimizer per player ({game.n_players}), got {len(opts)}"
        )
    _check_coverage(game, opts, per_player=True)
    losses: list[Tensor] = []
    for i, opt in enumerate(opts):
        direction, seen = _direction(game, rule, batch, i)
        _write_grads(game, direction, [i])
        losses.append(seen[0])
        if isinstance(opt, ExtraGradient):
            opt.extrapolate()
            _write_grads(game, _direction(game, rule, batch, i)[0], [i])
        opt.step()
    return losses


def step(
    game: Game,
    optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
    *,
    scheme: str = "simultaneous",
    rule: Any = None,
    batch: Any = None,
) -> list[Tensor]:
    """One step of :func:`simultaneous` or :func:`alternating` updates, chosen by ``scheme``."""
    if scheme == "simultaneous":
        return simultaneous(game, optimizers, rule=rule, batch=batch)
    if scheme == "alternating":
        if isinstance(optimizers, torch.optim.Optimizer):
            raise InvalidArgumentError("alternating updates need a list with one optimizer per player")
        return alternating(game, optimizers, rule=rule, batch=batch)
    raise InvalidArgumentError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
