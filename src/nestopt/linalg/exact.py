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

    For a symmetric operator an eigendecomposition gives :math:`x = Q (\\Lambda + \\delta I)^{-1} Q^\\top b`
    and the spectrum tells the status: a non-positive eigenvalue gives ``NEGATIVE_CURVATURE`` (the answer
    is still the exact solution), a singular matrix ``DIVERGED``. A non-symmetric operator is solved by LU.
    The computation runs in float64 and the answer is returned in the input's dtype.

    Args:
        max_size: refuse operators with more than this many unknowns (the matrix has ``n**2`` entries).
        damping: :math:`\\delta \\ge 0`, added to the diagonal.

    Example:
        >>> import torch
        >>> from nestopt import linalg
        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> op = linalg.LinearOperator(lambda v: {"x": A @ v["x"]}, like={"x": torch.zeros(2, dtype=A.dtype)})
        >>> linalg.Exact().solve(op, {"x": torch.ones(2, dtype=A.dtype)}).value["x"]
        tensor([0.1818, 0.2727], dtype=torch.float64)
    """

    uses_x0 = False

    max_size: int = 4096
    damping: float = 0.0
    residual: bool = False
    throw: bool = False

    def __post_init__(self) -> None:
        positive_int("max_size", self.max_size)
        nonnegative("damping", self.damping)

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
        status, message = Status.CONVERGED, ""
        if op.symmetric:
            evals, evecs = torch.linalg.eigh(0.5 * (a + a.T))
            scale = float(evals.abs().max())
            if float(evals.abs().min()) <= 1e-13 * max(scale, 1e-300):
                status = Status.DIVERGED
                message = (
                    f"the matrix is singular (eigenvalues span [{float(evals.min()):.3g}, {float(evals.max()):.3g}])"
                )
                x = evecs @ ((evecs.T @ rhs) / torch.where(evals.abs() > 0, evals, torch.ones_like(evals)))
                x = torch.where(torch.isfinite(x), x, torch.zeros_like(x))
            else:
                x = evecs @ ((evecs.T @ rhs) / evals)
                if float(evals.min()) <= 0.0:
                    status = Status.NEGATIVE_CURVATURE
                    message = f"smallest eigenvalue {float(evals.min()):.3g} <= 0: not positive definite"
        else:
            x = torch.linalg.solve(a, rhs)
        res = float(torch.linalg.vector_norm(a @ x - rhs) / torch.linalg.vector_norm(rhs).clamp_min(1e-300))
        return Solution(tree.unflatten(x.to(vec.dtype), spec), SolveInfo(status, 1, res, 0, message))
