"""Conjugate gradient for symmetric positive-definite systems, with damping and a preconditioner."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from nestopt import tree
from nestopt._validate import nonnegative, positive_int
from nestopt.errors import InvalidArgumentError
from nestopt.linalg.base import LinearOperator, Solution, SolveInfo, Solver, Status, warm_start
from nestopt.linalg.preconditioner import LowRankPreconditioner, NystromPreconditioner
from nestopt.tree import Tree

__all__ = ["CG"]

Preconditioner = LinearOperator | NystromPreconditioner


@dataclass
class CG(Solver):
    """Conjugate gradient on :math:`(A + \\delta I) x = b` (Hestenes & Stiefel, 1952), optionally preconditioned.

    Each iteration costs one operator product. The search direction's curvature :math:`p^\\top A p` is
    checked: a non-positive value means :math:`A + \\delta I` is not positive definite, and the solve stops with
    status ``NEGATIVE_CURVATURE`` (raise ``damping`` to regularize). The relative residual comes from the
    recurrence, at no extra cost.

    With a preconditioner :math:`M \\approx (A + \\delta I)^{-1}` (symmetric positive definite) the iteration is
    preconditioned CG: the same products, one application of :math:`M` per iteration, and convergence governed
    by the spectrum of :math:`M (A + \\delta I)` instead. ``preconditioner`` is either a fixed
    :class:`~nestopt.linalg.LinearOperator` applying :math:`M`, or a
    :class:`~nestopt.linalg.NystromPreconditioner`, a recipe built from the operator (``rank`` products) by
    :meth:`prepare`, at every solve unless the solver is prepared once and reused
    (:class:`~nestopt.linalg.Amortized` keeps it across a sequence of solves and refreshes it).

    Args:
        steps: maximum number of iterations.
        tol: stop when :math:`\\|r\\| / \\|b\\| \\le` ``tol``.
        damping: :math:`\\delta \\ge 0`, added to the diagonal.
        preconditioner: ``None``, a :class:`~nestopt.linalg.LinearOperator` (:math:`M`), or a
            :class:`~nestopt.linalg.NystromPreconditioner`.
        check_every: read the curvature and the residual on the host every this many iterations (and at the
            last). Between checks nothing waits for the device: on a GPU the loop runs without synchronizing.
            A failure found at a check returns the iterate of the previous check (kept as one extra vector);
            a convergence found there returns the converged iterate (later iterations do not move it). With
            ``1`` (default) every iteration is checked before its update, as in the textbook algorithm.
        residual: recompute the true residual :math:`\\|(A+\\delta I)x-b\\|/\\|b\\|` with one extra product
            (the recurrence's value drifts in low precision).
        throw: raise instead of warning on negative curvature or divergence.

    ``solve(op, b, x0)`` starts from the guess ``x0`` (one extra product for its residual); a guess that
    already meets ``tol`` returns at once with 0 iterations, and one worse than zero is discarded. CG needs a
    symmetric operator; for a non-symmetric one use :class:`~nestopt.linalg.GMRES`,
    :class:`~nestopt.linalg.BiCGSTAB` or :class:`~nestopt.linalg.NormalCG`.

    **Singular systems** (a symmetric positive semi-definite :math:`A`, range :math:`R`, null space
    :math:`N`, :math:`P_N` the projector onto :math:`N`). From zero the iterates lie in the Krylov space
    :math:`\\mathrm{span}\\{b, Ab, A^2 b, \\dots\\}`. For :math:`b \\in R` that space lies in :math:`R`, so
    every iterate does, and CG converges to the only solution in :math:`R`: :math:`x = A^{+} b`, the
    minimum-norm solution. From ``x0`` (scaled by its best factor :math:`\\gamma`) the iterates are
    :math:`\\gamma x_0` plus such a space of :math:`b - \\gamma A x_0 \\in R`, so the null-space part of ``x0``
    is kept: the limit is :math:`A^{+} b + \\gamma P_N x_0`, the solution closest to :math:`\\gamma x_0`. A
    :math:`b` with a part outside :math:`R` has no solution: the residual never falls below
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

    References:
        Hestenes & Stiefel. Methods of conjugate gradients for solving linear systems. J. Res. NBS, 1952.
    """

    requires = "symmetric"

    steps: int = 20
    tol: float = 1e-10
    damping: float = 0.0
    preconditioner: Preconditioner | None = None
    check_every: int = 1
    residual: bool = False
    throw: bool = False

    def __post_init__(self) -> None:
        positive_int("steps", self.steps)
        nonnegative("tol", self.tol)
        nonnegative("damping", self.damping)
        positive_int("check_every", self.check_every)
        if self.preconditioner is not None and not isinstance(self.preconditioner, Preconditioner):
            raise InvalidArgumentError(
                "preconditioner must be a linalg.LinearOperator applying M ~ A^{-1} or a linalg.NystromPreconditioner, "
                f"got {self.preconditioner!r}"
            )
        if isinstance(self.preconditioner, LinearOperator) and not self.preconditioner.symmetric:
            raise InvalidArgumentError("preconditioner must be a symmetric (positive-definite) operator")

    # -- the preconditioner, built from the operator when it is a recipe -------------------------------
    @property
    def prepared(self) -> bool:
        return not isinstance(self.preconditioner, NystromPreconditioner)

    def prepare(self, op: LinearOperator, *, seed: int = 0) -> CG:
        """This solver with its Nystrom preconditioner built from ``op`` (``rank`` products); else itself."""
        if not isinstance(self.preconditioner, NystromPreconditioner):
            return self
        return dataclasses.replace(self, preconditioner=self.preconditioner.build(op, damping=self.damping, seed=seed))

    def ready(self, op: LinearOperator) -> CG:
        if isinstance(self.preconditioner, NystromPreconditioner):  # a recipe: build it for this operator
            return self.prepare(op, seed=self.preconditioner.seed)
        return self

    def prepared_state(self) -> dict[str, Any]:
        if isinstance(self.preconditioner, LowRankPreconditioner):
            return self.preconditioner.state_dict()
        return {}

    def load_prepared(self, state: dict[str, Any]) -> CG:
        if not state or not isinstance(self.preconditioner, NystromPreconditioner):
            return self
        return dataclasses.replace(self, preconditioner=LowRankPreconditioner.from_state(state))

    # -- the iteration ---------------------------------------------------------------------------------
    def _apply(self, op: LinearOperator, v: Tree) -> Tree:
        av = op.matvec(v)
        return tree.add_(av, v, self.damping) if self.damping else av

    def _solve(self, op: LinearOperator, b: Tree, x0: Tree | None) -> Solution:
        if isinstance(self.preconditioner, NystromPreconditioner):
            return self.ready(op)._solve(op, b, x0)
        b_norm = float(tree.norm(b))
        if b_norm == 0.0:
            return Solution(tree.zeros_like(b), SolveInfo(Status.CONVERGED, 0, 0.0, 0))
        start = warm_start(lambda v: self._apply(op, v), b, x0, b_norm, symmetric=True)
        x = tree.zeros_like(b) if start.x is None else tree.scale(start.x, start.scale)
        r, initial = start.r, start.initial
        if start.used and start.r_norm <= self.tol * b_norm:
            info = SolveInfo(Status.CONVERGED, 0, start.r_norm / b_norm, 0, "the initial guess meets the tolerance",
                             warm_start=True, initial_residual=initial)  # fmt: skip
            return Solution(x, info)
        m = self.preconditioner
        # x, r and p are updated in place (p starts as a copy of z = M r); with b, A p (and z): five (six) vectors
        z = r if m is None else m.matvec(r)
        rz = tree.dot(r, z)
        rr = rz if m is None else tree.dot(r, r)
        p = tree.clone(z)
        tol2 = (self.tol * b_norm) ** 2
        deferred = self.check_every > 1
        kept = tree.clone(x) if deferred else None  # the iterate at the last check, for a failure found later
        kept_it, kept_rr = 0, rr
        failed = torch.zeros((), dtype=torch.bool, device=rz.device)  # sticky: non-positive or non-finite p^T A p
        done = torch.zeros((), dtype=torch.bool, device=rz.device)  # sticky: the tolerance was met
        status, message, it = Status.MAX_ITERATIONS, "", 0
        for it in range(1, self.steps + 1):
            check = not deferred or it % self.check_every == 0 or it == self.steps
            ap = self._apply(op, p)
            curvature = tree.dot(p, ap)
            failed |= ~(curvature > 0.0) & ~done  # catches NaN
            if check and bool(failed):
                status, message = self._failure(curvature, p, it, kept_it, deferred)
                if kept is not None:
                    x, rr, it = kept, kept_rr, kept_it
                break
            alpha = torch.where(done, 0.0, rz / curvature)
            tree.add_(x, p, alpha)
            tree.add_(r, ap, -alpha)
            del ap
            if m is not None:
                z = m.matvec(r)
            rz_new = tree.dot(r, z)
            rr_new = rz_new if m is None else tree.dot(r, r)
            now = (rr_new <= tol2) & ~done
            done |= now
            rr = torch.where(done & ~now, rr, rr_new)
            if check and bool(done):
                status = Status.CONVERGED
                break
            if kept is not None and check:
                torch._foreach_copy_(list(kept.values()), [x[k] for k in kept])
                kept_it, kept_rr = it, rr
            beta = torch.where(done | (rz == 0.0), 0.0, rz_new / rz)
            tree.add_(tree.scale_(p, beta), z)
            rz = rz_new
        res = math.sqrt(float(rr)) / b_norm
        if self.residual and status is not Status.DIVERGED:
            res = tree.norm(tree.sub(self._apply(op, x), b)).item() / b_norm
        message = "; ".join(t for t in (start.message, message) if t)
        return Solution(x, SolveInfo(status, it, res, 0, message, warm_start=start.used, initial_residual=initial))

    def _failure(self, curvature: torch.Tensor, p: Tree, it: int, kept_it: int, deferred: bool) -> tuple[Status, str]:
        value = float(curvature)
        if deferred:
            where = f"between iterations {kept_it + 1} and {it} (returning the iterate of iteration {kept_it})"
            if not math.isfinite(value):
                return Status.DIVERGED, f"non-finite operator product {where}"
            return Status.NEGATIVE_CURVATURE, (
                f"a direction of non-positive curvature p^T A p <= 0 {where}: the matrix (damping {self.damping}) "
                "is not positive definite"
            )
        if not math.isfinite(value):
            return Status.DIVERGED, f"non-finite operator product at iteration {it}"
        return Status.NEGATIVE_CURVATURE, (
            f"direction with curvature p^T A p / |p|^2 = {value / float(tree.dot(p, p)):.3g} <= 0 at iteration {it}: "
            f"the matrix (damping {self.damping}) is not positive definite"
        )
