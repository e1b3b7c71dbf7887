"""Ridges: eigenvectors of the Hessian with negative eigenvalues, found and re-tracked along a ride.

Two modes give the eigenpairs:

``"exact"``
    the dense Hessian (``n`` batched Hessian-vector products) and ``torch.linalg.eigh``: every eigenpair,
    for small problems.
``"approximate"``
    Lanczos on Hessian-vector products (:func:`nestopt.linalg.eigsh`, ``which="SA"``): the ``k`` most
    negative eigenpairs. Along a ride the update is warm-started from the previous eigenvector (``v0``),
    so it costs a few products when the ridge turns slowly.

Ridges are ordered by eigenvalue (most negative first) and signed by :func:`canonical_sign`, so that a
fingerprint ``("0+", "1-")`` names the same branch in every run. A ride re-picks, among the current
eigenvectors, the one with the largest overlap :math:`|e_j^\\top e_{\\text{prev}}|` and signs it so that
the overlap is positive.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from nestopt import linalg
from nestopt._validate import nonnegative, one_of, positive_int
from nestopt.errors import SolverWarning, TooLargeError
from nestopt.games.diversity._common import FlatLoss, canonical_sign

__all__ = ["MODES", "Curvature", "Ridge"]

MODES = ("exact", "approximate")


@dataclass(frozen=True)
class Ridge:
    """One ridge at a point: its index in eigenvalue order, its sign, eigenvalue and unit eigenvector (flat)."""

    index: int
    sign: int
    eigenvalue: float
    vector: Tensor

    @property
    def label(self) -> str:
        return f"{self.index}{'+' if self.sign > 0 else '-'}"


class Curvature:
    """The Hessian's eigenpairs along a search, in exact or approximate mode (see the module docstring).

    Args:
        flat: the loss on flat vectors.
        mode: ``"exact"`` or ``"approximate"``.
        k: at most this many ridges at a point, the most negative first; the approximate mode computes this
            many eigenpairs (default 4), the exact mode all of them (default: every negative one is a ridge).
        negative_tol: an eigenvalue counts as negative below ``-negative_tol``.
        max_exact: the largest problem for the exact mode.
        krylov_size, max_restarts, tol: Lanczos settings of the approximate mode.
        seed: of Lanczos's random starting vectors.
    """

    def __init__(
        self,
        flat: FlatLoss,
        mode: str,
        *,
        k: int | None = None,
        negative_tol: float = 1e-8,
        max_exact: int = 2048,
        krylov_size: int | None = None,
        max_restarts: int = 50,
        tol: float | None = None,
        seed: int = 0,
    ) -> None:
        self.flat = flat
        self.mode = one_of("mode", mode, MODES)
        self.limit: int | None = None if k is None else positive_int("ridges", k)
        self.k: int = 4 if self.limit is None else self.limit
        self.negative_tol = nonnegative("negative_tol", negative_tol)
        if mode == "exact" and flat.numel > max_exact:
            raise TooLargeError(
                f"the exact mode forms the dense {flat.numel} x {flat.numel} Hessian, more than max_exact={max_exact}; "
                "use mode='approximate' (Lanczos on Hessian-vector products)"
            )
        self.k = min(self.k, flat.numel)
        self.krylov_size, self.max_restarts, self.tol = krylov_size, max_restarts, tol
        self.seed = seed
        self.unconverged = 0

    # -- eigenpairs -------------------------------------------------------------------------------
    def _eigsh(self, op: linalg.LinearOperator, k: int, v0: Tensor | None) -> tuple[Tensor, Tensor]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SolverWarning)
            res = linalg.eigsh(
                op, k, which="SA", v0=None if v0 is None else self.flat.tree(v0), seed=self.seed,
                krylov_size=self.krylov_size, max_restarts=self.max_restarts, tol=self.tol,
            )  # fmt: skip
        self.unconverged += int(any(issubclass(w.category, SolverWarning) for w in caught))
        vecs = torch.stack([self.flat.flat(v) for v in res.eigenvectors])
        return res.eigenvalues.to(torch.float64), vecs

    def eigenpairs(self, x: Tensor, k: int | None = None, v0: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(eigenvalues ascending, eigenvectors as rows, gradient)`` at ``x``: all of them in exact mode,
        the ``k`` smallest in approximate mode (warm-started from ``v0``)."""
        op, _, grad = self.flat.hessian(x)
        if self.mode == "exact":
            h = linalg.materialize(op).to(torch.float64)
            values, vectors = torch.linalg.eigh(0.5 * (h + h.T))
            return values, vectors.T.to(self.flat.dtype), grad
        values, vectors = self._eigsh(op, min(k or self.k, self.flat.numel), v0)
        return values, vectors, grad

    def ridges(self, x: Tensor) -> tuple[list[Ridge], Tensor, Tensor]:
        """The ridges at ``x`` (each negative eigenpair in both signs, most negative first), every computed
        eigenvalue, and the gradient."""
        values, vectors, grad = self.eigenpairs(x)
        out: list[Ridge] = []
        limit = self.k if self.mode == "approximate" else (self.limit or len(values))
        for i, (lam, vec) in enumerate(zip(values.tolist()[:limit], vectors[:limit])):
            if lam >= -self.negative_tol:
                break
            v = canonical_sign(vec / vec.norm())
            out += [Ridge(i, 1, lam, v), Ridge(i, -1, lam, -v)]
        return out, values, grad

    def track(self, x: Tensor, previous: Tensor, k: int) -> tuple[float, Tensor, float]:
        """The eigenpair at ``x`` with the largest overlap with ``previous``, signed to overlap positively:
        ``(eigenvalue, unit eigenvector, |overlap|)``. The approximate mode computes the ``k`` smallest
        eigenpairs warm-started from ``previous``."""
        values, vectors, _ = self.eigenpairs(x, k=k, v0=previous)
        overlaps = vectors @ previous / vectors.norm(dim=1).clamp_min(torch.finfo(vectors.dtype).tiny)
        j = int(torch.argmax(overlaps.abs()))
        v = vectors[j] / vectors[j].norm()
        sign = 1.0 if float(overlaps[j]) >= 0 else -1.0
        return float(values[j]), sign * v, float(overlaps[j].abs())
