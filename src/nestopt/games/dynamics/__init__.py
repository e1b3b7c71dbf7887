"""Linear dynamics of game optimizers: augmented update operators, spectral radii, tuning by rate.

Near a fixed point :math:`\\theta^*` (exactly, for a quadratic game) the simultaneous gradient is linear,
:math:`\\xi(\\theta) = M (\\theta - \\theta^*)` with :math:`M` the game Jacobian (:func:`jacobian_matrix` returns it
as a dense matrix). Every method here is then a linear map :math:`s_{t+1} = T s_t` on an *augmented* state
:math:`s` (the error :math:`e = \\theta - \\theta^*` plus whatever the method remembers), and its spectral
radius :math:`\\rho(T)` is the asymptotic convergence rate: :math:`\\|e_t\\| \\sim \\rho^t`.

==================================  ==============================  ===============================================
operator                            state                           update (simultaneous)
==================================  ==============================  ===============================================
:func:`gda_operator`                :math:`e`                       :math:`e' = e - \\eta M e`
:func:`extragradient_operator`      :math:`e`                       :math:`e' = e - \\eta M (e - \\eta M e)`
:func:`optimistic_operator`         :math:`(e, e_{-1})`             :math:`e' = e - \\eta (2 M e - M e_{-1})`
:func:`momentum_operator`           :math:`(e, \\mu)`                :math:`\\mu' = \\beta\\mu - M e,\\; e' = e + \\eta \\mu'`
:func:`complex_momentum_operator`   :math:`(e, \\Re\\mu, \\Im\\mu)`     :math:`\\mu' = \\beta\\mu - M e,\\; e' = e + \\Re(\\eta\\alpha\\mu')`
==================================  ==============================  ===============================================

These match :class:`torch.optim.SGD`, :class:`~nestopt.optim.ExtraGradient`,
:class:`~nestopt.optim.OptimisticSGD`, :class:`~nestopt.optim.HeavyBall` and
:class:`~nestopt.optim.ComplexMomentum` step for step. With ``alternating=True`` (and the players' ``blocks``)
the players update in turn, each seeing the others' newest parameters: the operator is the product
:math:`T = T_n \\cdots T_1` of per-player updates.

:func:`search` finds the hyperparameters with the smallest spectral radius on a grid (refined around the
best point); :func:`measure_rate` runs the real optimizer on a game and fits the rate from its iterates.

The names of the first version (``linearize``, ``gda``, ``extragradient``, ``optimistic``, ``momentum``,
``complex_momentum``) still work and emit a ``DeprecationWarning``.

Example:
    >>> import torch
    >>> from nestopt.games import dynamics, zoo
    >>> game = zoo.bilinear(dim=1, init=1.0, dtype=torch.float64)
    >>> M = dynamics.jacobian_matrix(game)
    >>> float(dynamics.spectral_radius(dynamics.gda_operator(M, 0.1)))   # sqrt(1 + 0.1^2): diverges
    1.004987562112089
    >>> import cmath
    >>> T = dynamics.complex_momentum_operator(M, 0.55, cmath.rect(0.67, 1.16))   # converges
    >>> bool(dynamics.spectral_radius(T) < 0.95)
    True
"""

from nestopt._deprecation import deprecated_alias
from nestopt.games.dynamics.operators import (
    complex_momentum_operator,
    extragradient_operator,
    gda_operator,
    jacobian_matrix,
    momentum_operator,
    optimistic_operator,
    spectral_radius,
)
from nestopt.games.dynamics.rates import RateMeasurement, RateSearch, fit_rate, measure_rate, search

linearize = deprecated_alias(jacobian_matrix, "dynamics.linearize", "dynamics.jacobian_matrix")
gda = deprecated_alias(gda_operator, "dynamics.gda", "dynamics.gda_operator")
extragradient = deprecated_alias(extragradient_operator, "dynamics.extragradient", "dynamics.extragradient_operator")
optimistic = deprecated_alias(optimistic_operator, "dynamics.optimistic", "dynamics.optimistic_operator")
momentum = deprecated_alias(momentum_operator, "dynamics.momentum", "dynamics.momentum_operator")
complex_momentum = deprecated_alias(
    complex_momentum_operator, "dynamics.complex_momentum", "dynamics.complex_momentum_operator"
)

__all__ = [
    "RateMeasurement",
    "RateSearch",
    "complex_momentum_operator",
    "extragradient_operator",
    "fit_rate",
    "gda_operator",
    "jacobian_matrix",
    "measure_rate",
    "momentum_operator",
    "optimistic_operator",
    "search",
    "spectral_radius",
]
