"""Ridges: eigenvectors of the Hessian with negative eigenvalues, found and re-tracked along a ride.

Two modes give the eigenpairs:

``"exact"``
    the dense Hessian (``n`` batched Hessian-vector products) and ``torch.linalg.eigh``: every eigenpair,
    for small problems.
``"approximate"``
    Lanczos on Hessian-vector products (:func:`nestopt.linalg.eigsh`, ``which="SA"``): the ``k`` most
    negative eigenpairs at a branching point. Along a ride the update is warm-started from the previous
    eigenvector: a Lanczos cycle of ``track_size`` vectors started at it, the Ritz pair that overlaps it most,
    and further cycles started at that Ritz vector until its residual is below the tolerance (at most
    ``track_restarts``). The Krylov space contains the previous vector, so the pair found is never a worse
    eigenvector than it, a slowly turning ridge costs one cycle a step, and a ridge inside a cluster of
    (nearly) repeated eigenvalues (permutation symmetries) is followed continuously instead of jumping to
    whichever member of the cluster is the most negative.

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
from nestopt._validate import nonnegative, nonnegative_int, one_of, positive_int
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
        krylov_size, max_restarts, tol: Lanczos settings of the approximate mode at branching points.
        track_size, track_restarts: the Lanczos cycles of the approximate mode's re-tracking.
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
        track_size: int = 10,
        track_restarts: int = 5,
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
        self.track_size = max(positive_int("track_size", track_size), 2)
        self.track_restarts = nonnegative_int("track_restarts", track_restarts)
        self.seed = seed
        self.unconverged = 0

    # -- eigenpairs -------------------------------------------------------------------------------
    def _eigsh(
        self, op: linalg.LinearOperator, k: int, v0: Tensor | None, krylov_size: int | None = None,
        max_restarts: int | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        """``(eigenvalues, eigenvectors as rows, residuals)`` from :func:`nestopt.linalg.eigsh`, unconverged
        pairs counted instead of warned about."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SolverWarning)
            res = linalg.eigsh(
                op, k, which="SA", v0=None if v0 is None else self.flat.tree(v0), seed=self.seed,
                krylov_size=krylov_size or self.krylov_size,
                max_restarts=self.max_restarts if max_restarts is None else max_restarts, tol=self.tol,
            )  # fmt: skip
        self.unconverged += int(any(issubclass(w.category, SolverWarning) for w in caught))
        vecs = torch.stack([self.flat.flat(v) for v in res.eigenvectors])
        return res.eigenvalues.to(torch.float64), vecs, res.residuals

    def eigenpairs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(eigenvalues ascending, eigenvectors as rows, gradient)`` at ``x``: all of them in exact mode,
        the ``k`` smallest in approximate mode."""
        op, _, grad = self.flat.hessian(x)
        if self.mode == "exact":
            values, vectors = self._dense(op)
            return values, vectors, grad
        values, vectors, _ = self._eigsh(op, self.k, None)
        return values, vectors, grad

    def _dense(self, op: linalg.LinearOperator) -> tuple[Tensor, Tensor]:
        h = linalg.materialize(op).to(torch.float64)
        values, vectors = torch.linalg.eigh(0.5 * (h + h.T))
        return values, vectors.T.to(self.flat.dtype)

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

    def track(self, x: Tensor, previous: Tensor) -> tuple[float, Tensor, float]:
        """The eigenpair at ``x`` with the largest overlap with ``previous``, signed to overlap positively:
        ``(eigenvalue, unit eigenvector, |overlap|)`` (approximate mode: see the module docstring)."""
        op, _, _ = self.flat.hessian(x)
        if self.mode == "exact":
            values, vectors = self._dense(op)
            return self._closest(values, vectors, previous)
        m = min(self.track_size, self.flat.numel)
        start = previous
        eps = torch.finfo(self.flat.dtype).eps
        tol = self.tol if self.tol is not None else eps**0.5
        for _ in range(self.track_restarts + 1):
            values, vectors, residuals = self._eigsh(op, m - 1, start, krylov_size=m, max_restarts=0)
            value, vector, overlap = self._closest(values, vectors, previous)
            j = int(torch.argmax((vectors @ vector).abs()))
            if float(residuals[j]) <= tol * max(float(values.abs().max()), eps):
                break
            start = vector
        return value, vector, overlap

    @staticmethod
    def _closest(values: Tensor, vectors: Tensor, previous: Tensor) -> tuple[float, Tensor, float]:
        overlaps = vectors @ previous / vectors.norm(dim=1).clamp_min(torch.finfo(vectors.dtype).tiny)
        j = int(torch.argmax(overlaps.abs()))
        sign = 1.0 if float(overlaps[j]) >= 0 else -1.0
        return float(values[j]), sign * vectors[j] / vectors[j].norm(), float(overlaps[j].abs())
