"""Shared pieces of the linear solvers: the operator, the status, the solution with its diagnostics."""

from __future__ import annotations

import enum
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from nestopt import tree
from nestopt.autodiff import Linearization
from nestopt.errors import SolverDivergedError, SolverWarning
from nestopt.tree import Tree

__all__ = ["LinearOperator", "Solution", "SolveInfo", "Solver", "Status"]


class Status(enum.Enum):
    """How a solve ended. ``status.message`` says what it means for the answer."""

    CONVERGED = "converged"
    MAX_ITERATIONS = "max_iterations"
    DIVERGED = "diverged"
    NEGATIVE_CURVATURE = "negative_curvature"
    EXACT = "exact"

    @property
    def message(self) -> str:
        return {
            Status.CONVERGED: "the requested tolerance was reached (or the solve is exact)",
            Status.MAX_ITERATIONS: "the fixed iteration budget was spent; accuracy is whatever the residual says",
            Status.DIVERGED: "the iteration diverged; the returned value is the last finite iterate",
            Status.NEGATIVE_CURVATURE: "the operator is not positive definite; the answer may be meaningless",
            Status.EXACT: "no approximation was made: the exact derivative of the computation as posed",
        }[self]

    @property
    def failed(self) -> bool:
        return self in (Status.DIVERGED, Status.NEGATIVE_CURVATURE)


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
    """

    status: Status
    iterations: int
    residual: float | None
    hvp_calls: int
    message: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "status": self.status.value,
            "iterations": self.iterations,
            "residual": self.residual,
            "hvp_calls": self.hvp_calls,
            "message": self.message,
        }


@dataclass
class Solution:
    """The solution ``value`` (a tree shaped like the right-hand side) and its :class:`SolveInfo`."""

    value: Tree
    info: SolveInfo


class LinearOperator:
    """A linear map on trees, given by its product with a vector (and optionally with a batch of them).

    Args:
        matvec: ``v -> A v`` for a tree ``v`` shaped like ``like``.
        like: a tree with the shapes, dtypes and devices of the vectors the operator acts on.
        batched_matvec: ``V -> A V`` where every leaf of ``V`` has a leading batch dimension; when omitted,
            ``torch.func.vmap(matvec)`` is tried, then a loop.
        symmetric: whether ``A`` is symmetric (Hessians are); solvers that need it check this tag.

    Example:
        >>> import torch
        >>> A = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
        >>> op = LinearOperator(lambda v: {"x": A @ v["x"]}, like={"x": torch.zeros(2)})
        >>> op.matvec({"x": torch.ones(2)})["x"]
        tensor([2., 4.])
    """

    def __init__(
        self,
        matvec: Callable[[Tree], Tree],
        like: Tree,
        *,
        batched_matvec: Callable[[Tree], Tree] | None = None,
        symmetric: bool = True,
    ) -> None:
        self._matvec = matvec
        self._batched = batched_matvec
        self.like = tree.detach(like)
        self.symmetric = symmetric
        self.calls = 0

    @classmethod
    def hessian(cls, lin: Linearization) -> LinearOperator:
        """The Hessian :math:`\\nabla^2_{ww} L` of a linearized loss (:func:`nestopt.autodiff.linearize`)."""
        return cls(lin.hvp, lin.grad, batched_matvec=lin.hvp_batched, symmetric=True)

    @property
    def numel(self) -> int:
        return tree.numel(self.like)

    def matvec(self, v: Tree) -> Tree:
        """``A v``. The result never shares memory with ``v`` (solvers update it in place)."""
        self.calls += 1
        out = self._matvec(v)
        return {k: o.clone() if o.data_ptr() == v[k].data_ptr() else o for k, o in out.items()}

    def matmat(self, vs: Tree) -> Tree:
        """Products with a batch of vectors (leading dimension of every leaf)."""
        n = int(next(iter(vs.values())).shape[0])
        self.calls += n
        if self._batched is not None:
            try:
                return self._batched(vs)
            except RuntimeError:  # an op without a batching rule: fall back to a loop
                pass
        cols = [self._matvec({k: v[i] for k, v in vs.items()}) for i in range(n)]
        return {k: torch.stack([c[k] for c in cols]) for k in self.like}


class Solver:
    """Base class of the solvers of :math:`A x = b`. Subclasses implement :meth:`_solve`.

    Args common to every solver:
        residual: compute the relative residual where it costs an extra operator product.
        throw: raise :class:`~nestopt.errors.SolverDivergedError` instead of returning when the solve
            diverges or meets negative curvature (otherwise a :class:`~nestopt.errors.SolverWarning`).
    """

    residual: bool = False
    throw: bool = False

    def solve(self, op: LinearOperator, b: Tree) -> Solution:
        """Solve ``op x = b`` and return ``x`` with its diagnostics."""
        tree.check_like(op.like, b, "operator domain", "b")
        calls_before = op.calls
        sol = self._solve(op, b)
        sol.info.hvp_calls = op.calls - calls_before
        if sol.info.status.failed:
            text = f"{type(self).__name__}: {sol.info.status.value}: {sol.info.message or sol.info.status.message}"
            if self.throw:
                raise SolverDivergedError(text)
            warnings.warn(text, SolverWarning, stacklevel=3)
        return sol

    __call__ = solve

    def _solve(self, op: LinearOperator, b: Tree) -> Solution:
        raise NotImplementedError

    @staticmethod
    def _relative_residual(op: LinearOperator, x: Tree, b: Tree, b_norm: Tensor) -> float:
        r = tree.sub(op.matvec(x), b)
        return float(tree.norm(r) / b_norm) if float(b_norm) > 0 else float(tree.norm(r))
