"""Diversity in optimization and games: Ridge Rider, finite-time Lyapunov exponents, Game Ridge Rider.

Gradient descent finds one solution, the one its start and the landscape make easy. These searches find
several, by branching where the dynamics branch:

* :func:`ridge_rider` (Parker-Holder et al., NeurIPS 2020): from a saddle of one loss, follow ("ride")
  each Hessian eigenvector with a negative eigenvalue, re-tracking it step by step, and branch again where
  the ride ends; the leaves are the solutions, named by their fingerprints. Exact (dense Hessian) and
  approximate (Lanczos on Hessian-vector products) modes; breadth- or depth-first.
* :func:`find_saddle`: Ridge Rider's start, the maximally invariant saddle (gradient-norm minimization);
  :func:`find_fixed_point`: the nearest fixed point of a game.
* :func:`lyapunov` (Lorraine et al., AAMAS 2022): finite-time Lyapunov exponents of a game's learning map
  (naive, look-ahead or LOLA), the top one and the spectrum by repeated QR, differentiable in the start.
* :func:`find_bifurcation`: gradient ascent on the exponent, to the boundary between basins.
* :func:`game_ridge_rider`: at a bifurcation point, branch along the game Jacobian's eigenvectors
  (:math:`\\mathrm{Re}(e^{i\\phi} v)` for complex pairs), run the base optimizer and group the outcomes.

Example:
    >>> import torch
    >>> from nestopt.games.diversity import ridge_rider
    >>> loss = lambda p: ((p["w"] ** 2 - 1) ** 2).sum()      # saddle at 0, four minima at (+-1, +-1)
    >>> res = ridge_rider(loss, {"w": torch.zeros(2, dtype=torch.float64)}, step=0.1)
    >>> len({tuple(leaf.params["w"].round().tolist()) for leaf in res.leaves})
    4
"""

from nestopt.games.diversity._common import DiversityWarning
from nestopt.games.diversity.bifurcation import BifurcationResult, find_bifurcation
from nestopt.games.diversity.dynamics import LearningMap
from nestopt.games.diversity.game_ridge_rider import Branch, GameRidgeRiderResult, branch_directions, game_ridge_rider
from nestopt.games.diversity.lyapunov import LyapunovResult, lyapunov
from nestopt.games.diversity.ridge_rider import Ride, RidgeRiderInfo, RidgeRiderResult, ridge_rider
from nestopt.games.diversity.saddle import SaddleResult, find_fixed_point, find_saddle

__all__ = [
    "BifurcationResult",
    "Branch",
    "DiversityWarning",
    "GameRidgeRiderResult",
    "LearningMap",
    "LyapunovResult",
    "Ride",
    "RidgeRiderInfo",
    "RidgeRiderResult",
    "SaddleResult",
    "branch_directions",
    "find_bifurcation",
    "find_fixed_point",
    "find_saddle",
    "game_ridge_rider",
    "lyapunov",
    "ridge_rider",
]
