"""Linear operators on trees, linear solvers and eigensolvers that use only the operator's products.

A :class:`LinearOperator` is given by its products :math:`Av` (and :math:`A^\\top u`) on trees, with the tags
``symmetric`` and ``psd``; Hessians (:meth:`LinearOperator.hessian`) and game Jacobians
(:meth:`nestopt.games.Game.jacobian_operator`) are the two main sources. Every solver is a small
configuration object with ``solve(op, b, x0=None) -> Solution``; the solution carries the answer and its
diagnostics (status, iterations, relative residual, operator products, warm start). Solvers check the tags
they rely on and name the alternatives when an operator lacks them.

=========================  ======================================================  ==================
solver                     method                                                  operator
=========================  ======================================================  ==================
:class:`Exact`             dense matrix by ``n`` batched products, eigh / LU       any
:class:`CG`                conjugate gradient, damping, negative-curvature check   symmetric
:class:`Neumann`           truncated Neumann series, divergence check              any (symmetric: checked)
:class:`Nystrom`           rank-k Nystrom approximation and Woodbury               symmetric
:class:`Amortized`         any solver over a sequence of systems: warm starts,     as the solver
                           estimates (preconditioner, step) kept and refreshed
:class:`Identity`          :math:`\\alpha I`, no products                           any
:class:`GMRES`             restarted GMRES, Givens least squares                   any
:class:`BiCGSTAB`          stabilized bi-conjugate gradient, 2 products / step     any
:class:`NormalCG`          CG on :math:`A^\\top A x = A^\\top b`, 2 products / step    needs ``rmatvec``
=========================  ======================================================  ==================

**Singular systems** (a symmetric positive semi-definite :math:`A`, as the Hessian of an overparameterized
inner problem is; :math:`A^{+}` its pseudo-inverse, :math:`P_N` the projector onto its null space). CG,
Neumann, GMRES and BiCGSTAB started from zero build their answers from :math:`b, Ab, A^2 b, \\dots`, so for
:math:`b` in the range they stay in the range and converge to :math:`A^{+} b`, the minimum-norm solution;
from a warm start ``x0`` (taken as :math:`\\gamma x_0` with its best factor :math:`\\gamma`, or dropped when
:math:`\\gamma \\le 0`) they keep its null-space part, :math:`A^{+} b + \\gamma P_N x_0`, the solution closest
to :math:`\\gamma x_0`. For :math:`b` outside the range there is no solution: :class:`Exact` and :class:`NormalCG`
return the
minimum-norm least-squares solution :math:`A^{+} b`; Neumann adds :math:`\\alpha (K+1) P_N b`, growing with
``K``; CG and BiCGSTAB diverge along the null space; GMRES stops (``BREAKDOWN``) at a least-squares solution
that is not the minimum-norm one; Nystrom returns :math:`(\\tilde A + \\rho I)^{-1} b`, whose null-space part
is :math:`P_N b / \\rho`. Each solver's docstring states its case; ``docs/warm-or-cold.md`` says what it means
for hypergradients.

Eigenpairs: :func:`eigsh` (thick-restart block Lanczos, symmetric), :func:`eigs` (restarted Arnoldi,
complex eigenpairs of general operators), :func:`power_iteration`; each returns an :class:`EigResult`.
:func:`spectral_bounds` estimates the extreme eigenvalues from a few Lanczos steps (for step sizes).
Preconditioners for :class:`CG`: :class:`NystromPreconditioner` (a randomized sketch built from the
operator) and :class:`LowRankPreconditioner` (what it builds).

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

from nestopt.linalg.amortized import Amortized
from nestopt.linalg.base import Solution, SolveInfo, Solver, Status
from nestopt.linalg.bicgstab import BiCGSTAB
from nestopt.linalg.bounds import SpectralBounds, spectral_bounds
from nestopt.linalg.cg import CG
from nestopt.linalg.eigen import EigResult, eigs, eigsh, power_iteration
from nestopt.linalg.exact import Exact, materialize
from nestopt.linalg.gmres import GMRES
from nestopt.linalg.identity import Identity
from nestopt.linalg.neumann import Neumann
from nestopt.linalg.normal_cg import NormalCG
from nestopt.linalg.nystrom import Nystrom
from nestopt.linalg.operator import LinearOperator
from nestopt.linalg.preconditioner import LowRankPreconditioner, NystromPreconditioner

__all__ = [
    "CG",
    "GMRES",
    "Amortized",
    "BiCGSTAB",
    "EigResult",
    "Exact",
    "Identity",
    "LinearOperator",
    "LowRankPreconditioner",
    "Neumann",
    "NormalCG",
    "Nystrom",
    "NystromPreconditioner",
    "Solution",
    "SolveInfo",
    "Solver",
    "SpectralBounds",
    "Status",
    "eigs",
    "eigsh",
    "materialize",
    "power_iteration",
    "spectral_bounds",
]
