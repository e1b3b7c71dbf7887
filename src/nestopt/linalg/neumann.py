"""The truncated Neumann series for :math:`A^{-1} b` (Lorraine, Vicol & Duvenaud, 2020)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch

from nestopt import tree
from nestopt._validate import nonnegative, nonnegative_int, positive_int
from nestopt.errors import InvalidArgumentError, SolverDivergedError
from nestopt.linalg.base import LinearOperator, Solution, SolveInfo, Solver, Status, warm_start
from nestopt.linalg.bounds import spectral_bounds

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

    ``alpha="auto"`` sets :math:`\\alpha = 1 / \\bar\\lambda` from an upper estimate :math:`\\bar\\lambda` of the
    largest eigenvalue by ``estimate_steps`` Lanczos steps (:func:`~nestopt.linalg.spectral_bounds`), so that
    no step size needs tuning; :meth:`prepare` fixes it once for a sequence of solves
    (:class:`~nestopt.linalg.Amortized` refreshes it every few solves).

    The residual is exact and cheap: :math:`b - A x_K = p_{K+1}`, one extra product when ``residual=True``.

    With an initial guess, ``solve(op, b, x0)`` applies the series to the residual:
    :math:`x = x_0 + \\alpha \\sum_{j=0}^{K} (I - \\alpha A)^j (b - A x_0)` (one extra product): that is
    ``K + 1`` steps of the Richardson iteration :math:`x \\leftarrow x + \\alpha (b - A x)` continued from
    :math:`x_0`, so ``steps=0`` with a guess is one such step, one product (the update of single-loop bilevel
    methods). A guess whose residual is at rounding level (or below ``tol``) returns at once with 0 iterations;
    one worse than zero is discarded.

    **Singular systems.** For a symmetric positive semi-definite :math:`A` with eigenpairs
    :math:`(\\lambda_i, q_i)` in :math:`[0, 2/\\alpha)`, the series is, in closed form,

    .. math::  x_K = \\sum_{\\lambda_i > 0} \\frac{1 - (1 - \\alpha\\lambda_i)^{K+1}}{\\lambda_i}\\, q_i q_i^\\top b
               \\; + \\; \\alpha (K + 1)\\, P_N b,

    with :math:`P_N` the projector onto the null space. For :math:`b` in the range every partial sum lies in
    the range and the series converges to :math:`A^{+} b`, the minimum-norm solution. For :math:`b` outside
    the range the null-space part grows linearly in ``K`` while no term grows (the terms tend to
    :math:`P_N b`), so no divergence is reported: the status is ``MAX_ITERATIONS`` and the residual stays at
    :math:`\\|P_N b\\| / \\|b\\|`. From ``x0`` the null-space part of ``x0`` is kept: the limit is
    :math:`A^{+} b + \\gamma P_N x_0` (plus the growing :math:`\\alpha (K+1) P_N b`).

    Args:
        steps: the number of operator products ``K >= 0`` (the series has ``K + 1`` terms).
        alpha: the step :math:`\\alpha > 0` (it must be below :math:`2/\\lambda_{\\max}(A)`), or ``"auto"``.
        tol: if given, stop early once :math:`\\|p_j\\|/\\|b\\| \\le` ``tol`` (status ``CONVERGED``).
        residual: compute :math:`\\|p_{K+1}\\|/\\|b\\|` with one extra product.
        on_growth: ``"stop"`` (default) at the first growing term, or ``"continue"`` summing all terms.
        check_every: read the terms' norms on the host every this many terms (and at the last); between
            checks nothing waits for the device. A stop found at a check returns the partial sum of the
            previous check. ``1`` (default): every term is checked before it is added.
        estimate_steps: Lanczos steps (products) of the estimate for ``alpha="auto"``.
        seed: seed of the estimate's starting vector.
        throw: raise instead of warning on divergence.

    Example:
        >>> import torch
        >>> from nestopt import linalg
        >>> op = linalg.LinearOperator(lambda v: {"x": 2.0 * v["x"]}, like={"x": torch.zeros(3)})
        >>> sol = linalg.Neumann(steps=30, alpha=0.4).solve(op, {"x": torch.ones(3)})
        >>> sol.value["x"]
        tensor([0.5000, 0.5000, 0.5000])
        >>> linalg.Neumann(steps=30, alpha="auto").solve(op, {"x": torch.ones(3)}).value["x"]
        tensor([0.5000, 0.5000, 0.5000])
    """

    steps: int = 5
    alpha: float | Literal["auto"] = 0.1
    tol: float | None = None
    residual: bool = False
    on_growth: Literal["stop", "continue"] = "stop"
    check_every: int = 1
    estimate_steps: int = 10
    seed: int = 0
    throw: bool = False

    def __post_init__(self) -> None:
        nonnegative_int("steps", self.steps)
        if self.alpha != "auto":
            nonnegative("alpha", self.alpha, positive=True)
        if self.on_growth not in ("stop", "continue"):
            raise InvalidArgumentError(f"on_growth must be 'stop' or 'continue', got {self.on_growth!r}")
        if self.tol is not None:
            nonnegative("tol", self.tol)
        positive_int("check_every", self.check_every)
        positive_int("estimate_steps", self.estimate_steps)
        nonnegative_int("seed", self.seed)

    # -- the automatic step ----------------------------------------------------------------------------
    @property
    def prepared(self) -> bool:
        return self.alpha != "auto"

    def prepare(self, op: LinearOperator, *, seed: int = 0) -> Neumann:
        """With ``alpha="auto"``: this solver with :math:`\\alpha = 1/\\bar\\lambda` from ``estimate_steps``
        Lanczos products on ``op``; otherwise itself."""
        if self.alpha != "auto":
            return self
        bounds = spectral_bounds(op, self.estimate_steps, seed=seed)
        if not bounds.upper > 0.0:
            raise SolverDivergedError(
                f"Neumann(alpha='auto'): the operator's largest eigenvalue is estimated at {bounds.upper:.3g} <= 0, "
                "so no step size makes the series converge"
            )
        return dataclasses.replace(self, alpha=1.0 / bounds.upper)

    def ready(self, op: LinearOperator) -> Neumann:
        return self.prepare(op, seed=self.seed)

    def prepared_state(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def load_prepared(self, state: dict[str, Any]) -> Neumann:
        if self.alpha != "auto" or "alpha" not in state:
            return self
        return dataclasses.replace(self, alpha=float(state["alpha"]))

    # -- the series ------------------------------------------------------------------------------------
    def _cause(self, quotient: float) -> str:
        alpha = float(self.alpha)
        if quotient < 0.0:
            return f"negative curvature (Rayleigh quotient {quotient:.3g} < 0)"
        if quotient > 2.0 / alpha:
            return f"alpha={alpha!r} too large: curvature {quotient:.3g} exceeds 2/alpha={2 / alpha:.3g}"
        return f"a term grew (Rayleigh quotient {quotient:.3g})"

    def _quotient(self, p: tree.Tree, nxt: tree.Tree, p_norm: torch.Tensor) -> float:
        """The Rayleigh quotient p^T A p / p^T p = (p^T p - p^T nxt) / (alpha p^T p), from nxt = p - alpha A p."""
        return (1.0 - float(tree.dot(p, nxt)) / float(p_norm) ** 2) / float(self.alpha)

    def _solve(self, op: LinearOperator, b: tree.Tree, x0: tree.Tree | None) -> Solution:
        if self.alpha == "auto":
            fixed = self.ready(op)
            sol = fixed._solve(op, b, x0)
            note = f"alpha = {float(fixed.alpha):.3g} from {self.estimate_steps} Lanczos steps"
            sol.info.message = "; ".join(t for t in (note, sol.info.message) if t)
            return sol
        alpha = float(self.alpha)
        b_norm = float(tree.norm(b))
        if b_norm == 0.0:
            return Solution(tree.zeros_like(b), SolveInfo(Status.CONVERGED, 0, 0.0, 0))
        # The series runs on the residual r0 = b - A x0 (r0 = b without a guess). Work vectors are updated in
        # place: the running sum, the current term and its product are the only vectors alive at once.
        start = warm_start(op.matvec, b, x0, b_norm, symmetric=op.symmetric, copy=False)
        r0_norm, initial = start.r_norm, start.initial
        # below this relative size the terms are rounding noise: growth there proves nothing
        noise = 64 * torch.finfo(next(iter(b.values())).dtype).eps
        if start.x is not None and (
            r0_norm <= noise * b_norm or (self.tol is not None and r0_norm <= self.tol * b_norm)
        ):
            info = SolveInfo(Status.CONVERGED, 0, initial, 0, "the initial guess meets the tolerance",
                             warm_start=True, initial_residual=initial)  # fmt: skip
            return Solution(tree.scale(start.x, start.scale), info)
        p = start.r
        acc = p if start.x is not None else tree.clone(p)  # a used guess's residual is fresh: sum into it
        first = next(iter(b.values()))
        device = first.device
        p_norm = torch.tensor(r0_norm, dtype=first.dtype, device=device)
        deferred = self.check_every > 1
        kept = tree.clone(acc) if deferred else None  # the partial sum at the last check
        kept_it = 0
        halted = torch.zeros((), dtype=torch.bool, device=device)  # sticky, for the deferred checks
        done = torch.zeros((), dtype=torch.bool, device=device)
        grew_any = torch.zeros((), dtype=torch.bool, device=device)
        status, message, it = Status.MAX_ITERATIONS, "", 0
        for it in range(1, self.steps + 1):
            check = not deferred or it % self.check_every == 0 or it == self.steps
            nxt = tree.add_(tree.scale_(op.matvec(p), -alpha), p)  # p - alpha A p, in the storage of A p
            nxt_norm = tree.norm(nxt)
            tiny = nxt_norm <= noise * b_norm
            grew = ~(nxt_norm <= p_norm * (1.0 + 1e-6)) & ~done  # also catches NaN
            halt = grew if self.on_growth == "stop" else grew & ~(nxt_norm <= 1e3 * r0_norm)
            if not deferred:
                if bool(tiny):
                    tree.add_(acc, nxt)
                    p, p_norm, status = nxt, nxt_norm, Status.CONVERGED
                    message = "the terms reached rounding level"
                    break
                if bool(grew):
                    quotient = self._quotient(p, nxt, p_norm)
                    if bool(halt):
                        status = Status.NEGATIVE_CURVATURE if quotient < 0.0 else Status.DIVERGED
                        message = (
                            f"series diverged at term {it}: {self._cause(quotient)}; returning the sum of the "
                            f"first {it} terms"
                        )
                        it -= 1
                        break
                    if not message:
                        message = (
                            f"term {it} grew ({self._cause(quotient)}); all {self.steps} terms are summed as asked"
                        )
            else:
                halted |= halt
                grew_any |= grew
                done |= tiny if self.tol is None else tiny | (nxt_norm <= self.tol * b_norm)
                if check and bool(halted):
                    quotient = self._quotient(p, nxt, p_norm)
                    status = Status.NEGATIVE_CURVATURE if quotient < 0.0 else Status.DIVERGED
                    message = (
                        f"series diverged between terms {kept_it + 1} and {it} ({self._cause(quotient)} at term {it}); "
                        f"returning the sum of the first {kept_it + 1} terms"
                    )
                    assert kept is not None
                    acc, it = kept, kept_it
                    break
            p, p_norm = nxt, nxt_norm
            tree.add_(acc, p)
            if not deferred and self.tol is not None and float(p_norm) / b_norm <= self.tol:
                status = Status.CONVERGED
                break
            if deferred and check:
                if bool(done):
                    status, message = Status.CONVERGED, f"converged by term {it}"
                    break
                assert kept is not None
                torch._foreach_copy_(list(kept.values()), [acc[k] for k in kept])
                kept_it = it
        if deferred and not message and bool(grew_any):
            message = f"a term grew before term {it}; all {self.steps} terms are summed as asked"
        x = tree.scale_(acc, alpha)  # scale x0 + alpha * sum, in the storage of the sum
        if start.x is not None:
            tree.add_(x, start.x, start.scale)
        res: float | None = None
        if status is Status.CONVERGED:
            res = float(p_norm) / b_norm  # residual of the sum without the last term: an upper bound one step behind
        if self.residual and not status.failed:
            res = float(tree.norm(tree.axpy(-alpha, op.matvec(p), p))) / b_norm
        message = "; ".join(t for t in (start.message, message) if t)
        return Solution(x, SolveInfo(status, it, res, 0, message, warm_start=start.used, initial_residual=initial))
