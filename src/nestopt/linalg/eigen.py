"""Eigenpairs of linear operators from their products: Lanczos (:func:`eigsh`), Arnoldi (:func:`eigs`) and
power iteration (:func:`power_iteration`)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from nestopt import tree
from nestopt._validate import nonnegative, nonnegative_int, one_of, positive_int
from nestopt.errors import InvalidArgumentError, SolverDivergedError, SolverWarning, UnsupportedError
from nestopt.linalg import _krylov
from nestopt.linalg.base import Status
from nestopt.linalg.exact import materialize
from nestopt.linalg.operator import LinearOperator
from nestopt.tree import Tree

__all__ = ["EigResult", "eigs", "eigsh", "power_iteration"]

SYMMETRIC_WHICH = ("LA", "SA", "LM")
GENERAL_WHICH = ("LM", "SM", "LR", "SR", "LI", "SI")


@dataclass
class EigResult:
    """Eigenpairs with their diagnostics.

    Attributes:
        eigenvalues: ``(k,)`` tensor in the order that ``which`` asks for (real for :func:`eigsh`, complex
            for :func:`eigs`).
        eigenvectors: ``k`` unit-norm trees shaped like ``op.like`` (complex leaves for :func:`eigs`).
        residuals: ``(k,)`` residual norms :math:`\\|A y - \\theta y\\|`.
        converged: ``(k,)`` booleans: residual within the tolerance.
        status: ``CONVERGED`` when every pair converged, else ``MAX_ITERATIONS``.
        iterations: restart cycles (power iteration: iterations).
        products: operator products spent.
        message: details.

    ``as_dict()`` gives plain numbers (complex eigenvalues as ``[real, imag]`` pairs).
    """

    eigenvalues: Tensor
    eigenvectors: list[Tree]
    residuals: Tensor
    converged: Tensor
    status: Status
    iterations: int
    products: int
    message: str = ""

    def as_dict(self) -> dict[str, object]:
        values = self.eigenvalues
        return {
            "eigenvalues": torch.view_as_real(values).tolist() if values.is_complex() else values.tolist(),
            "residuals": self.residuals.tolist(),
            "converged": self.converged.tolist(),
            "status": self.status.value,
            "iterations": self.iterations,
            "products": self.products,
            "message": self.message,
        }


def _order(which: str) -> Callable[[Tensor], Tensor]:
    """Indices sorting eigenvalues with the wanted ones first (ties broken by the imaginary part)."""

    def key(theta: Tensor) -> Tensor:
        if which in ("LA", "LR"):
            return -theta.real
        if which in ("SA", "SR"):
            return theta.real
        if which == "LM":
            return -theta.abs()
        if which == "SM":
            return theta.abs()
        return -theta.imag if which == "LI" else theta.imag

    def order(theta: Tensor) -> Tensor:
        k = key(theta).to(torch.float64)
        tie = -theta.imag.to(torch.float64) if theta.is_complex() else torch.zeros_like(k)
        # lexicographic: the main key, then positive imaginary parts first
        idx = torch.argsort(tie, stable=True)
        return idx[torch.argsort(k[idx], stable=True)]

    return order


def _check(
    op: LinearOperator, k: int, block_size: int, krylov_size: int | None, tol: float | None, symmetric: bool
) -> tuple[int, float]:
    if not isinstance(op, LinearOperator):
        raise InvalidArgumentError(f"op must be a nestopt.linalg.LinearOperator, got {type(op).__name__}")
    positive_int("k", k)
    positive_int("block_size", block_size)
    n = op.numel
    if k > n:
        raise InvalidArgumentError(f"k={k} exceeds the dimension {n} of the operator")
    m = max(20, 2 * k + 2 * block_size) if krylov_size is None else positive_int("krylov_size", krylov_size)
    m = block_size * math.ceil(m / block_size)
    least = k + block_size + (0 if symmetric else 1)  # room for the k wanted (and a conjugate partner) and a block
    if m < least:
        raise InvalidArgumentError(
            f"krylov_size={krylov_size} is too small for k={k} and block_size={block_size}: it must be at least "
            f"{least} (twice k or more converges faster)"
        )
    eps = torch.finfo(op.dtype).eps
    return m, math.sqrt(eps) if tol is None else nonnegative("tol", tol, positive=True)


def _start(op: LinearOperator, fop: _krylov.FlatOperator, v0: Tree | None, block: int, gen: torch.Generator) -> Tensor:
    rows = [fop.to_flat(_krylov.random_like(op.like, gen)) for _ in range(block)]
    if v0 is not None:
        tree.check_like(op.like, v0, "operator domain", "v0")
        if float(tree.norm(v0)) == 0.0:
            raise InvalidArgumentError("v0 is zero: the starting vector needs a non-zero entry")
        rows[0] = fop.to_flat(tree.detach(v0)).to(fop.dtype)
    return torch.stack(rows)


def _dense(op: LinearOperator, k: int, order: Callable[[Tensor], Tensor], symmetric: bool) -> tuple[Tensor, ...]:
    """Every eigenpair of the materialized matrix (``n`` products): for operators the Krylov space would fill."""
    a = materialize(op).to(torch.float64)
    theta, s = torch.linalg.eigh(0.5 * (a + a.T)) if symmetric else torch.linalg.eig(a)
    idx = order(theta)[:k]
    vals, vecs = theta[idx], s[:, idx]
    res = torch.linalg.vector_norm(a.to(vecs.dtype) @ vecs - vecs * vals, dim=0)
    return vals, vecs.T, res


def _finish(
    op: LinearOperator,
    fop: _krylov.FlatOperator,
    name: str,
    values: Tensor,
    vectors: Tensor,
    residuals: Tensor,
    converged: Tensor,
    iterations: int,
    calls_before: int,
    throw: bool,
    message: str,
) -> EigResult:
    status = Status.CONVERGED if bool(converged.all()) else Status.MAX_ITERATIONS
    if status is not Status.CONVERGED:
        message = message or f"{int(converged.sum())} of {len(converged)} eigenpairs converged; raise max_restarts"
        text = f"{name}: {message}"
        if throw:
            raise SolverDivergedError(text)
        warnings.warn(text, SolverWarning, stacklevel=3)
    dtype = torch.promote_types(op.dtype, torch.complex64) if values.is_complex() else op.dtype
    trees = [tree.unflatten(v.to(dtype), fop.spec) for v in vectors]
    return EigResult(values.to(dtype), trees, residuals.to(torch.float64), converged, status, iterations,
                     op.calls - calls_before, message)  # fmt: skip


def _run(
    name: str,
    op: LinearOperator,
    k: int,
    which: str,
    symmetric: bool,
    v0: Tree | None,
    seed: int | torch.Generator,
    block_size: int,
    krylov_size: int | None,
    max_restarts: int,
    tol: float | None,
    throw: bool,
) -> EigResult:
    m, tol_ = _check(op, k, block_size, krylov_size, tol, symmetric)
    nonnegative_int("max_restarts", max_restarts)
    gen = _krylov.generator(seed)
    fop = _krylov.FlatOperator(op)
    order = _order(which)
    before = op.calls
    if m + block_size > fop.n:  # the Krylov space would be the whole space: solve densely
        vals, vecs, res = _dense(op, k, order, symmetric)
        converged = torch.ones(k, dtype=torch.bool)
        return _finish(op, fop, name, vals, vecs, res, converged, 0, before, throw, "dense (the operator is small)")
    out = _krylov.krylov_schur(
        fop, _start(op, fop, v0, block_size, gen), k=k, order=order, symmetric=symmetric, krylov_size=m,
        tol=tol_, max_restarts=max_restarts, gen=gen,
    )  # fmt: skip
    return _finish(
        op, fop, name, out.values, out.vectors, out.residuals, out.converged, out.restarts, before, throw, ""
    )


def eigsh(
    op: LinearOperator,
    k: int = 1,
    *,
    which: str = "LA",
    v0: Tree | None = None,
    seed: int | torch.Generator = 0,
    block_size: int = 1,
    krylov_size: int | None = None,
    max_restarts: int = 200,
    tol: float | None = None,
    throw: bool = False,
) -> EigResult:
    """``k`` eigenpairs of a symmetric operator by thick-restart Lanczos with full reorthogonalization.

    A cycle builds an orthonormal Krylov basis :math:`V` of ``krylov_size`` vectors from the starting block,
    reorthogonalizing every new vector against all of :math:`V` (so no spurious copies appear), and takes
    Ritz pairs :math:`(\\theta_i, V s_i)` of :math:`T = V^\\top A V`; it then restarts from the best half of
    them (Krylov-Schur, Stewart 2001; equivalent to thick-restart Lanczos, Wu & Simon 2000). A pair is
    converged when :math:`\\|A y - \\theta y\\| \\le \\mathrm{tol} \\cdot \\max_i |\\theta_i|`.

    A single starting vector spans only one direction of each eigenspace, so an eigenvalue of multiplicity
    :math:`r` is found once per direction the starting block has in it: for repeated eigenvalues set
    ``block_size`` to at least :math:`r` (block Lanczos, products batched by ``op.matmat``). When
    ``krylov_size + block_size`` reaches the dimension, the operator is materialized and solved densely.

    Args:
        op: a symmetric :class:`LinearOperator` (e.g. ``LinearOperator.hessian(lin)``).
        k: how many eigenpairs.
        which: ``"LA"`` largest algebraic, ``"SA"`` smallest algebraic, ``"LM"`` largest magnitude.
        v0: the starting vector, a tree like ``op.like`` (e.g. the eigenvector found at a nearby point, to
            track it); random when ``None``.
        seed: seed or generator of the random starting vectors.
        block_size: vectors per Krylov block.
        krylov_size: basis size per cycle (default ``max(20, 2k + 2 block_size)``).
        max_restarts: restart cycles at most.
        tol: relative residual tolerance (default :math:`\\sqrt{\\epsilon}` of the dtype).
        throw: raise :class:`~nestopt.errors.SolverDivergedError` instead of warning when a pair has not
            converged.

    Returns:
        An :class:`EigResult`: eigenvalues in the order of ``which`` (``"LA"``: descending).

    Example:
        >>> import torch
        >>> from nestopt import linalg
        >>> A = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
        >>> res = linalg.eigsh(linalg.LinearOperator.from_matrix(A), k=3)
        >>> res.eigenvalues.round(decimals=8).tolist(), res.status.value
        ([100.0, 99.0, 98.0], 'converged')

    References:
        Stewart. A Krylov-Schur algorithm for large eigenproblems. SIAM J. Matrix Anal. Appl., 2001.
        Wu & Simon. Thick-restart Lanczos method for large symmetric eigenvalue problems. 2000.
    """
    one_of("which", which, SYMMETRIC_WHICH)
    if isinstance(op, LinearOperator) and not op.symmetric:
        raise UnsupportedError("eigsh needs a symmetric operator; use linalg.eigs for a non-symmetric one")
    return _run("eigsh", op, k, which, True, v0, seed, block_size, krylov_size, max_restarts, tol, throw)


def eigs(
    op: LinearOperator,
    k: int = 1,
    *,
    which: str = "LM",
    v0: Tree | None = None,
    seed: int | torch.Generator = 0,
    block_size: int = 1,
    krylov_size: int | None = None,
    max_restarts: int = 200,
    tol: float | None = None,
    throw: bool = False,
) -> EigResult:
    """``k`` eigenpairs of a general (non-symmetric) operator by restarted Arnoldi; complex in general.

    The Krylov basis is built as in :func:`eigsh` (full reorthogonalization, blocks of ``block_size``);
    Ritz pairs come from the eigendecomposition of the projected matrix :math:`H = V^\\top A V`, and each
    cycle restarts from a real orthonormal basis of the best half of the Ritz vectors (conjugate partners
    kept together), a Krylov-Schur restart.

    Args:
        op: a :class:`LinearOperator` (e.g. :meth:`nestopt.games.Game.jacobian_operator`).
        k: how many eigenpairs.
        which: ``"LM"`` / ``"SM"`` largest / smallest magnitude, ``"LR"`` / ``"SR"`` largest / smallest real
            part, ``"LI"`` / ``"SI"`` largest / smallest imaginary part. (``"SM"`` converges slowly: Krylov
            methods find extreme eigenvalues.)
        v0, seed, block_size, krylov_size, max_restarts, tol, throw: as in :func:`eigsh`.

    Returns:
        An :class:`EigResult` with complex eigenvalues and complex eigenvector trees.

    Example:
        >>> import torch
        >>> from nestopt import linalg
        >>> rotation = torch.tensor([[0.0, -2.0], [2.0, 0.0]], dtype=torch.float64)
        >>> A = torch.block_diag(rotation, torch.diag(torch.linspace(0.1, 1.0, 40, dtype=torch.float64)))
        >>> res = linalg.eigs(linalg.LinearOperator.from_matrix(A), k=2)
        >>> [complex(round(z.real, 8), round(z.imag, 8)) for z in res.eigenvalues.tolist()]
        [2j, -2j]

    References:
        Stewart. A Krylov-Schur algorithm for large eigenproblems. SIAM J. Matrix Anal. Appl., 2001.
    """
    one_of("which", which, GENERAL_WHICH)
    return _run("eigs", op, k, which, False, v0, seed, block_size, krylov_size, max_restarts, tol, throw)


def power_iteration(
    op: LinearOperator,
    *,
    iterations: int = 100,
    tol: float = 0.0,
    v0: Tree | None = None,
    seed: int | torch.Generator = 0,
) -> EigResult:
    """The dominant eigenpair (largest magnitude) by power iteration: :math:`v \\leftarrow Av / \\|Av\\|`.

    Each iteration costs one product and gives the Rayleigh quotient :math:`\\theta = v^\\top A v / v^\\top v`
    and the residual :math:`\\|Av - \\theta v\\| / \\|v\\|` of the current vector. The rate is
    :math:`|\\lambda_2 / \\lambda_1|` per iteration; :func:`eigsh` is much faster for symmetric operators,
    and this is the cheap fixed-budget estimate (``tol=0``: run every iteration).

    Args:
        op: a :class:`LinearOperator` whose dominant eigenvalue is real.
        iterations: products at most.
        tol: stop once the residual is at most ``tol * |theta|`` (0: never stop early).
        v0: the starting vector (a tree like ``op.like``); random when ``None``.
        seed: seed or generator of the random starting vector.

    Returns:
        An :class:`EigResult` with ``k = 1``; ``status`` is ``CONVERGED`` only when ``tol`` was reached.

    Example:
        >>> import torch
        >>> from nestopt import linalg
        >>> A = torch.diag(torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64))
        >>> round(float(linalg.power_iteration(linalg.LinearOperator.from_matrix(A), iterations=60).eigenvalues), 6)
        5.0
    """
    positive_int("iterations", iterations)
    nonnegative("tol", tol)
    gen = _krylov.generator(seed)
    before = op.calls
    if v0 is None:
        v = _krylov.random_like(op.like, gen)
    else:
        tree.check_like(op.like, v0, "operator domain", "v0")
        v = tree.clone(v0)
    lam, res, it = 0.0, math.inf, 0
    status = Status.MAX_ITERATIONS
    for it in range(1, iterations + 1):
        hv = op.matvec(v)
        lam = float(tree.dot(v, hv) / tree.dot(v, v))
        v_norm = float(tree.norm(v))
        if tol > 0.0 or it == iterations:
            res = float(tree.norm(tree.axpy(-lam, v, hv))) / v_norm
            if res <= tol * abs(lam):
                status = Status.CONVERGED
        if status is Status.CONVERGED or it == iterations:
            vec = tree.scale(v, 1.0 / v_norm)
            break
        v = tree.scale(hv, 1.0 / float(tree.norm(hv)))
    message = "" if status is Status.CONVERGED else f"fixed budget of {iterations} iterations"
    if tol > 0.0 and status is not Status.CONVERGED:
        warnings.warn(f"power_iteration: residual {res:.3g} above tol * |theta| after {iterations} iterations",
                      SolverWarning, stacklevel=2)  # fmt: skip
    value = torch.tensor([lam], dtype=op.dtype)
    return EigResult(value, [vec], torch.tensor([res], dtype=torch.float64),
                     torch.tensor([status is Status.CONVERGED]), status, it, op.calls - before, message)  # fmt: skip
