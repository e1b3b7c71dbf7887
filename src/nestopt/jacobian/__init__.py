"""Networks with structured Jacobians: JacNet (invertible and Lipschitz maps), ICGN, and the ICNN baseline.

* :func:`path_integral` -- Gauss-Legendre integration of a Jacobian field along a segment (vmap over nodes),
  with an error estimate (:func:`path_integral_with_error`, :math:`n` versus :math:`2n` nodes).
* :class:`JacNet` -- a map learned through its Jacobian, with the structure as an argument:
  :class:`Unconstrained`, :class:`Invertible` (then :meth:`JacNet.inverse`) or :class:`Lipschitz`.
* :class:`ICGN` -- input convex gradient networks; the single-layer one is an exact convex gradient, deeper
  ones are checked with :meth:`ICGN.integrability`.
* :class:`ICNN` -- input convex neural networks and their gradient, the baseline that ICGN is compared with.

Example:
    >>> import torch
    >>> from nestopt import jacobian
    >>> net = jacobian.JacNet(1, jacobian.Lipschitz(k=1.0), hidden=(8,), generator=torch.Generator().manual_seed(0))
    >>> x = torch.linspace(-2, 2, 9).unsqueeze(-1)
    >>> bool((net(x) - net(torch.zeros(1, 1))).abs().le(x.abs() + 1e-6).all())
    True
"""

from nestopt.jacobian.adaptive import AdaptiveQuadrature, QuadratureEstimate, QuadratureInfo, path_integral_with_error
from nestopt.jacobian.icgn import ICGN, Integrability
from nestopt.jacobian.icnn import ICNN
from nestopt.jacobian.jacnet import InverseResult, JacNet
from nestopt.jacobian.quadrature import gauss_legendre, path_integral, segment_integral
from nestopt.jacobian.structure import Invertible, Lipschitz, Structure, Unconstrained

__all__ = [
    "ICGN",
    "ICNN",
    "AdaptiveQuadrature",
    "Integrability",
    "InverseResult",
    "Invertible",
    "JacNet",
    "Lipschitz",
    "QuadratureEstimate",
    "QuadratureInfo",
    "Structure",
    "Unconstrained",
    "gauss_legendre",
    "path_integral",
    "path_integral_with_error",
    "segment_integral",
]
