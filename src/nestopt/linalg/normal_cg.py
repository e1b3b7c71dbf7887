"""Conjugate gradient on the normal equations (CGNR) for general square systems."""

from __future__ import annotations

import math
from dataclasses import dataclass

from nestopt import tree
from nestopt._validate import nonnegative, positive_int
from nestopt.linalg.base import LinearOperator, Solution, SolveInfo, Solver, Status, warm_start
from nestopt.tree import Tree

__all__ = ["NormalCG"]


@dataclass
class NormalCG(Solver):
    """Conjugate gradient on :math:`A^\\top A x = A^\\top b` (CGNR; Hestenes & Stiefel, 1952).

    :math:`A^\\top A` is symmetric positive semi-definite whatever :math:`A` is, so CG applies; each iteration
    costs one product :math:`Av` and one :math:`A^\\top u` (the operator needs ``rmatvec``). The iterates
    minimize :math:`\\|b - Ax\\|` over a growing Krylov space, so the true residual :math:`r = b - Ax` is
    tracked at no extra cost. Convergence follows the squared condition number of :math:`A` (slower than
    :class:`~nestopt.linalg.GMRES` when :math:`A` is ill-conditioned), but it also gives least-squares
    answers: it stops as converged when :math:`\\|A^\\top r\\|` falls below ``tol`` times its initial value.

    **Singular systems.** The iterates are ``x0`` plus vectors in the range of :math:`A^\\top`, so from zero
    NormalCG converges to :math:`A^{+} b`, the minimum-norm least-squares solution, for any :math:`A` and any
    :math:`b`, in the range or not; from ``x0`` to :math:`A^{+} b` plus the part of ``x0`` in the null space
    of :math:`A` (the least-squares solution closest to ``x0``).

    Args:
        steps: iterations at most (two products each).
        tol: stop when :math:`\\|b - Ax\\| / \\|b\\| \\le` ``tol`` (or the normal-equation residual is that small).
        residual: recompute the true relative residual with one extra product at the end.
        throw: raise instead of warning on divergence.

    ``solve(op, b, x0)`` starts from ``x0`` (one extra product); a guess that meets ``tol`` returns at once.

    Example:
        >>> import torch
        >>> from nestopt import linalg
        >>> A = torch.tensor([[2.0, 1.0], [-1.0, 3.0]], dtype=torch.float64)
        >>> op = linalg.LinearOperator.from_matrix(A)
        >>> linalg.NormalCG(steps=10).solve(op, {"x": torch.ones(2, dtype=A.dtype)}).value["x"]
        tensor([0.2857, 0.4286], dtype=torch.float64)
    """

    requires = "transpose"

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
            return Solution(x, SolveInfo(Status.CONVERGED, 0, res, 0, "the initial guess meets the tolerance",
                                         warm_start=start.used, initial_residual=initial))  # fmt: skip
        z = op.rmatvec(r)  # A^T r, the normal-equation residual
        zz = float(tree.dot(z, z))
        z0 = math.sqrt(zz)
        p = tree.clone(z)
        for it in range(1, self.steps + 1):
            if math.sqrt(zz) <= self.tol * z0 or zz == 0.0:
                status = Status.CONVERGED
                message = "least-squares solution: |A^T (b - A x)| fell below tol times its initial value"
                it -= 1
                break
            w = op.matvec(p)
            ww = float(tree.dot(w, w))
            if not math.isfinite(ww):
                status, message = Status.DIVERGED, f"non-finite operator product at iteration {it}"
                break
            alpha = zz / ww
            tree.add_(x, p, alpha)
            tree.add_(r, w, -alpha)
            res = float(tree.norm(r)) / b_norm
            if res <= self.tol:
                status = Status.CONVERGED
                break
            z = op.rmatvec(r)
            zz_new = float(tree.dot(z, z))
            p = tree.axpy(zz_new / zz, p, z)
            zz = zz_new
        if self.residual and status is not Status.DIVERGED:
            res = self._relative_residual(op, x, b, tree.norm(b))
        return Solution(x, SolveInfo(status, it, res, 0, message, warm_start=start.used, initial_residual=initial))
