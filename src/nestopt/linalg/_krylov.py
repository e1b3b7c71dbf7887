"""Krylov-space machinery shared by GMRES and the eigensolvers: a flat view of an operator, block
Gram-Schmidt with reorthogonalization, and the Krylov-Schur iteration.

Krylov bases are stored as the rows of one ``(m, n)`` tensor (the trees flattened in key order), so that
orthogonalizing against the whole basis is two matrix products ("classical Gram-Schmidt twice", which keeps
the basis orthonormal to working precision). Small projected matrices are handled in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from nestopt import tree
from nestopt._rng import generator
from nestopt.errors import NonFiniteError
from nestopt.linalg.operator import LinearOperator
from nestopt.tree import Tree

__all__ = ["FlatOperator", "KrylovSchurResult", "generator", "krylov_schur", "orthogonalize", "random_like"]


def random_like(like: Tree, gen: torch.Generator) -> Tree:
    """A standard normal tree like ``like`` (drawn on the CPU, leaf by leaf in key order, then moved)."""
    return {k: torch.randn(t.shape, generator=gen, dtype=t.dtype, device="cpu").to(t.device) for k, t in like.items()}


class FlatOperator:
    """An operator on trees seen as one on flat vectors (and on blocks of them, one vector per row)."""

    def __init__(self, op: LinearOperator) -> None:
        self.op = op
        vec, self.spec = tree.flatten(op.like)
        self.n, self.dtype, self.device = vec.numel(), vec.dtype, vec.device

    def to_tree(self, x: Tensor) -> Tree:
        return tree.unflatten(x, self.spec)

    def to_flat(self, t: Tree) -> Tensor:
        return torch.cat([t[k].reshape(-1) for k in self.spec.keys])

    def matvec(self, x: Tensor) -> Tensor:
        return self.to_flat(self.op.matvec(self.to_tree(x)))

    def matmat(self, rows: Tensor) -> Tensor:
        """``(A X^T)^T`` for a block ``X`` of ``b`` row vectors: ``b`` products, batched when possible."""
        if rows.shape[0] == 1:
            return self.matvec(rows[0])[None]
        out = self.op.matmat(tree.unflatten(rows, self.spec))
        return torch.cat([out[k].reshape(rows.shape[0], -1) for k in self.spec.keys], dim=1)


def orthogonalize(basis: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Project the rows of ``w`` off the orthonormal rows of ``basis`` twice; returns ``(w, coefficients)``.

    ``coefficients[i, c]`` is the component of ``w[c]`` along ``basis[i]`` (float64).
    """
    if basis.shape[0] == 0:
        return w, torch.zeros(0, w.shape[0], dtype=torch.float64, device=w.device)
    c1 = basis @ w.T
    w = w - c1.T @ basis
    c2 = basis @ w.T
    w = w - c2.T @ basis
    return w, (c1 + c2).to(torch.float64)


def orthonormal_block(w: Tensor, basis: Tensor, ref: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Orthonormalize the rows of ``w`` (already orthogonal to ``basis``) among themselves: ``w = R^T Q``.

    A row whose remainder is below rounding level relative to ``ref`` (the norms before projection) is
    rank deficient: its row of ``R`` is zero and ``Q`` gets a random unit vector orthogonal to everything
    before it, so the basis keeps growing past an invariant subspace.
    """
    b = w.shape[0]
    q = torch.empty_like(w)
    r = torch.zeros(b, b, dtype=torch.float64, device=w.device)
    eps = torch.finfo(w.dtype).eps
    for i in range(b):
        row, coeff = orthogonalize(q[:i], w[i : i + 1])
        r[:i, i] = coeff[:, 0]
        norm = float(torch.linalg.vector_norm(row))
        if norm > 1e3 * eps * max(float(ref[i]), 1e-300):
            q[i] = row[0] / norm
            r[i, i] = norm
            continue
        for _ in range(3):  # a random direction; retried in the (improbable) case it lies in the span
            fresh = torch.randn(w.shape[1], generator=gen, dtype=w.dtype, device="cpu").to(w.device)[None]
            fresh, _ = orthogonalize(torch.cat([basis, q[:i]]), fresh)
            fresh_norm = float(torch.linalg.vector_norm(fresh))
            if fresh_norm > 1e-3:
                break
        q[i] = fresh[0] / fresh_norm
    return q, r


@dataclass
class KrylovSchurResult:
    """Wanted Ritz pairs (``k`` values, ``k`` vectors as rows), their residual norms and the run's counts."""

    values: Tensor
    vectors: Tensor
    residuals: Tensor
    converged: Tensor
    restarts: int


def _real_basis(z: Tensor) -> Tensor:
    """An orthonormal real basis of the span of complex columns ``z`` closed under conjugation."""
    both = torch.cat([z.real, z.imag], dim=1)
    u, sv, _ = torch.linalg.svd(both, full_matrices=False)
    rank = min(z.shape[1], int((sv > 1e-10 * sv[0]).sum()))
    return u[:, :rank]


def _with_partners(theta: Tensor, chosen: list[int]) -> list[int]:
    """``chosen`` plus the complex-conjugate partner of every non-real value in it."""
    out = list(chosen)
    scale = float(theta.abs().max()) if theta.numel() else 1.0
    for i in chosen:
        if abs(float(theta[i].imag)) > 1e-12 * scale:
            partner = int(torch.argmin((theta - theta[i].conj()).abs()))
            if partner not in out:
                out.append(partner)
    return out


def krylov_schur(
    fop: FlatOperator,
    start: Tensor,
    *,
    k: int,
    order: Callable[[Tensor], Tensor],
    symmetric: bool,
    krylov_size: int,
    tol: float,
    max_restarts: int,
    gen: torch.Generator,
) -> KrylovSchurResult:
    """The ``k`` wanted eigenpairs of ``fop`` by the (block) Krylov-Schur method (Stewart, 2001).

    The basis :math:`V` (``j`` orthonormal rows) and the block :math:`F` of ``b`` rows after it satisfy
    :math:`A V^\\top = V^\\top H + F^\\top C^\\top`; ``hbar`` holds :math:`[H; C^\\top]`. A cycle expands the
    basis block by block to ``krylov_size`` rows, computes Ritz pairs :math:`(\\theta, V^\\top s)` of :math:`H`
    (residual norm :math:`\\|C^\\top s\\|`), and restarts from the best half of them (for a non-symmetric
    operator, a real orthonormal basis of their span, conjugate partners included).

    Args:
        start: ``(b, n)`` starting block (``b`` is the block size).
        order: maps Ritz values to the indices that sort them, wanted first.
        symmetric: use the symmetric eigensolver on :math:`H` (real Ritz values).
    """
    b, n, m = start.shape[0], fop.n, krylov_size
    basis = torch.zeros(m + b, n, dtype=fop.dtype, device=fop.device)
    hbar = torch.zeros(m + b, m, dtype=torch.float64, device=fop.device)
    basis[:b], _ = orthonormal_block(start, basis[:0], torch.linalg.vector_norm(start, dim=1), gen)
    j = 0
    for restart in range(max_restarts + 1):
        while j + b <= m:
            w = fop.matmat(basis[j : j + b])
            if not bool(torch.isfinite(w).all()):
                raise NonFiniteError("the operator returned a non-finite product during the Krylov iteration")
            ref = torch.linalg.vector_norm(w, dim=1)
            w, coeff = orthogonalize(basis[: j + b], w)
            q, r = orthonormal_block(w, basis[: j + b], ref, gen)
            hbar[: j + b, j : j + b] = coeff
            hbar[j + b : j + 2 * b, j : j + b] = r
            basis[j + b : j + 2 * b] = q
            j += b
        h, ct = hbar[:j, :j].clone(), hbar[j : j + b, :j].clone()
        theta, s = torch.linalg.eigh(0.5 * (h + h.T)) if symmetric else torch.linalg.eig(h)
        idx = order(theta)
        res = torch.linalg.vector_norm(ct.to(s.dtype) @ s, dim=0)
        scale = max(float(theta.abs().max()), 1e-300)
        wanted = idx[:k]
        converged = res[wanted] <= tol * scale
        if bool(converged.all()) or restart == max_restarts:
            break
        target = min(k + (j - k) // 2, m - b)  # keep about half of the unwanted Ritz vectors
        if symmetric:
            chosen = idx[:target].tolist()
            u, g = s[:, chosen], torch.diag(theta[chosen])
        else:
            chosen = _with_partners(theta, idx[:k].tolist())
            for keep in range(k + 1, j + 1):  # conjugate partners count towards the target
                more = _with_partners(theta, idx[:keep].tolist())
                if len(more) > target:
                    break
                chosen = more
            u = _real_basis(s[:, chosen])
            g = u.T @ h @ u
        p = u.shape[1]
        kept = u.T.to(fop.dtype) @ basis[:j]
        residual_block = basis[j : j + b].clone()
        basis.zero_()
        basis[:p], basis[p : p + b] = kept, residual_block
        hbar.zero_()
        hbar[:p, :p], hbar[p : p + b, :p] = g, ct @ u
        j = p
    sel = s[:, wanted]
    dtype = torch.promote_types(fop.dtype, torch.complex64) if sel.is_complex() else fop.dtype
    vectors = sel.T.to(dtype) @ basis[:j].to(dtype)
    vectors = vectors / torch.linalg.vector_norm(vectors, dim=1, keepdim=True)
    return KrylovSchurResult(theta[wanted], vectors, res[wanted], converged, restart)
