"""Shared pieces of the linear solvers: the status, the solution with its diagnostics, the solver base."""

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import Tensor

from nestopt import tree
from nestopt.errors import InvalidArgumentError, SolverDivergedError, SolverWarning, UnsupportedError
from nestopt.linalg.operator import LinearOperator
from nestopt.tree import Tree

__all__ = ["LinearOperator", "Solution", "SolveInfo", "Solver", "Status"]


class Status(enum.Enum):
    """How a solve ended. ``status.message`` says what it means for the answer."""

    CONVERGED = "converged"
    MAX_ITERATIONS = "max_iterations"
    DIVERGED = "diverged"
    NEGATIVE_CURVATURE = "negative_curvature"
    EXACT = "exact"
    BREAKDOWN = "breakdown"

    @property
    def message(self) -> str:
        return {
            Status.CONVERGED: "the requested tolerance was reached (or the solve is exact)",
            Status.MAX_ITERATIONS: "the fixed iteration budget was spent; accuracy is whatever the residual says",
            Status.DIVERGED: "the iteration diverged; the returned value is the last finite iterate",
            Status.NEGATIVE_CURVATURE: "the operator is not positive definite; the answer may be meaningless",
            Status.EXACT: "no approximation was made: the exact derivative of the computation as posed",
            Status.BREAKDOWN: "the Krylov recurrence broke down (a zero inner product); the value is the last iterate",
        }[self]

    @property
    def failed(self) -> bool:
        return self in (Status.DIVERGED, Status.NEGATIVE_CURVATURE, Status.BREAKDOWN)


@dataclass
class SolveInfo:
    """Diagnostics of a solve.

    Attributes:
        status: how it ended (:class:`Status`).
        iterations: iterations performed.
        residual: relative residual :math:`\\|Ax - b\\| / \\|b\\|`, or ``None`` when it was not computed
            (ask with ``residual=True`` where it costs an extra operator product).
        hvp_calls: operator products (Hessian-vector products) spent, the residual's included.
        message: details, e.g. where negative curvature was found.
        warm_start: whether the solve started from a given initial guess ``x0``.
        initial_residual: :math:`\\|A x_0 - b\\| / \\|b\\|` of that guess (``None`` without one).
    """

    status: Status
    iterations: int
    residual: float | None
    hvp_calls: int
    message: str = ""
    warm_start: bool = False
    initial_residual: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "status": self.status.value,
            "iterations": self.iterations,
            "residual": self.residual,
            "hvp_calls": self.hvp_calls,
            "message": self.message,
            "warm_start": self.warm_start,
            "initial_residual": self.initial_residual,
        }


@dataclass
class Solution:
    """The solution ``value`` (a tree shaped like the right-hand side) and its :class:`SolveInfo`."""

    value: Tree
    info: SolveInfo


class Solver:
    """Base class of the solvers of :math:`A x = b`. Subclasses implement :meth:`_solve`.

    A solver declares what it needs from the operator in :attr:`requires`: ``"any"``, ``"symmetric"``
    (the operator's ``symmetric`` tag) or ``"transpose"`` (products :math:`A^\\top u`). :meth:`solve`
    checks it and raises :class:`~nestopt.errors.UnsupportedError` naming the solvers that do apply.

    Every solver has these settings.

    Attributes:
        residual: compute the relative residual where it costs an extra operator product.
        throw: raise :class:`~nestopt.errors.SolverDivergedError` instead of returning when the solve
            diverges, meets negative curvature or breaks down (otherwise a
            :class:`~nestopt.errors.SolverWarning`).
    """

    requires: ClassVar[Literal["any", "symmetric", "transpose"]] = "any"
    uses_x0: ClassVar[bool] = True
    """Whether the solver starts from ``x0`` (the direct and fixed approximations ignore it)."""
    residual: bool = False
    throw: bool = False

    def solve(self, op: LinearOperator, b: Tree, x0: Tree | None = None) -> Solution:
        """Solve ``op x = b`` and return ``x`` with its diagnostics.

        ``x0`` is an initial guess (a tree like ``b``), e.g. the previous solution of a slowly changing
        system; iterative solvers start from it and report it in ``info.warm_start`` and
        ``info.initial_residual``.
        """
        if not isinstance(op, LinearOperator):
            raise InvalidArgumentError(f"op must be a nestopt.linalg.LinearOperator, got {type(op).__name__}")
        tree.check_like(op.like, b, "operator domain", "b")
        if x0 is not None:
            tree.check_like(op.like, x0, "operator domain", "x0")
        self._check_operator(op)
        calls_before = op.calls
        sol = self._solve(op, b, x0)
        sol.info.hvp_calls = op.calls - calls_before
        sol.info.warm_start = x0 is not None and self.uses_x0
        if sol.info.status.failed:
            text = f"{type(self).__name__}: {sol.info.status.value}: {sol.info.message or sol.info.status.message}"
            if self.throw:
                raise SolverDivergedError(text)
            warnings.warn(text, SolverWarning, stacklevel=3)
        return sol

    __call__ = solve

    def _check_operator(self, op: LinearOperator) -> None:
        name = type(self).__name__
        if self.requires == "symmetric" and not op.symmetric:
            raise UnsupportedError(
                f"{name} needs a symmetric operator, but this one is tagged symmetric=False; for a non-symmetric "
                f"operator use {FOR_NONSYMMETRIC}"
            )
        if self.requires == "transpose" and not op.has_transpose:
            raise UnsupportedError(
                f"{name} needs transpose products A^T u, but this non-symmetric operator has no rmatvec; build it "
                "with rmatvec= or use linalg.GMRES or linalg.BiCGSTAB (they need only A v)"
            )

    def _solve(self, op: LinearOperator, b: Tree, x0: Tree | None) -> Solution:
        raise NotImplementedError

    @staticmethod
    def _relative_residual(op: LinearOperator, x: Tree, b: Tree, b_norm: Tensor) -> float:
        r = tree.sub(op.matvec(x), b)
        return float(tree.norm(r) / b_norm) if float(b_norm) > 0 else float(tree.norm(r))


FOR_NONSYMMETRIC = "linalg.GMRES, linalg.BiCGSTAB, linalg.NormalCG (needs rmatvec) or linalg.Exact"
"""The solvers that apply to a non-symmetric operator, named in error messages."""
