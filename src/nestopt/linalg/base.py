"""Shared pieces of the linear solvers: the status, the solution with its diagnostics, the solver base."""

from __future__ import annotations

import enum
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from torch import Tensor

from nestopt import tree
from nestopt.errors import InvalidArgumentError, SolverDivergedError, SolverWarning, UnsupportedError
from nestopt.linalg.operator import LinearOperator
from nestopt.tree import Tree

__all__ = ["LinearOperator", "Solution", "SolveInfo", "Solver", "Start", "Status", "warm_start"]


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
        warm_start: whether the solve started from a given initial guess ``x0`` (``False`` when the guess was
            discarded, see :func:`warm_start`).
        initial_residual: the relative residual of the start made from that guess (``None`` without one).
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
        ``info.initial_residual``. The guess is taken with the factor that is best along it (:func:`warm_start`),
        so that a warm start is never worse than zero; a guess pointing away from the solution is discarded and
        the solve starts from zero (``info.warm_start`` is then ``False``).
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
        if x0 is None or not self.uses_x0:
            sol.info.warm_start = False
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

    # -- amortization: what a solver estimates from the operator, kept across solves -------------------
    def prepare(self, op: LinearOperator, *, seed: int = 0) -> Solver:
        """This solver with whatever it estimates from the operator fixed (a step size, a preconditioner).

        A solver that estimates nothing returns itself. A prepared solver applied to the operators of a slowly
        changing sequence skips the estimate; :class:`~nestopt.linalg.Amortized` refreshes it every few
        solves. ``seed`` seeds the estimate's randomness.
        """
        return self

    def ready(self, op: LinearOperator) -> Solver:
        """The solver to apply to ``op``, with whatever it estimates from ``op`` estimated now.

        :meth:`solve` makes its estimates itself when it needs them (a Lanczos step size, a Nystrom sketch);
        calling this first lets a caller make them before it allocates the right-hand side, so that the
        estimate's vectors and ``b`` are never alive together (one parameter-sized vector less at the peak of
        an implicit hypergradient). A solver with nothing to estimate returns itself.
        """
        return self

    @property
    def prepared(self) -> bool:
        """Whether :meth:`solve` uses the solver as it is (nothing left to estimate from the operator)."""
        return True

    def prepared_state(self) -> dict[str, Any]:
        """What :meth:`prepare` fixed, as tensors and plain values (for checkpoints); ``{}`` if nothing."""
        return {}

    def load_prepared(self, state: dict[str, Any]) -> Solver:
        """The prepared solver that :meth:`prepared_state` describes (``self`` for an empty state)."""
        return self

    @staticmethod
    def _relative_residual(op: LinearOperator, x: Tree, b: Tree, b_norm: Tensor) -> float:
        r = tree.sub(op.matvec(x), b)
        return float(tree.norm(r) / b_norm) if float(b_norm) > 0 else float(tree.norm(r))


FOR_NONSYMMETRIC = "linalg.GMRES, linalg.BiCGSTAB, linalg.NormalCG (needs rmatvec) or linalg.Exact"
"""The solvers that apply to a non-symmetric operator, named in error messages."""


@dataclass
class Start:
    """Where an iterative solve starts (:func:`warm_start`): from ``scale * x`` with residual ``r``.

    Attributes:
        x: the guess itself (not a copy: a solver that updates its iterate in place copies it), or ``None`` to
            start from zero.
        scale: the factor the guess is taken with (1 for an exact guess; see :func:`warm_start`).
        r: the start's residual :math:`b - A\\, \\text{scale}\\, x`: a fresh tree the solver may update in place
            (with ``copy=False`` and no guess used, ``b`` itself).
        r_norm: :math:`\\|r\\|`.
        initial: the start's relative residual :math:`\\|r\\| / \\|b\\|` (``None`` without a guess).
        used: whether the guess was used (one pointing away from the solution is discarded).
        message: why a guess was discarded.
    """

    x: Tree | None
    scale: float
    r: Tree
    r_norm: float
    initial: float | None
    used: bool
    message: str = ""


def warm_start(
    apply: Callable[[Tree], Tree], b: Tree, x0: Tree | None, b_norm: float, *, symmetric: bool = False,
    copy: bool = True,
) -> Start:  # fmt: skip
    """The start of an iterative solve of :math:`A x = b` from the guess ``x0`` (or from zero).

    The guess is taken with the factor :math:`\\gamma` that is best along it, so that the start is never worse
    than zero: for a symmetric operator with :math:`x_0^\\top A x_0 > 0`, the minimizer of the energy
    :math:`\\tfrac12 x^\\top A x - b^\\top x` (the error in the :math:`A`-norm, which conjugate gradient reduces),
    :math:`\\gamma = b^\\top x_0 / x_0^\\top A x_0`; otherwise the minimizer of the residual,
    :math:`\\gamma = b^\\top A x_0 / \\|A x_0\\|^2`. An exact guess has :math:`\\gamma = 1`; the previous solution of
    a slowly changing system is shrunk or stretched to fit the new one (with the raw guess, a solution that fits
    the previous system well can start the next solve worse than zero). A guess with :math:`\\gamma \\le 0` points
    away from the solution and is discarded. The cost is two or three dot products: the product :math:`A x_0` is
    needed by the warm start anyway. ``copy=False`` is for solvers that never update the residual in place:
    from zero it is then ``b`` itself.

    Example:
        >>> import torch
        >>> b = {"x": torch.ones(2)}
        >>> start = warm_start(lambda v: {"x": 2.0 * v["x"]}, b, {"x": torch.full((2,), 5.0)}, 2.0**0.5, symmetric=True)
        >>> start.used, start.scale, start.r["x"]   # 5 is ten times too large: scaled by 0.1, the start is exact
        (True, 0.1, tensor([0., 0.]))
    """
    fresh = (lambda: tree.clone(b)) if copy else (lambda: b)
    if x0 is None:
        return Start(None, 1.0, fresh(), b_norm, None, False)
    ax = apply(x0)
    curvature = float(tree.dot(x0, ax)) if symmetric else 0.0
    if curvature > 0.0:
        gamma = float(tree.dot(b, x0)) / curvature
    else:
        ax_norm2 = float(tree.dot(ax, ax))
        gamma = float(tree.dot(b, ax)) / ax_norm2 if ax_norm2 > 0.0 else 0.0
    if not gamma > 0.0 or not math.isfinite(gamma):
        message = f"the initial guess was discarded: it points away from the solution (best factor {gamma:.3g} <= 0)"
        return Start(None, 1.0, fresh(), b_norm, None, False, message)
    r = tree.add_(tree.scale_(ax, -gamma), b)  # b - gamma A x0, in the storage of the product
    r_norm = float(tree.norm(r))
    return Start(x0, gamma, r, r_norm, r_norm / b_norm, True)
