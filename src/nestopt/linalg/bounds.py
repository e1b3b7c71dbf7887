"""Cheap bounds on the extreme eigenvalues of a symmetric operator, from a few Lanczos steps."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from nestopt import tree
from nestopt._validate import positive_int
from nestopt.errors import InvalidArgumentError, NonFiniteError, UnsupportedError
from nestopt.linalg import _krylov
from nestopt.linalg.operator import LinearOperator
from nestopt.tree import Tree

__all__ = ["SpectralBounds", "spectral_bounds"]


@dataclass
class SpectralBounds:
    """Estimates of the extreme eigenvalues of a symmetric operator (:func:`spectral_bounds`).

    Attributes:
        lower: :math:`\\theta_{\\min} - \\rho_{\\min}`, the smallest Ritz value minus its residual norm.
        upper: :math:`\\theta_{\\max} + \\rho_{\\max}`, the largest Ritz value plus its residual norm.
        ritz: the Ritz values (eigenvalues of the Lanczos tridiagonal matrix), ascending, float64.
        residual: :math:`\\beta_m`, the norm of the last Lanczos residual; :math:`\\theta_{\\max} + \\beta_m` and
            :math:`\\theta_{\\min} - \\beta_m` are the more cautious bounds (0 when the Krylov space is
            invariant: the Ritz values are then eigenvalues).
        products: operator products spent.
    """

    lower: float
    upper: float
    ritz: Tensor
    residual: float
    products: int


def spectral_bounds(op: LinearOperator, steps: int = 10, *, v0: Tree | None = None, seed: int = 0) -> SpectralBounds:
    """Estimates of the extreme eigenvalues of a symmetric operator from ``steps`` Lanczos steps.

    ``m = steps`` steps of the Lanczos recurrence :math:`\\beta_{j} v_{j+1} = A v_j - \\alpha_j v_j - \\beta_{j-1}
    v_{j-1}` give the tridiagonal :math:`T_m = S \\Theta S^\\top` whose eigenvalues (Ritz values) approach the
    extreme eigenvalues of :math:`A` from inside, the largest fastest. The residual norm of a Ritz pair is
    :math:`\\rho = \\beta_m |e_m^\\top s|`, and

    .. math::  \\lambda_{\\max} \\approx \\theta_{\\max} + \\rho_{\\max}, \\qquad
               \\lambda_{\\min} \\approx \\theta_{\\min} - \\rho_{\\min}

    are the estimates of Zhou & Li (2011): not guaranteed bounds (there may be an eigenvalue the Krylov space
    has not seen), but within a few percent of them after 5 to 10 steps; ``tests/linalg/test_bounds.py`` checks
    ``upper >= 0.95 lambda_max`` after 10 steps on spectra with outliers, uniform and log-spaced spectra.
    That is what a step size needs: :class:`~nestopt.linalg.Neumann` with ``alpha="auto"`` takes
    :math:`\\alpha = 1/\\text{upper}`, which converges for any estimate above :math:`\\lambda_{\\max}/2`. Only
    three vectors are kept (no reorthogonalization: loss of orthogonality duplicates Ritz values but does not
    move the extreme ones outward). One product per step.

    Args:
        op: a symmetric :class:`LinearOperator` (e.g. a Hessian).
        steps: Lanczos steps (operator products).
        v0: the starting vector (random when ``None``): e.g. the previous top eigenvector of a slowly
            changing operator.
        seed: seed of the random starting vector.

    Returns:
        :class:`SpectralBounds`.

    Example:
        >>> import torch
        >>> from nestopt import linalg
        >>> A = torch.diag(torch.linspace(0.1, 10.0, 200, dtype=torch.float64))
        >>> b = linalg.spectral_bounds(linalg.LinearOperator.from_matrix(A), steps=12)
        >>> round(b.upper, 1), b.products
        (10.1, 12)

    References:
        Zhou & Li. Bounding the spectrum of large Hermitian matrices. Linear Algebra Appl., 2011.
    """
    if not isinstance(op, LinearOperator):
        raise InvalidArgumentError(f"op must be a nestopt.linalg.LinearOperator, got {type(op).__name__}")
    if not op.symmetric:
        raise UnsupportedError("spectral_bounds needs a symmetric operator (Lanczos); use linalg.eigs for others")
    positive_int("steps", steps)
    before = op.calls
    if v0 is None:
        v = _krylov.random_like(op.like, _krylov.generator(seed))
    else:
        tree.check_like(op.like, v0, "operator domain", "v0")
        v = tree.clone(v0)
    norm = float(tree.norm(v))
    if norm == 0.0:
        raise InvalidArgumentError("v0 is zero: the starting vector needs a non-zero entry")
    tree.scale_(v, 1.0 / norm)
    alphas: list[float] = []
    betas: list[float] = []
    previous: Tree | None = None
    beta = 0.0
    for _ in range(min(steps, op.numel)):
        w = op.matvec(v)
        alpha = float(tree.dot(w, v))
        if not math.isfinite(alpha):
            raise NonFiniteError("the operator returned a non-finite product in spectral_bounds")
        tree.add_(w, v, -alpha)
        if previous is not None:
            tree.add_(w, previous, -beta)
        beta = float(tree.norm(w))
        alphas.append(alpha)
        betas.append(beta)
        if beta <= 1e3 * torch.finfo(op.dtype).eps * max(abs(a) for a in alphas):
            beta = 0.0  # an invariant subspace: the Ritz values are eigenvalues
            break
        previous, v = v, tree.scale_(w, 1.0 / beta)
    m = len(alphas)
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if m > 1:
        off = torch.tensor(betas[: m - 1], dtype=torch.float64)
        t += torch.diag(off, 1) + torch.diag(off, -1)
    ritz, vectors = torch.linalg.eigh(t)
    # the residual norm of a Ritz pair (theta, V s) is beta_m |e_m^T s|: small once the pair has converged
    low, high = beta * float(vectors[-1, 0].abs()), beta * float(vectors[-1, -1].abs())
    return SpectralBounds(float(ritz[0]) - low, float(ritz[-1]) + high, ritz, beta, op.calls - before)
