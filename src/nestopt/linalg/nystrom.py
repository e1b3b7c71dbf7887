"""Nystrom low-rank inverse-Hessian approximation (Hataya & Yamada, 2023)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

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
from nestopt.tree import Tree

__all__ = ["Nystrom"]


@dataclass
class Nystrom(Solver):
    """Solve :math:`(\\tilde A + \\rho I) x = b` with the rank-``k`` Nystrom approximation :math:`\\tilde A`.

    ``k`` coordinates :math:`S` are drawn at random; :math:`C = A_{:,S}` (``k`` products, batched with
    ``vmap``) and :math:`W = A_{S,S}` give :math:`\\tilde A = C W^{+} C^\\top`, and the Woodbury identity
    gives, with no further products,

    .. math::  x = \\frac{1}{\\rho}\\left(b - C \\left(\\rho W + C^\\top C\\right)^{-1} C^\\top b\\right).

    With ``rank`` equal to the dimension, :math:`\\tilde A = A`, :math:`W = P^\\top A P` for the permutation
    :math:`P` of the sampled coordinates, and the solver solves :math:`(W + \\rho I)\\, x_S = b_S` directly instead
    (the Woodbury form would cancel :math:`b` against :math:`C(\\dots)^{-1} C^\\top b` and lose
    :math:`\\epsilon \\|A\\| / \\rho` of relative accuracy). A negative eigenvalue of :math:`W` gives status
    ``NEGATIVE_CURVATURE``. The small ``k x k`` system is solved in float64.

    **Accuracy** (relative error against the exact :math:`(\\tilde A + \\rho I)^{-1} b` of the products as
    computed; :math:`\\epsilon` the input dtype's machine epsilon, :math:`\\epsilon_{64}` float64's):

    * ``rank`` :math:`= n`: :math:`\\le 4\\,(\\epsilon_{64}\\, \\kappa + \\epsilon)` with
      :math:`\\kappa = (\\lambda_{\\max}(A) + \\rho) / (\\lambda_{\\min}(A) + \\rho)`, the accuracy of a dense
      float64 solve, for every :math:`\\rho > 0`.
    * ``rank`` :math:`< n`: :math:`\\tilde A` is singular, so :math:`\\tilde A + \\rho I` has condition number
      :math:`1 + \\|\\tilde A\\| / \\rho`; the Woodbury form's error in float64 is at most about that of a
      backward-stable solve, :math:`64\\, \\epsilon_{64}\\, (1 + \\|\\tilde A\\|_2 / \\rho)`, and comes near it only
      when :math:`b` lies (nearly) in the span of the sampled columns; for a generic :math:`b` the answer is
      dominated by the part of :math:`b` outside that span and the error does not grow as :math:`\\rho \\to 0`. In float32 the Gram
      matrix :math:`C^\\top C` is formed in float32, which costs about :math:`10\\, \\epsilon\\, \\kappa(W)` more.

    Measured (``n = 40``, eigenvalues log-spaced in :math:`[10^{-3}, 1]`, so :math:`\\|A\\| = 1`,
    :math:`\\kappa(A) = 10^3`; ``k = 20`` gives :math:`\\kappa(W) \\approx 2 \\cdot 10^2`; test
    ``tests/linalg/test_nystrom_accuracy.py``):

    ==========================  =======  =======  =======  =======  =======  =======  =======
    case                        dtype    1e-2     1e-4     1e-6     1e-8     1e-10    1e-12
    ==========================  =======  =======  =======  =======  =======  =======  =======
    ``k = n``                   float64  7.8e-15  3.4e-14  4.0e-14  3.9e-14  3.1e-14  3.2e-14
    ``k = n``                   float32  2.8e-08  2.2e-08  2.4e-08  1.9e-08  2.1e-08  2.3e-08
    ``k = n/2``, generic ``b``  float64  1.8e-14  6.6e-14  1.3e-13  1.4e-13  7.4e-14  6.3e-14
    ``k = n/2``, generic ``b``  float32  3.6e-05  2.2e-04  2.3e-04  2.3e-04  2.3e-04  2.3e-04
    ``k = n/2``, ``b`` in span  float64  1.4e-13  3.1e-11  1.7e-09  4.0e-07  3.6e-05  4.3e-03
    ==========================  =======  =======  =======  =======  =======  =======  =======

    (The Woodbury form at ``k = n`` gave 1.6e-02 in float64 and 2.4e+06 in float32 at :math:`\\rho = 10^{-12}`.)

    Args:
        rank: ``k``, the number of sampled columns (at most the dimension).
        rho: :math:`\\rho > 0`, the damping that the formula needs.
        seed: seed of the column sampler; each solve draws new columns from it.
        chunk_size: form at most this many columns at once (``None``: all ``rank`` in one batched product);
            smaller chunks bound the batched product's temporary memory.
        residual: compute the true relative residual of :math:`A x = b` with one extra product.

    Example:
        >>> import torch
        >>> from nestopt import linalg
        >>> A = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
        >>> op = linalg.LinearOperator(lambda v: {"x": A @ v["x"]}, like={"x": torch.zeros(3, dtype=A.dtype)})
        >>> linalg.Nystrom(rank=3, rho=1e-10).solve(op, {"x": torch.ones(3, dtype=A.dtype)}).value["x"]
        tensor([1.0000, 0.5000, 0.2500], dtype=torch.float64)
    """

    uses_x0 = False
    requires = "symmetric"

    rank: int = 10
    rho: float = 1e-3
    seed: int = 0
    chunk_size: int | None = None
    residual: bool = False
    throw: bool = False
    _gen: torch.Generator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        positive_int("rank", self.rank)
        nonnegative("rho", self.rho, positive=True)
        if self.chunk_size is not None:
            positive_int("chunk_size", self.chunk_size)
        self._gen = torch.Generator().manual_seed(self.seed)

    def _columns(self, op: LinearOperator, b: Tree, idx: Tensor) -> dict[str, Tensor]:
        """The sampled columns :math:`A e_i`, per leaf as ``rank x numel(leaf)`` blocks, in chunks."""
        keys = list(b)
        offsets = torch.tensor([0] + [b[k].numel() for k in keys]).cumsum(0).tolist()
        blocks: dict[str, list[Tensor]] = {k: [] for k in keys}
        step = self.chunk_size or self.rank
        for start in range(0, self.rank, step):
            chunk = idx[start : start + step].tolist()
            basis = {k: torch.zeros((len(chunk), *b[k].shape), dtype=b[k].dtype, device=b[k].device) for k in keys}
            for row, i in enumerate(chunk):
                leaf = next(j for j in range(len(keys)) if offsets[j] <= i < offsets[j + 1])
                basis[keys[leaf]].view(len(chunk), -1)[row, i - offsets[leaf]] = 1.0
            cols = op.matmat(basis)
            del basis
            for k in keys:
                blocks[k].append(cols[k].reshape(len(chunk), -1))
        return {k: torch.cat(v) if len(v) > 1 else v[0] for k, v in blocks.items()}

    def _solve(self, op: LinearOperator, b: Tree, x0: Tree | None) -> Solution:
        n = tree.numel(b)
        if self.rank > n:
            raise InvalidArgumentError(f"rank={self.rank} exceeds the dimension {n} of the system")
        idx = torch.randperm(n, generator=self._gen)[: self.rank]
        c = self._columns(op, b, idx)  # leaf k: rank x numel(k), row r = A e_{idx_r} restricted to leaf k
        flat_c = [c[k] for k in b]
        offsets = torch.tensor([0] + [ck.shape[1] for ck in flat_c]).cumsum(0).tolist()
        w = torch.empty(self.rank, self.rank, dtype=torch.float64)
        for r, i in enumerate(idx.tolist()):
            leaf = next(j for j in range(len(flat_c)) if offsets[j] <= i < offsets[j + 1])
            w[:, r] = flat_c[leaf][:, i - offsets[leaf]].to(torch.float64).cpu()
        device = flat_c[0].device
        w = (0.5 * (w + w.T)).to(device)
        full = self.rank == n
        if full:  # W = P^T A P is all of A: solve (W + rho I) x_S = b_S directly, with no cancellation
            flat_b, spec = tree.flatten(b)
            eye = torch.eye(n, dtype=w.dtype, device=device)
            sol = torch.linalg.solve(w + self.rho * eye, flat_b[idx.to(device)].to(w.dtype))
        else:
            # The k x k quantities in float64; the n-sized ones stay in the input dtype (no copies of C).
            ctc = torch.stack([ck @ ck.T for ck in c.values()]).sum(0).to(torch.float64)
            ctb = torch.stack([ck @ b[k].reshape(-1) for k, ck in c.items()]).sum(0).to(torch.float64)
            sol = torch.linalg.solve(self.rho * w + ctc, ctb)
        status, message = Status.CONVERGED, ""
        min_eig = float(torch.linalg.eigvalsh(w).min())
        if min_eig < 0.0:
            status = Status.NEGATIVE_CURVATURE
            message = f"the sampled block W has eigenvalue {min_eig:.3g} < 0: the matrix is not positive semi-definite"
        if not bool(torch.isfinite(sol).all()):
            status, message = Status.DIVERGED, "the Woodbury system is singular; raise rho"
            out = tree.zeros_like(b)
        elif full:
            flat_x = torch.empty_like(sol).index_copy_(0, idx.to(device), sol)
            out = {k: v.to(b[k].dtype) for k, v in tree.unflatten(flat_x, spec).items()}
        else:
            out = {k: (b[k] - (sol.to(ck.dtype) @ ck).reshape(b[k].shape)) / self.rho for k, ck in c.items()}
        del c
        res = self._relative_residual(op, out, b, tree.norm(b)) if self.residual else None
        if status is Status.CONVERGED and self.rank < n:
            status = Status.MAX_ITERATIONS  # a low-rank approximation: the residual says how good it is
        return Solution(out, SolveInfo(status, 1, res, 0, message))
