"""Inverse-Hessian-vector solvers: :math:`x = A^{-1} b` for a linear operator given by its products.

Every solver is a small configuration object with a ``solve(op, b) -> Solution`` method; the solution
carries the answer and its diagnostics (status, iterations, relative residual, operator products).

=========================  ==================================================  =====================
solver                     method                                              products per solve
=========================  ==================================================  =====================
:class:`Exact`             dense matrix by batched products, eigendecomposition  ``n``
:class:`CG`                conjugate gradient, damping, negative-curvature check ``<= steps``
:class:`Neumann`           truncated Neumann series, divergence check           ``steps``
:class:`Nystrom`           rank-k Nystrom approximation and Woodbury            ``rank``
:class:`Identity`          :math:`\\alpha I`                                     0
=========================  ==================================================  =====================

Example:
    >>> import torch
    >>> from nestopt import autodiff, linalg
    >>> loss = lambda p, h, b: ((p["w"] - 1.0) ** 2).sum() + 0.5 * (p["w"] ** 2).sum()
    >>> w = {"w": torch.zeros(3, dtype=torch.float64)}
    >>> lin = autodiff.linearize(loss, w, {}, None)
    >>> sol = linalg.CG(steps=5).solve(linalg.LinearOperator.hessian(lin), {"w": torch.ones_like(w["w"])})
    >>> sol.value["w"], sol.info.hvp_calls
    (tensor([0.3333, 0.3333, 0.3333], dtype=torch.float64), 1)
"""

from nestopt.linalg.base import LinearOperator, Solution, SolveInfo, Solver, Status
from nestopt.linalg.cg import CG
from nestopt.linalg.exact import Exact, materialize
from nestopt.linalg.identity import Identity
from nestopt.linalg.neumann import Neumann
from nestopt.linalg.nystrom import Nystrom

__all__ = [
    "CG",
    "Exact",
    "Identity",
    "LinearOperator",
    "Neumann",
    "Nystrom",
    "Solution",
    "SolveInfo",
    "Solver",
    "Status",
    "materialize",
]
