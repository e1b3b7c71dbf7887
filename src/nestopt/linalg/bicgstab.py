"""BiCGSTAB for general (non-symmetric) square systems."""

from __future__ import annotations

import math
from dataclasses import dataclass

from nestopt import tree
from nestopt._validate import nonnegative, positive_int
from nestopt.linalg.base import LinearOperator, Solution, SolveInfo, Solver, Status, warm_start
from nestopt.tree import Tree

__all__ = ["BiCGSTAB"]


@dataclass
class BiCGSTAB(Solver):
    """The stabilized bi-conjugate gradient method on :math:`Ax = b` for any square :math:`A` (van der Vorst, 1992).

    Short recurrences (a fixed handful of vectors, unlike :class:`~nestopt.linalg.GMRES`'s growing basis),
    two products :math:`Av` per iteration and no :math:`A^\\top`. With :math:`\\hat r = r_0`:

    .. math::

        \\rho_i = \\hat r^\\top r_{i-1}, \\quad p_i = r_{i-1} + \\tfrac{\\rho_i \\alpha_{i-1}}{\\rho_{i-1}\\omega_{i-1}}
        (p_{i-1} - \\omega_{i-1} v_{i-1}), \\quad v_i = A p_i, \\quad \\alpha_i = \\rho_i / \\hat r^\\top v_i,

        s = r_{i-1} - \\alpha_i v_i, \\quad t = A s, \\quad \\omega_i = \\tfrac{t^\\top s}{t^\\top t}, \\quad
        x_i = x_{i-1} + \\alpha_i p_i + \\omega_i s, \\quad r_i = s - \\omega_i t.

    The residual is not monotone. A zero :math:`\\rho_i`, :math:`\\hat r^\\top v_i` or :math:`\\omega_i` stops
    the solve with status ``BREAKDOWN`` (restart it from the returned value, or use GMRES).

    **Singular symmetric systems.** From zero the iterates lie in :math:`\\mathrm{span}\\{b, Ab, \\dots\\}`: for
    :math:`b` in the range of :math:`A` they stay in the range and converge to :math:`A^{+} b`, the
    minimum-norm solution (from ``x0``: :math:`A^{+} b + \\gamma P_N x_0`). For :math:`b` outside the range there is
    nothing to converge to: the residual stalls or grows and the iterates can grow without bound (status
    ``MAX_ITERATIONS`` with the large residual reported, or ``BREAKDOWN``); use
    :class:`~nestopt.linalg.NormalCG` for the least-squares solution.

    Args:
        steps: iterations at most (two products each).
        tol: stop when :math:`\\|r\\| / \\|b\\| \\le` ``tol`` (the recurrence's residual).
        residual: recompute the true relative residual with one extra product at the end.
        throw: raise instead of warning on divergence or breakdown.

    ``solve(op, b, x0)`` starts from ``x0`` (one extra product); a guess that meets ``tol`` returns at once.

    Example:
        >>> import torch
        >>> from nestopt import linalg
        >>> A = torch.tensor([[2.0, 1.0], [-1.0, 3.0]], dtype=torch.float64)
        >>> op = linalg.LinearOperator.from_matrix(A)
        >>> linalg.BiCGSTAB(steps=10).solve(op, {"x": torch.ones(2, dtype=A.dtype)}).value["x"]
        tensor([0.2857, 0.4286], dtype=torch.float64)

    References:
        van der Vorst. Bi-CGSTAB: a fast and smoothly converging variant of Bi-CG for the solution of
        nonsymmetric linear systems. SIAM J. Sci. Stat. Comput., 1992.
    """

    steps: int = 100
    tol: float = 1e-10
    residual: bool = False
    throw: bool = False

    def __post_init__(self) -> None:
        positive_int("steps", self.steps)
        nonnegative("tol", self.tol)

    def _solve(self, op: LinearOperator, b: Tree, x0: Tree | None) -> Solution:
        b_norm = float(tree.norm(b))
        if b_norm == 0.0:
            return Solution(tree.zeros_like(b), SolveInfo(Status.CONVERGED, 0, 0.0, 0))
        start = warm_start(op.matvec, b, x0, b_norm)
        x = tree.zeros_like(b) if start.x is None else tree.scale(start.x, start.scale)
        r, initial = start.r, start.initial
        res = start.r_norm / b_norm
        status, message, it = Status.MAX_ITERATIONS, start.message, 0
        if res <= self.tol:
            status, message = Status.CONVERGED, "the initial guess meets the tolerance"
        r_hat = tree.clone(r)
        p, v = tree.zeros_like(b), tree.zeros_like(b)
        rho, alpha, omega = 1.0, 1.0, 1.0
        while status is Status.MAX_ITERATIONS and it < self.steps:
            it += 1
            rho_new = float(tree.dot(r_hat, r))
            if rho_new == 0.0:
                status, message = Status.BREAKDOWN, f"r_hat^T r = 0 at iteration {it}"
                break
            p = tree.axpy((rho_new / rho) * (alpha / omega), tree.axpy(-omega, v, p), r)
            v = op.matvec(p)
            rv = float(tree.dot(r_hat, v))
            if not math.isfinite(rv):
                status, message = Status.DIVERGED, f"non-finite operator product at iteration {it}"
                break
            if rv == 0.0:
                status, message = Status.BREAKDOWN, f"r_hat^T A p = 0 at iteration {it}"
                break
            alpha = rho_new / rv
            s = tree.axpy(-alpha, v, r)
            s_res = float(tree.norm(s)) / b_norm
            if s_res <= self.tol:
                tree.add_(x, p, alpha)
                res, status = s_res, Status.CONVERGED
                break
            t = op.matvec(s)
            tt = float(tree.dot(t, t))
            if not math.isfinite(tt):
                status, message = Status.DIVERGED, f"non-finite operator product at iteration {it}"
                break
            omega = float(tree.dot(t, s)) / tt if tt > 0.0 else 0.0
            tree.add_(tree.add_(x, p, alpha), s, omega)
            r = tree.axpy(-omega, t, s)
            res = float(tree.norm(r)) / b_norm
            if res <= self.tol:
                status = Status.CONVERGED
            elif omega == 0.0:
                status, message = Status.BREAKDOWN, f"omega = t^T s / t^T t = 0 at iteration {it}"
            rho = rho_new
        if self.residual and status is not Status.DIVERGED:
            res = self._relative_residual(op, x, b, tree.norm(b))
        return Solution(x, SolveInfo(status, it, res, 0, message, warm_start=start.used, initial_residual=initial))
