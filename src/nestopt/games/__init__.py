"""Differentiable games: the :class:`Game` API, update schemes, game-aware rules, dynamics and a zoo.

* :class:`Game`: the players' parameters as one joint tree keyed ``"player/name"`` (per-player views too)
  and their losses; the simultaneous gradient :math:`\\xi`, the game Jacobian (dense, as products, or as a
  :class:`~nestopt.linalg.LinearOperator`) and its spectrum, its symmetric and antisymmetric parts, the
  Hamiltonian; :meth:`Game.from_modules` for ``torch.nn.Module`` players.
* :class:`GameLinearization`: the game at one point, for repeated Jacobian products.
* :func:`simultaneous` / :func:`alternating` (:mod:`nestopt.games.schemes`): step the players with any
  ``torch.optim`` optimizers, e.g. :class:`nestopt.optim.ComplexMomentum`.
* :mod:`nestopt.games.rules`: consensus optimization, SGA, LookAhead, LOLA, SOS.
* :mod:`nestopt.games.dynamics`: augmented linear operators, spectral radii, tuning by predicted rate.
* :mod:`nestopt.games.zoo`: bilinear games, Dirac-GAN, matching pennies, the IPD, GANs on mixtures, ...
* :mod:`nestopt.games.diversity`: Ridge Rider, finite-time Lyapunov exponents, bifurcation search, Game Ridge Rider.

Example:
    >>> import torch
    >>> from nestopt import games, optim
    >>> game = games.zoo.dirac_gan(init=1.0)
    >>> opts = [optim.ComplexMomentum(game.parameters(i), lr=0.5, beta=(0.68, 1.0)) for i in range(2)]
    >>> for _ in range(500):
    ...     _ = game.step(opts)
    >>> game.distance() < 1e-3
    True
"""

from nestopt.games import diversity, dynamics, rules, schemes, zoo
from nestopt.games.game import Game
from nestopt.games.linearization import GameLinearization
from nestopt.games.modules import Players
from nestopt.games.rules import LOLA, SGA, SOS, Consensus, Direction, Gradient, LookAhead, Rule
from nestopt.games.schemes import alternating, simultaneous

__all__ = [
    "LOLA",
    "SGA",
    "SOS",
    "Consensus",
    "Direction",
    "Game",
    "GameLinearization",
    "Gradient",
    "LookAhead",
    "Players",
    "Rule",
    "alternating",
    "diversity",
    "dynamics",
    "rules",
    "schemes",
    "simultaneous",
    "zoo",
]
