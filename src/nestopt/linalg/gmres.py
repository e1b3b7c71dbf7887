"""Restarted GMRES for general (non-symmetric) square systems."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nestopt import tree
from nestopt._validate import nonnegative, positive_int
from nestopt.linalg._krylov import FlatOperator, orthogonalize
from nestopt.linalg.base import LinearOperator, Solution, SolveInfo, Solver, Status, warm_start
from nestopt.tree import Tree

__all__ = ["GMRES"]


@dataclass
class GMRES(Solver):
    """Restarted GMRES(``restart``) on :math:`Ax = b` for any square :math:`A` (Saad & Schultz, 1986).

    Each cycle builds an orthonormal basis :math:`V` of the Krylov space
    :math:`\\{r_0, A r_0, \\dots, A^{m-1} r_0\\}` (Arnoldi, orthogonalized twice against the whole basis)
    and picks :math:`x = x_0 + V y` minimizing :math:`\\|b - A x\\|`, a small least-squares problem kept in
    triangular form by Givens rotations; so the residual is known at every iteration without extra products.
    After ``restart`` iterations the cycle restarts from the current ``x`` (one product for its residual).
    Only products :math:`Av` are needed.

    The residual never grows. An invariant Krylov space with the residual still above ``tol`` means that
    :math:`A` is singular on it: the solve stops with status ``BREAKDOWN`` at the least-squares answer.

    **Singular symmetric systems.** From zero the iterates lie in :math:`\\mathrm{span}\\{b, Ab, \\dots\\}`: for
    :math:`b` in the range of :math:`A` that is inside the range, and GMRES converges to :math:`A^{+} b`, the
    minimum-norm solution (from ``x0``: :math:`A^{+} b + \\gamma P_N x_0`, the solution closest to
    :math:`\\gamma x_0`). For :math:`b` outside the range it stops with ``BREAKDOWN`` at a least-squares
    solution whose null-space part is a multiple of :math:`P_N b`: not the minimum-norm one, which
    :class:`~nestopt.linalg.NormalCG` gives.

    Args:
        steps: Arnoldi iterations (operator products) at most, over all cycles.
        restart: iterations per cycle (memory: ``restart + 1`` vectors).
        tol: stop when :math:`\\|b - Ax\\| / \\|b\\| \\le` ``tol``.
        residual: recompute the true relative residual with one extra product at the end.
        throw: raise instead of warning on divergence or breakdown.

    ``solve(op, b, x0)`` starts from ``x0`` (one extra product); a guess that meets ``tol`` returns at once.

    Example:
        >>> import torch
        >>> from nestopt import linalg
        >>> A = torch.tensor([[2.0, 1.0], [-1.0, 3.0]], dtype=torch.float64)
        >>> sol = linalg.GMRES(steps=10).solve(linalg.LinearOperator.from_matrix(A), {"x": torch.ones(2, dtype=A.dtype)})
        >>> sol.value["x"], sol.info.iterations
        (tensor([0.2857, 0.4286], dtype=torch.float64), 2)

    References:
        Saad & Schultz. GMRES: a generalized minimal residual algorithm for solving nonsymmetric linear
        systems. SIAM J. Sci. Stat. Comput., 1986.
    """

    steps: int = 200
    restart: int = 30
    tol: float = 1e-10
    residual: bool = False
    throw: bool = False

    def __post_init__(self) -> None:
        positive_int("steps", self.steps)
        positive_int("restart", self.restart)
        nonnegative("tol", self.tol)

    def _solve(self, op: LinearOperator, b: Tree, x0: Tree | None) -> Solution:
        fop = FlatOperator(op)
        rhs = fop.to_flat(b)
        b_norm = float(torch.linalg.vector_norm(rhs))
        if b_norm == 0.0:
            return Solution(tree.zeros_like(b), SolveInfo(Status.CONVERGED, 0, 0.0, 0))
        start = warm_start(op.matvec, b, x0, b_norm, copy=False)
        x = torch.zeros_like(rhs) if start.x is None else start.scale * fop.to_flat(start.x)
        r, initial, beta = fop.to_flat(start.r), start.initial, start.r_norm
        res = beta / b_norm
        status, message, it = Status.MAX_ITERATIONS, start.message, 0
        if res <= self.tol:
            status, message = Status.CONVERGED, "the initial guess meets the tolerance"
        eps = torch.finfo(rhs.dtype).eps
        while status is Status.MAX_ITERATIONS and it < self.steps:
            m = min(self.restart, self.steps - it)
            basis = torch.zeros(m + 1, fop.n, dtype=rhs.dtype, device=rhs.device)
            basis[0] = r / beta
            hess = torch.zeros(m + 1, m, dtype=torch.float64)
            cs, sn = [0.0] * m, [0.0] * m
            g = [beta] + [0.0] * m
            used = 0
            for j in range(m):
                w = fop.matvec(basis[j])
                it += 1
                if not bool(torch.isfinite(w).all()):
                    status, message = Status.DIVERGED, f"non-finite operator product at iteration {it}"
                    break
                ref = float(torch.linalg.vector_norm(w))
                w, h = orthogonalize(basis[: j + 1], w[None])
                h_next = float(torch.linalg.vector_norm(w))
                col = [*h[:, 0].cpu().tolist(), h_next]
                for i in range(j):  # the rotations so far
                    col[i], col[i + 1] = cs[i] * col[i] + sn[i] * col[i + 1], -sn[i] * col[i] + cs[i] * col[i + 1]
                d = math.hypot(col[j], col[j + 1])
                if d <= 1e3 * eps * max(ref, 1e-300):  # A v_j adds nothing new: singular on this Krylov space
                    status = Status.BREAKDOWN
                    message = (
                        f"the Krylov space became invariant at iteration {it} with relative residual {res:.3g}: "
                        "the matrix is singular on it; the value minimizes the residual there"
                    )
                    break
                cs[j], sn[j] = col[j] / d, col[j + 1] / d
                col[j], col[j + 1] = d, 0.0
                g[j], g[j + 1] = cs[j] * g[j], -sn[j] * g[j]
                hess[: j + 2, j] = torch.tensor(col, dtype=torch.float64)
                used = j + 1
                res = abs(g[j + 1]) / b_norm
                if res <= self.tol:
                    status = Status.CONVERGED
                    break
                if h_next <= 1e3 * eps * max(ref, 1e-300):  # invariant space: the solution there is exact
                    status, message = Status.CONVERGED, f"invariant Krylov space at iteration {it}"
                    break
                basis[j + 1] = w[0] / h_next
            if used:
                y = torch.linalg.solve_triangular(
                    hess[:used, :used], torch.tensor(g[:used], dtype=torch.float64)[:, None], upper=True
                )[:, 0]
                x = x + y.to(device=x.device, dtype=x.dtype) @ basis[:used]
            if status is not Status.MAX_ITERATIONS or it >= self.steps:
                break
            r = rhs - fop.matvec(x)  # restart from the true residual
            beta = float(torch.linalg.vector_norm(r))
            res = beta / b_norm
            if res <= self.tol:
                status = Status.CONVERGED
        if self.residual and status is not Status.DIVERGED:
            res = float(torch.linalg.vector_norm(rhs - fop.matvec(x))) / b_norm
        info = SolveInfo(status, it, res, 0, message, warm_start=start.used, initial_residual=initial)
        return Solution(fop.to_tree(x), info)
