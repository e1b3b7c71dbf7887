"""Exact solves by materializing the operator: for small problems and as a reference."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nestopt import tree
from nestopt._validate import nonnegative, positive_int
from nestopt.errors import TooLargeError
from nestopt.linalg.base import (
    LinearOperator,
    Solution,
    SolveInfo,
    Solver,
    Status,
)
from nestopt.tree import Tree

__all__ = ["Exact", "materialize"]


def materialize(op: LinearOperator, *, chunk_size: int = 256) -> torch.Tensor:
    """The dense ``n x n`` matrix of ``op`` (row ``i`` is ``op`` applied to the ``i``-th unit vector).

    Products are batched ``chunk_size`` at a time with the operator's batched product (``vmap``).
    """
    vec, spec = tree.flatten(op.like)
    n = vec.numel()
    eye = torch.eye(n, dtype=vec.dtype, device=vec.device)
    rows = []
    for start in range(0, n, chunk_size):
        block = tree.unflatten(eye[start : start + chunk_size], spec)
        out = op.matmat(block)
        rows.append(torch.cat([out[k].reshape(out[k].shape[0], -1) for k in spec.keys], dim=1))
    # rows hold (A e_i)^T: transpose so that the result is A itself.
    return torch.cat(rows, dim=0).T.contiguous()


@dataclass
class Exact(Solver):
    """Build the matrix with ``n`` batched products and solve directly.

    For a symmetric operator an eigendecomposition gives :math:`x = Q (\\Lambda + \\delta I)^{+} Q^\\top b`,
    and the spectrum tells the status: a negative eigenvalue gives ``NEGATIVE_CURVATURE`` (the answer is
    still the exact solution). A non-symmetric operator is solved by LU.

    **Singular matrices.** Eigenvalues within ``rcond`` times the largest one of zero count as zero, and the
    answer is :math:`x = A^{+} b`, the pseudo-inverse solution: the minimum-norm solution when :math:`b` lies
    in the range of :math:`A`, and otherwise the minimum-norm least-squares solution, whose residual is the
    part of :math:`b` outside the range. The status is ``CONVERGED`` (the solve is exact in that sense), the
    message gives the nullity and the relative size of the part of :math:`b` outside the range, and
    ``info.residual`` is that size. For IFT hypergradients of an overparameterized inner problem this is the
    derivative of the minimum-norm inner solution along the range of the Hessian (see ``docs/warm-or-cold.md``).
    A non-symmetric matrix that LU finds singular is solved by the pseudo-inverse too.

    The computation runs in float64 and the answer is returned in the input's dtype.

    Args:
        max_size: refuse operators with more than this many unknowns (the matrix has ``n**2`` entries).
        damping: :math:`\\delta \\ge 0`, added to the diagonal.
        rcond: eigenvalues (singular values for a non-symmetric matrix) at most ``rcond`` times the largest
            count as zero; ``None``: ``n`` times the machine epsilon of the operator's dtype.

    Example:
        >>> import torch
        >>> from nestopt import linalg
        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> op = linalg.LinearOperator(lambda v: {"x": A @ v["x"]}, like={"x": torch.zeros(2, dtype=A.dtype)})
        >>> linalg.Exact().solve(op, {"x": torch.ones(2, dtype=A.dtype)}).value["x"]
        tensor([0.1818, 0.2727], dtype=torch.float64)

        A singular matrix gives the minimum-norm solution:

        >>> P = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
        >>> sol = linalg.Exact().solve(linalg.LinearOperator.from_matrix(P), {"x": torch.ones(2, dtype=P.dtype)})
        >>> sol.value["x"], sol.info.status.value
        (tensor([0.5000, 0.5000], dtype=torch.float64), 'converged')
    """

    uses_x0 = False

    max_size: int = 4096
    damping: float = 0.0
    rcond: float | None = None
    residual: bool = False
    throw: bool = False

    def __post_init__(self) -> None:
        positive_int("max_size", self.max_size)
        nonnegative("damping", self.damping)
        if self.rcond is not None:
            nonnegative("rcond", self.rcond)

    def _solve(self, op: LinearOperator, b: Tree, x0: Tree | None) -> Solution:
        n = op.numel
        if n > self.max_size:
            gib = n * n * 8 / 2**30
            raise TooLargeError(
                f"Exact materializes the {n} x {n} matrix ({gib:.1f} GiB in float64) but max_size={self.max_size}; "
                f"use linalg.CG(steps=...) (or Neumann/Nystrom), or raise max_size if memory allows"
            )
        a = materialize(op).to(torch.float64)
        vec, spec = tree.flatten(b)
        rhs = vec.to(torch.float64)
        a = a + self.damping * torch.eye(n, dtype=a.dtype, device=a.device)
        rcond = n * torch.finfo(op.dtype).eps if self.rcond is None else self.rcond
        status, message = Status.CONVERGED, ""
        if op.symmetric:
            evals, evecs = torch.linalg.eigh(0.5 * (a + a.T))
            x, zero, message = _pseudo_solve(evecs, evals, evecs, rhs, rcond)
            if bool((evals[~zero] < 0.0).any()):
                status = Status.NEGATIVE_CURVATURE
                negative = f"smallest eigenvalue {float(evals.min()):.3g} < 0: not positive definite"
                message = f"{negative}; {message}" if message else negative
        else:
            x, failed = torch.linalg.solve_ex(a, rhs)
            if int(failed) != 0 or not bool(torch.isfinite(x).all()):  # exactly singular: the pseudo-inverse
                u, sv, vh = torch.linalg.svd(a)
                x, _, message = _pseudo_solve(u, sv, vh.T, rhs, rcond)
        res = float(torch.linalg.vector_norm(a @ x - rhs) / torch.linalg.vector_norm(rhs).clamp_min(1e-300))
        return Solution(tree.unflatten(x.to(vec.dtype), spec), SolveInfo(status, 1, res, 0, message))


def _pseudo_solve(
    left: torch.Tensor, values: torch.Tensor, right: torch.Tensor, rhs: torch.Tensor, rcond: float
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``right diag(values)^+ left^T rhs`` for ``A = left diag(values) right^T``, with values at most ``rcond``
    times the largest in size counted as zero; returns the solution, the zero mask and a message (``""`` when
    nothing was dropped)."""
    zero = values.abs() <= rcond * float(values.abs().max())
    coeffs = left.T @ rhs
    x = right @ torch.where(zero, torch.zeros_like(coeffs), coeffs / torch.where(zero, torch.ones_like(values), values))
    if not bool(zero.any()):
        return x, zero, ""
    outside = float(torch.linalg.vector_norm(coeffs[zero]) / torch.linalg.vector_norm(rhs).clamp_min(1e-300))
    message = (
        f"the matrix is singular (nullity {int(zero.sum())}): x = A^+ b, the minimum-norm solution, or the "
        f"minimum-norm least-squares solution when b leaves the range (the part of b outside it: {outside:.3g})"
    )
    return x, zero, message
