"""Randomized Nystrom preconditioners for conjugate gradient (Frangella, Tropp & Udell, 2023)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nestopt import tree
from nestopt._validate import nonnegative, nonnegative_int, positive_int
from nestopt.errors import InvalidArgumentError, NonFiniteError
from nestopt.linalg import _krylov
from nestopt.linalg.operator import LinearOperator
from nestopt.tree import Tree

__all__ = ["LowRankPreconditioner", "NystromPreconditioner"]


class LowRankPreconditioner(LinearOperator):
    """:math:`M v = v + U\\, \\mathrm{diag}(d)\\, U^\\top v`: identity plus a low-rank correction.

    ``basis`` holds the ``r`` orthonormal columns of :math:`U` as a tree whose leaves have a leading dimension
    ``r``; ``coefficients`` is :math:`d` (each in :math:`(-1, 0]` for a Nystrom preconditioner, so :math:`M` is
    positive definite). Applying :math:`M` costs two passes over the basis and no operator product.
    ``eigenvalues`` are the sketch's estimates of the top eigenvalues (diagnostics).

    Example:
        >>> import torch
        >>> basis = {"x": torch.tensor([[1.0, 0.0, 0.0]])}
        >>> m = LowRankPreconditioner(basis, torch.tensor([-0.5]), torch.tensor([2.0]))
        >>> m.matvec({"x": torch.ones(3)})["x"]
        tensor([0.5000, 1.0000, 1.0000])
    """

    def __init__(self, basis: Tree, coefficients: Tensor, eigenvalues: Tensor) -> None:
        self.basis, self.coefficients, self.eigenvalues = basis, coefficients, eigenvalues
        self.rank = int(coefficients.numel())
        super().__init__(self._apply, {k: torch.empty(v.shape[1:], dtype=v.dtype, device=v.device)
                                       for k, v in basis.items()}, symmetric=True, psd=True)  # fmt: skip

    def _apply(self, v: Tree) -> Tree:
        if self.rank == 0:
            return tree.clone(v)
        flat = {k: u.reshape(self.rank, -1) for k, u in self.basis.items()}
        coeff = torch.stack([flat[k] @ v[k].reshape(-1) for k in flat]).sum(0) * self.coefficients
        return {k: torch.addmv(v[k].reshape(-1), u.T, coeff).reshape(v[k].shape) for k, u in flat.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"basis": self.basis, "coefficients": self.coefficients, "eigenvalues": self.eigenvalues}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LowRankPreconditioner:
        return cls(dict(state["basis"]), state["coefficients"], state["eigenvalues"])

    def __repr__(self) -> str:
        return f"LowRankPreconditioner(rank {self.rank} on {self.numel} unknowns)"


@dataclass
class NystromPreconditioner:
    """The randomized Nystrom preconditioner of :math:`A + \\mu I`: a recipe that :class:`~nestopt.linalg.CG`
    builds from the operator (``CG(preconditioner=NystromPreconditioner(rank=10))``).

    A Gaussian sketch :math:`\\Omega` (``rank`` columns, orthonormalized) and the ``rank`` products
    :math:`Y = A\\Omega` (batched) give the Nystrom approximation :math:`\\hat A = Y (\\Omega^\\top Y)^{+} Y^\\top
    = U \\hat\\Lambda U^\\top` (computed stably with the shift :math:`\\nu = \\sqrt n\\, \\epsilon \\|Y\\|_F`), and

    .. math::  M = (\\hat\\lambda_{\\min} + \\mu)\\, U (\\hat\\Lambda + \\mu I)^{-1} U^\\top + (I - U U^\\top),

    which maps the top of the spectrum of :math:`A + \\mu I` near :math:`\\hat\\lambda_{\\min} + \\mu`: CG then
    converges as if the ``rank`` largest eigenvalues were gone. The Hessians of neural networks have a few large
    outlying eigenvalues (about one per class) above a bulk, which is the case this helps. Directions of
    negative curvature in the sketch are dropped (:math:`M` stays positive definite; CG still reports negative
    curvature of :math:`A` itself).

    Args:
        rank: sketch size (operator products per build).
        chunk_size: batch at most this many products at once (``None``: all); bounds the batched product's
            temporary memory.
        seed: seed of the sketch when the solver builds it itself (:class:`~nestopt.linalg.Amortized` passes
            its own, a new one per refresh).

    References:
        Frangella, Tropp & Udell. Randomized Nystrom preconditioning. SIAM J. Matrix Anal. Appl., 2023.
    """

    rank: int = 10
    chunk_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        positive_int("rank", self.rank)
        if self.chunk_size is not None:
            positive_int("chunk_size", self.chunk_size)
        nonnegative_int("seed", self.seed)

    def build(self, op: LinearOperator, *, damping: float = 0.0, seed: int | None = None) -> LowRankPreconditioner:
        """The preconditioner of ``op + damping * I`` from ``rank`` products of ``op``."""
        if not isinstance(op, LinearOperator):
            raise InvalidArgumentError(f"op must be a nestopt.linalg.LinearOperator, got {type(op).__name__}")
        mu = nonnegative("damping", damping)
        fop = _krylov.FlatOperator(op)
        r = min(self.rank, fop.n)
        gen = _krylov.generator(self.seed if seed is None else seed)
        omega = torch.randn(fop.n, r, generator=gen, dtype=fop.dtype, device="cpu").to(fop.device)
        q = torch.linalg.qr(omega).Q.T.contiguous()  # (r, n): orthonormal rows
        del omega
        step = self.chunk_size or r
        y = torch.cat([fop.matmat(q[i : i + step]) for i in range(0, r, step)])
        if not bool(torch.isfinite(y).all()):
            raise NonFiniteError("the operator returned a non-finite product while sketching the preconditioner")
        nu = math.sqrt(fop.n) * torch.finfo(fop.dtype).eps * float(torch.linalg.vector_norm(y))
        y.add_(q, alpha=nu)
        core = (q @ y.T).to(torch.float64)
        del q
        theta, s = torch.linalg.eigh(0.5 * (core + core.T))
        positive = theta > 1e3 * torch.finfo(torch.float64).eps * max(float(theta.abs().max()), 1e-300)
        if not bool(positive.any()):  # A is negative semi-definite on the sketch: nothing to precondition
            return self._identity(fop)
        factor = (s[:, positive] / theta[positive].sqrt()).T.to(fop.dtype)  # B^T = Theta^{-1/2} S^T Y_nu^T
        bt = factor @ y
        del y
        _, sigma, vh = torch.linalg.svd(bt, full_matrices=False)  # the rows of vh: the left singular vectors of B
        lam = (sigma.to(torch.float64) ** 2 - nu).clamp_min(0.0)
        keep = lam > 0.0
        if not bool(keep.any()) or (mu == 0.0 and float(lam[keep].min()) == 0.0):
            return self._identity(fop)
        lam, vh = lam[keep], vh[keep]
        coeff = (float(lam.min()) + mu) / (lam + mu) - 1.0
        basis = {k: t.contiguous() for k, t in tree.unflatten(vh, fop.spec).items()}  # leaves (rank, *shape)
        return LowRankPreconditioner(basis, coeff.to(device=fop.device, dtype=fop.dtype), lam)

    @staticmethod
    def _identity(fop: _krylov.FlatOperator) -> LowRankPreconditioner:
        basis = {k: torch.zeros(0, *shape, dtype=fop.dtype, device=fop.device)
                 for k, shape in zip(fop.spec.keys, fop.spec.shapes)}  # fmt: skip
        empty = torch.zeros(0, dtype=fop.dtype, device=fop.device)
        return LowRankPreconditioner(basis, empty, empty.to(torch.float64))
