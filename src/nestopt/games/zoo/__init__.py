"""A zoo of differentiable games, each returned as a :class:`~nestopt.games.Game` at its starting point.

========================================  =================================================================
:func:`bilinear`                          :math:`\\min_x\\max_y x^\\top A y`; ``A = I`` or :func:`spread_spectrum`
:func:`mixture`                           cooperative/adversarial mixture, :math:`\\gamma \\in [0, 1]`
:func:`tandem`                            :math:`L_1 = (x+y)^2 - 2x`, :math:`L_2 = (x+y)^2 - 2y`
:func:`dirac_gan`                         Dirac-GAN (Mescheder et al., 2018)
:func:`matching_pennies`                  matching pennies with logits
:func:`ipd`                               iterated prisoner's dilemma, exact discounted value
:func:`small_ipd`                         one-logit IPD (tit-for-tat vs. always defect)
:func:`ipd_matching_pennies`              the one-logit IPD mixed with matching pennies
:func:`mixture_gan`                       a GAN on 8 Gaussians on a ring, or a 5x5 grid
:func:`ridge_surface`                     a 2-D loss with easy and hard minima around a saddle (Ridge Rider)
:func:`lever_game`                        the zero-shot coordination lever game
========================================  =================================================================

Example:
    >>> from nestopt.games import zoo
    >>> game = zoo.bilinear(zoo.spread_spectrum(), init=1.0)
    >>> game.names, game.sizes
    (['x', 'y'], [7, 7])
"""

from nestopt.games.zoo.classic import bilinear, dirac_gan, matching_pennies, mixture, spread_spectrum, tandem
from nestopt.games.zoo.diversity import LEVER_PAYOFFS, Surface, lever_game, ridge_surface
from nestopt.games.zoo.gan import gaussian_mixture, mixture_gan, mode_coverage, sample_mixture
from nestopt.games.zoo.ipd import (
    IPD_REWARDS,
    IPD_STRATEGIES,
    OUTCOMES,
    bimatrix_value,
    ipd,
    ipd_matching_pennies,
    ipd_outcome,
    ipd_values,
    reciprocity,
    small_ipd,
    small_ipd_payoffs,
)

__all__ = [
    "IPD_REWARDS",
    "IPD_STRATEGIES",
    "LEVER_PAYOFFS",
    "OUTCOMES",
    "Surface",
    "bilinear",
    "bimatrix_value",
    "dirac_gan",
    "gaussian_mixture",
    "ipd",
    "ipd_matching_pennies",
    "ipd_outcome",
    "ipd_values",
    "lever_game",
    "matching_pennies",
    "mixture",
    "mixture_gan",
    "mode_coverage",
    "reciprocity",
    "ridge_surface",
    "sample_mixture",
    "small_ipd",
    "small_ipd_payoffs",
    "spread_spectrum",
    "tandem",
]
