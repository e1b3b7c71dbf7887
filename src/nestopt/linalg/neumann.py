"""The truncated Neumann series for :math:`A^{-1} b` (Lorraine, Vicol & Duvenaud, 2020)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from nestopt import tree
from nestopt._validate import nonnegative, positive_int
from nestopt.errors import InvalidArgumentError
from nestopt.linalg.base import (
    LinearOperator,
    Solution,
    SolveInfo,
    Solver,
    Status,
)

__all__ = ["Neumann"]


@dataclass
class Neumann(Solver):
    """:math:`A^{-1} b \\approx \\alpha \\sum_{j=0}^{K} (I - \\alpha A)^j b`, with ``K = steps`` products.

    The series converges when every eigenvalue of :math:`A` lies in :math:`(0, 2/\\alpha)`. For a symmetric
    :math:`A` the terms :math:`p_j = (I-\\alpha A)^j b` then shrink in norm at every step, so a term that grows
    proves divergence: the solve stops, returns the partial sum before the growing term, and reports whether
    the growth comes from negative curvature (Rayleigh quotient :math:`p^\\top A p / p^\\top p < 0`) or from a
    step ``alpha`` too large for the largest eigenvalue (quotient above :math:`2/\\alpha`).

    With ``on_growth="continue"`` all ``K`` terms are summed whatever happens, as in the paper's fixed-``K``
    approximation for non-convex training losses, whose Hessians often have a few small negative
    eigenvalues: a growing term is then reported in ``info.message`` (status ``MAX_ITERATIONS``, no warning),
    and the solve stops as diverged only if the terms blow up (a term above ``1e3 * |b|``, or not finite).

    The residual is exact and cheap: :math:`b - A x_K = p_{K+1}`, one extra product when ``residual=True``.

    With an initial guess, ``solve(op, b, x0)`` applies the series to the residual:
    :math:`x = x_0 + \\alpha \\sum_{j=0}^{K} (I - \\alpha A)^j (b - A x_0)` (one extra product); a guess whose
    residual is at rounding level (or below ``tol``) returns at once with 0 iterations.

    **Singular systems.** For a symmetric positive semi-definite :math:`A` with eigenpairs
    :math:`(\\lambda_i, q_i)` in :math:`[0, 2/\\alpha)`, the series is, in closed form,

    .. math::  x_K = \\sum_{\\lambda_i > 0} \\frac{1 - (1 - \\alpha\\lambda_i)^{K+1}}{\\lambda_i}\\, q_i q_i^\\top b
               \\; + \\; \\alpha (K + 1)\\, P_N b,

    with :math:`P_N` the projector onto the null space. For :math:`b` in the range every partial sum lies in
    the range and the series converges to :math:`A^{+} b`, the minimum-norm solution. For :math:`b` outside
    the range the null-space part grows linearly in ``K`` while no term grows (the terms tend to
    :math:`P_N b`), so no divergence is reported: the status is ``MAX_ITERATIONS`` and the residual stays at
    :math:`\\|P_N b\\| / \\|b\\|`. From ``x0`` the null-space part of ``x0`` is kept: the limit is
    :math:`A^{+} b + P_N x_0` (plus the growing :math:`\\alpha (K+1) P_N b`).

    Args:
        steps: the number of operator products ``K`` (the series has ``K + 1`` terms).
        alpha: the step :math:`\\alpha > 0`; it must be below :math:`2/\\lambda_{\\max}(A)`.
        tol: if given, stop early once :math:`\\|p_j\\|/\\|b\\| \\le` ``tol`` (status ``CONVERGED``).
        residual: compute :math:`\\|p_{K+1}\\|/\\|b\\|` with one extra product.
        on_growth: ``"stop"`` (default) at the first growing term, or ``"continue"`` summing all terms.
        throw: raise instead of warning on divergence.

    Example:
        >>> import torch
        >>> from nestopt import linalg
        >>> op = linalg.LinearOperator(lambda v: {"x": 2.0 * v["x"]}, like={"x": torch.zeros(3)})
        >>> sol = linalg.Neumann(steps=30, alpha=0.4).solve(op, {"x": torch.ones(3)})
        >>> sol.value["x"]
        tensor([0.5000, 0.5000, 0.5000])
    """

    steps: int = 5
    alpha: float = 0.1
    tol: float | None = None
    residual: bool = False
    on_growth: Literal["stop", "continue"] = "stop"
    throw: bool = False

    def __post_init__(self) -> None:
        positive_int("steps", self.steps)
        nonnegative("alpha", self.alpha, positive=True)
        if self.on_growth not in ("stop", "continue"):
            raise InvalidArgumentError(f"on_growth must be 'stop' or 'continue', got {self.on_growth!r}")
        if self.tol is not None:
            nonnegative("tol", self.tol)

    def _cause(self, quotient: float) -> str:
        if quotient < 0.0:
            return f"negative curvature (Rayleigh quotient {quotient:.3g} < 0)"
        if quotient > 2.0 / self.alpha:
            return f"alpha={self.alpha} too large: curvature {quotient:.3g} exceeds 2/alpha={2 / self.alpha:.3g}"
        return f"a term grew (Rayleigh quotient {quotient:.3g})"

    def _solve(self, op: LinearOperator, b: tree.Tree, x0: tree.Tree | None) -> Solution:
        b_norm = float(tree.norm(b))
        if b_norm == 0.0:
            return Solution(tree.zeros_like(b), SolveInfo(Status.CONVERGED, 0, 0.0, 0))
        # The series runs on the residual r0 = b - A x0 (r0 = b without a guess). Work vectors are updated in
        # place: b, the running sum, the current term and its product are the only vectors alive at once.
        r0 = b if x0 is None else tree.sub(b, op.matvec(x0))
        r0_norm = b_norm if x0 is None else float(tree.norm(r0))
        initial = None if x0 is None else r0_norm / b_norm
        # below this relative size the terms are rounding noise: growth there proves nothing
        noise = 64 * torch.finfo(next(iter(b.values())).dtype).eps
        if x0 is not None and (r0_norm <= noise * b_norm or (self.tol is not None and r0_norm <= self.tol * b_norm)):
            info = SolveInfo(Status.CONVERGED, 0, initial, 0, "the initial guess meets the tolerance",
                             initial_residual=initial)  # fmt: skip
            return Solution(tree.clone(x0), info)
        p, acc = r0, tree.clone(r0)
        p_norm = r0_norm
        status, message, it = Status.MAX_ITERATIONS, "", 0
        for it in range(1, self.steps + 1):
            nxt = tree.add_(tree.scale_(op.matvec(p), -self.alpha), p)  # p - alpha A p, in the storage of A p
            nxt_norm = float(tree.norm(nxt))
            if nxt_norm <= noise * b_norm:
                tree.add_(acc, nxt)
                p, p_norm, status = nxt, nxt_norm, Status.CONVERGED
                message = "the terms reached rounding level"
                break
            grew = not nxt_norm <= p_norm * (1.0 + 1e-6)  # also catches NaN
            blew_up = not nxt_norm <= 1e3 * r0_norm
            # the Rayleigh quotient p^T A p / p^T p = (p^T p - p^T nxt) / (alpha p^T p), only when it is needed
            quotient = (1.0 - float(tree.dot(p, nxt)) / p_norm**2) / self.alpha if grew else 0.0
            if grew and (self.on_growth == "stop" or blew_up):
                status = Status.NEGATIVE_CURVATURE if quotient < 0.0 else Status.DIVERGED
                message = (
                    f"series diverged at term {it}: {self._cause(quotient)}; returning the sum of the first {it} terms"
                )
                it -= 1
                break
            if grew and not message:
                message = f"term {it} grew ({self._cause(quotient)}); all {self.steps} terms are summed as asked"
            p, p_norm = nxt, nxt_norm
            tree.add_(acc, p)
            if self.tol is not None and p_norm / b_norm <= self.tol:
                status = Status.CONVERGED
                break
        x = tree.scale_(acc, self.alpha)
        if x0 is not None:
            tree.add_(x, x0)
        res: float | None = None
        if status is Status.CONVERGED:
            res = p_norm / b_norm  # residual of the sum without the last term: an upper bound one step behind
        if self.residual and not status.failed:
            res = float(tree.norm(tree.axpy(-self.alpha, op.matvec(p), p))) / b_norm
        return Solution(x, SolveInfo(status, it, res, 0, message, initial_residual=initial))
