"""Conjugate gradient for symmetric positive-definite systems, with damping."""

from __future__ import annotations

import math
from dataclasses import dataclass

from nestopt import tree
from nestopt._validate import nonnegative, positive_int
from nestopt.linalg.base import (
    LinearOperator,
    Solution,
    SolveInfo,
    Solver,
    Status,
)
from nestopt.tree import Tree

__all__ = ["CG"]


@dataclass
class CG(Solver):
    """Conjugate gradient on :math:`(A + \\delta I) x = b` (Hestenes & Stiefel, 1952).

    Each iteration costs one operator product. The search direction's curvature :math:`p^\\top A p` is
    checked at every step: a non-positive value means :math:`A + \\delta I` is not positive definite,
    and the solve stops with status ``NEGATIVE_CURVATURE`` (raise ``damping`` to regularize). The relative
    residual comes from the recurrence, at no extra cost.

    Args:
        steps: maximum number of iterations.
        tol: stop when :math:`\\|r\\| / \\|b\\| \\le` ``tol``.
        damping: :math:`\\delta \\ge 0`, added to the diagonal.
        residual: recompute the true residual :math:`\\|(A+\\delta I)x-b\\|/\\|b\\|` with one extra product
            (the recurrence's value drifts in low precision).
        throw: raise instead of warning on negative curvature or divergence.

    ``solve(op, b, x0)`` starts from the guess ``x0`` (one extra product for its residual); a guess that
    already meets ``tol`` returns at once with 0 iterations. CG needs a symmetric operator; for a
    non-symmetric one use :class:`~nestopt.linalg.GMRES`, :class:`~nestopt.linalg.BiCGSTAB` or
    :class:`~nestopt.linalg.NormalCG`.

    **Singular systems** (a symmetric positive semi-definite :math:`A`, range :math:`R`, null space
    :math:`N`, :math:`P_N` the projector onto :math:`N`). From zero the iterates lie in the Krylov space
    :math:`\\mathrm{span}\\{b, Ab, A^2 b, \\dots\\}`. For :math:`b \\in R` that space lies in :math:`R`, so
    every iterate does, and CG converges to the only solution in :math:`R`: :math:`x = A^{+} b`, the
    minimum-norm solution. From ``x0`` the iterates are ``x0`` plus such a space of :math:`b - A x_0 \\in R`,
    so the null-space part of ``x0`` is kept: the limit is :math:`A^{+} b + P_N x_0`, the solution closest
    to ``x0``. A :math:`b` with a part outside :math:`R` has no solution: the residual never falls below
    :math:`\\|P_N b\\| / \\|b\\|`, the iterates grow along the null space, and the solve ends with status
    ``NEGATIVE_CURVATURE`` (a direction of zero curvature) or ``MAX_ITERATIONS``. Use ``damping`` for
    :math:`(A + \\delta I)^{-1} b`, or :class:`~nestopt.linalg.Exact` / :class:`~nestopt.linalg.NormalCG` for
    the least-squares solution :math:`A^{+} b`.

    Example:
        >>> import torch
        >>> from nestopt import linalg
        >>> A = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
        >>> op = linalg.LinearOperator(lambda v: {"x": A @ v["x"]}, like={"x": torch.zeros(2, dtype=A.dtype)})
        >>> sol = linalg.CG(steps=10).solve(op, {"x": torch.ones(2, dtype=A.dtype)})
        >>> sol.value["x"], sol.info.status.value
        (tensor([0.2000, 0.4000], dtype=torch.float64), 'converged')
    """

    requires = "symmetric"

    steps: int = 20
    tol: float = 1e-10
    damping: float = 0.0
    residual: bool = False
    throw: bool = False

    def __post_init__(self) -> None:
        positive_int("steps", self.steps)
        nonnegative("tol", self.tol)
        nonnegative("damping", self.damping)

    def _apply(self, op: LinearOperator, v: Tree) -> Tree:
        av = op.matvec(v)
        return tree.add_(av, v, self.damping) if self.damping else av

    def _solve(self, op: LinearOperator, b: Tree, x0: Tree | None) -> Solution:
        b_norm = float(tree.norm(b))
        if b_norm == 0.0:
            return Solution(tree.zeros_like(b), SolveInfo(Status.CONVERGED, 0, 0.0, 0))
        # x, r and p are updated in place (p starts as a copy of r): with b and A p, five vectors in all.
        if x0 is None:
            x, r = tree.zeros_like(b), tree.clone(b)
        else:
            x = tree.clone(x0)
            r = tree.sub(b, self._apply(op, x))
        rr = float(tree.dot(r, r))
        start = math.sqrt(rr) / b_norm
        if x0 is not None and start <= self.tol:
            return Solution(x, SolveInfo(Status.CONVERGED, 0, start, 0, "the initial guess meets the tolerance",
                                         initial_residual=start))  # fmt: skip
        p = tree.clone(r)
        status, message, it = Status.MAX_ITERATIONS, "", 0
        for it in range(1, self.steps + 1):
            ap = self._apply(op, p)
            curvature = float(tree.dot(p, ap))
            if not math.isfinite(curvature):
                status, message = Status.DIVERGED, f"non-finite operator product at iteration {it}"
                break
            if curvature <= 0.0:
                status = Status.NEGATIVE_CURVATURE
                message = (
                    f"direction with curvature p^T A p / |p|^2 = {curvature / float(tree.dot(p, p)):.3g} <= 0 at "
                    f"iteration {it}: the matrix (damping {self.damping}) is not positive definite"
                )
                break
            alpha = rr / curvature
            tree.add_(x, p, alpha)
            tree.add_(r, ap, -alpha)
            rr_new = float(tree.dot(r, r))
            if math.sqrt(rr_new) / b_norm <= self.tol:
                rr = rr_new
                status = Status.CONVERGED
                break
            tree.add_(tree.scale_(p, rr_new / rr), r)
            rr = rr_new
        res = math.sqrt(rr) / b_norm
        if self.residual and status is not Status.DIVERGED:
            res = tree.norm(tree.sub(self._apply(op, x), b)).item() / b_norm
        initial = start if x0 is not None else None
        return Solution(x, SolveInfo(status, it, res, 0, message, initial_residual=initial))
