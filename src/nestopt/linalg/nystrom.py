"""Nystrom low-rank inverse-Hessian approximation (Hataya & Yamada, 2023)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from nestopt import tree
from nestopt.errors import InvalidArgumentError
from nestopt.linalg.base import (
    LinearOperator,
    Solution,
    SolveInfo,
    Solver,
    Status,
    check_nonnegative,
    check_positive_int,
)
from nestopt.tree import Tree

__all__ = ["Nystrom"]


@dataclass
class Nystrom(Solver):
    """Solve :math:`(\\tilde A + \\rho I) x = b` with the rank-``k`` Nystrom approximation :math:`\\tilde A`.

    ``k`` coordinates :math:`S` are drawn at random; :math:`C = A_{:,S}` (``k`` products, batched with
    ``vmap``) and :math:`W = A_{S,S}` give :math:`\\tilde A = C W^{+} C^\\top`, and the Woodbury identity
    gives, with no further products,

    .. math::  x = \\frac{1}{\\rho}\\left(b - C \\left(\\rho W + C^\\top C\\right)^{-1} C^\\top b\\right).

    With ``rank`` equal to the dimension, :math:`\\tilde A = A` and the answer is exactly
    :math:`(A + \\rho I)^{-1} b`. A negative eigenvalue of :math:`W` gives status ``NEGATIVE_CURVATURE``.
    The small ``k x k`` system is solved in float64.

    Args:
        rank: ``k``, the number of sampled columns (at most the dimension).
        rho: :math:`\\rho > 0`, the damping that the formula needs.
        seed: seed of the column sampler; each solve draws new columns from it.
        residual: compute the true relative residual of :math:`A x = b` with one extra product.

    Example:
        >>> import torch
        >>> from nestopt import linalg
        >>> A = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
        >>> op = linalg.LinearOperator(lambda v: {"x": A @ v["x"]}, like={"x": torch.zeros(3, dtype=A.dtype)})
        >>> linalg.Nystrom(rank=3, rho=1e-10).solve(op, {"x": torch.ones(3, dtype=A.dtype)}).value["x"]
        tensor([1.0000, 0.5000, 0.2500], dtype=torch.float64)
    """

    rank: int = 10
    rho: float = 1e-3
    seed: int = 0
    residual: bool = False
    throw: bool = False
    _gen: torch.Generator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_positive_int("rank", self.rank)
        check_nonnegative("rho", self.rho, positive=True)
        self._gen = torch.Generator().manual_seed(self.seed)

    def _solve(self, op: LinearOperator, b: Tree) -> Solution:
        vec, spec = tree.flatten(b)
        n = vec.numel()
        if self.rank > n:
            raise InvalidArgumentError(f"rank={self.rank} exceeds the dimension {n} of the system")
        idx = torch.randperm(n, generator=self._gen)[: self.rank].to(vec.device)
        basis = torch.zeros(self.rank, n, dtype=vec.dtype, device=vec.device)
        basis[torch.arange(self.rank, device=vec.device), idx] = 1.0
        cols = op.matmat(tree.unflatten(basis, spec))
        c = torch.cat([cols[k].reshape(self.rank, -1) for k in spec.keys], dim=1).to(torch.float64).T  # n x k
        w = c[idx]  # k x k
        w = 0.5 * (w + w.T)
        rhs = vec.to(torch.float64)
        core = self.rho * w + c.T @ c
        x = (rhs - c @ torch.linalg.solve(core, c.T @ rhs)) / self.rho
        status, message = Status.CONVERGED, ""
        min_eig = float(torch.linalg.eigvalsh(w).min())
        if min_eig < 0.0:
            status = Status.NEGATIVE_CURVATURE
            message = f"the sampled block W has eigenvalue {min_eig:.3g} < 0: the matrix is not positive semi-definite"
        if not bool(torch.isfinite(x).all()):
            status, message = Status.DIVERGED, "the Woodbury system is singular; raise rho"
            x = torch.zeros_like(x)
        out = tree.unflatten(x.to(vec.dtype), spec)
        res = self._relative_residual(op, out, b, tree.norm(b)) if self.residual else None
        if status is Status.CONVERGED and self.rank < n:
            status = Status.MAX_ITERATIONS  # a low-rank approximation: the residual says how good it is
        return Solution(out, SolveInfo(status, 1, res, 0, message))
