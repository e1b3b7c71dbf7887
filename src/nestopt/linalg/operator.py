"""Linear operators on trees, given by their products, with the tags that solvers dispatch on."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from nestopt import tree
from nestopt.autodiff import Linearization
from nestopt.errors import InvalidArgumentError, ShapeMismatchError, UnsupportedError
from nestopt.tree import Tree

__all__ = ["LinearOperator"]

Product = Callable[[Tree], Tree]


class _Calls:
    """The product counter, shared by an operator and its views (transpose, shift)."""

    def __init__(self) -> None:
        self.n = 0


def _fresh(out: Tree, v: Tree) -> Tree:
    """``out`` with every leaf that shares memory with ``v`` copied (solvers update products in place)."""
    return {k: o.clone() if o.data_ptr() == v[k].data_ptr() else o for k, o in out.items()}


class LinearOperator:
    """A linear map :math:`A` on trees, given by its products :math:`Av` (and :math:`A^\\top u`).

    Two tags say what solvers may assume: ``symmetric`` (:math:`A = A^\\top`; Hessians are) and ``psd``
    (symmetric positive semi-definite). Solvers check them: :class:`~nestopt.linalg.CG` refuses a
    non-symmetric operator and names the solvers that apply. A non-symmetric operator (a game Jacobian, the
    Jacobian of an optimality condition) needs ``rmatvec`` for the methods that use :math:`A^\\top`
    (:class:`~nestopt.linalg.NormalCG`, :attr:`T`); for a symmetric one ``rmatvec`` is ``matvec``.

    Args:
        matvec: ``v -> A v`` for a tree ``v`` shaped like ``like``.
        like: a tree with the shapes, dtypes and devices of the vectors the operator acts on.
        batched_matvec: ``V -> A V`` where every leaf of ``V`` has a leading batch dimension; when omitted,
            or when it raises ``RuntimeError``, a loop over ``matvec``.
        rmatvec: ``u -> A^T u``; only for a non-symmetric operator.
        batched_rmatvec: the batched form of ``rmatvec``.
        symmetric: whether :math:`A = A^\\top`.
        psd: whether :math:`A` is symmetric positive semi-definite (implies ``symmetric``).

    Attributes:
        calls: operator products so far (:meth:`matvec`, :meth:`rmatvec`, one per column of :meth:`matmat`),
            shared with the views :attr:`T` and :meth:`shifted`.

    Example:
        >>> import torch
        >>> A = torch.tensor([[2.0, 1.0], [0.0, 4.0]])
        >>> op = LinearOperator.from_matrix(A)
        >>> op.symmetric, op.matvec({"x": torch.ones(2)})["x"], op.T.matvec({"x": torch.ones(2)})["x"]
        (False, tensor([3., 4.]), tensor([2., 5.]))
        >>> op.shifted(1.0).matvec({"x": torch.ones(2)})["x"], op.calls
        (tensor([4., 5.]), 3)
    """

    def __init__(
        self,
        matvec: Product,
        like: Tree,
        *,
        batched_matvec: Product | None = None,
        rmatvec: Product | None = None,
        batched_rmatvec: Product | None = None,
        symmetric: bool = True,
        psd: bool = False,
    ) -> None:
        if psd and not symmetric:
            raise InvalidArgumentError("psd=True needs symmetric=True: a positive semi-definite operator is symmetric")
        if symmetric and (rmatvec is not None or batched_rmatvec is not None):
            raise InvalidArgumentError(
                "rmatvec was given for a symmetric operator, whose transpose product is matvec; drop it or pass "
                "symmetric=False"
            )
        self._matvec = matvec
        self._batched = batched_matvec
        self._rmatvec = matvec if symmetric else rmatvec
        self._rbatched = batched_matvec if symmetric else batched_rmatvec
        self.like = tree.detach(like)
        self._symmetric = bool(symmetric)
        self._psd = bool(psd)
        self._calls = _Calls()

    # -- constructors ------------------------------------------------------------------------------
    @classmethod
    def hessian(cls, lin: Linearization) -> LinearOperator:
        """The Hessian :math:`\\nabla^2_{ww} L` of a linearized loss (:func:`nestopt.autodiff.linearize`)."""
        return cls(lin.hvp, lin.like, batched_matvec=lin.hvp_batched, symmetric=True)

    @classmethod
    def from_matrix(
        cls, A: Tensor, like: Tree | None = None, *, symmetric: bool | None = None, psd: bool = False
    ) -> LinearOperator:
        """The operator of a dense ``n x n`` matrix acting on trees with ``n`` entries (default ``{"x": (n,)}``).

        ``symmetric=None`` tags the operator symmetric when ``psd`` is set or ``A`` equals its transpose exactly.
        """
        if not isinstance(A, Tensor) or A.dim() != 2 or A.shape[0] != A.shape[1]:
            raise ShapeMismatchError(f"A must be a square matrix, got {getattr(A, 'shape', A)!r}")
        if not A.is_floating_point():
            raise InvalidArgumentError(f"A must have a real floating dtype, got {A.dtype}")
        n = A.shape[0]
        like = {"x": torch.zeros(n, dtype=A.dtype, device=A.device)} if like is None else like
        spec = tree.flatten(like)[1]
        if spec.numel != n:
            raise ShapeMismatchError(f"like has {spec.numel} entries but A is {n} x {n}")
        sym = (psd or bool(torch.equal(A, A.mT))) if symmetric is None else bool(symmetric)

        def product(M: Tensor) -> tuple[Product, Product]:
            def one(v: Tree) -> Tree:
                return tree.unflatten(M @ tree.flatten(v)[0], spec)

            def batch(vs: Tree) -> Tree:
                rows = torch.cat([vs[key].reshape(vs[key].shape[0], -1) for key in spec.keys], dim=1)
                return tree.unflatten(rows @ M.mT, spec)

            return one, batch

        mv, bmv = product(A)
        if sym:
            return cls(mv, like, batched_matvec=bmv, symmetric=True, psd=psd)
        rmv, brmv = product(A.mT)
        return cls(mv, like, batched_matvec=bmv, rmatvec=rmv, batched_rmatvec=brmv, symmetric=False, psd=psd)

    # -- tags and shape ----------------------------------------------------------------------------
    @property
    def symmetric(self) -> bool:
        return self._symmetric

    @property
    def psd(self) -> bool:
        return self._psd

    @property
    def has_transpose(self) -> bool:
        """Whether :math:`A^\\top u` is available (symmetric, or ``rmatvec`` given)."""
        return self._rmatvec is not None

    @property
    def calls(self) -> int:
        return self._calls.n

    @calls.setter
    def calls(self, value: int) -> None:
        self._calls.n = int(value)

    @property
    def numel(self) -> int:
        return tree.numel(self.like)

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.like.values())).dtype

    @property
    def device(self) -> torch.device:
        return next(iter(self.like.values())).device

    # -- products ----------------------------------------------------------------------------------
    def matvec(self, v: Tree) -> Tree:
        """``A v``. The result never shares memory with ``v`` (solvers update it in place)."""
        self._calls.n += 1
        return _fresh(self._matvec(v), v)

    def rmatvec(self, u: Tree) -> Tree:
        """``A^T u`` (``A u`` for a symmetric operator)."""
        if self._rmatvec is None:
            raise UnsupportedError(
                "this non-symmetric operator has no transpose product; build it with rmatvec= (u -> A^T u)"
            )
        self._calls.n += 1
        return _fresh(self._rmatvec(u), u)

    def matmat(self, vs: Tree) -> Tree:
        """Products with a batch of vectors (leading dimension of every leaf)."""
        return self._batch(self._matvec, self._batched, vs)

    def rmatmat(self, us: Tree) -> Tree:
        """Transpose products with a batch of vectors."""
        if self._rmatvec is None:
            raise UnsupportedError("this non-symmetric operator has no transpose product; build it with rmatvec=")
        return self._batch(self._rmatvec, self._rbatched, us)

    def _batch(self, one: Product, batched: Product | None, vs: Tree) -> Tree:
        n = int(next(iter(vs.values())).shape[0])
        self._calls.n += n
        if batched is not None:
            try:
                return batched(vs)
            except RuntimeError:  # an op without a batching rule: fall back to a loop
                pass
        cols = [one({k: v[i] for k, v in vs.items()}) for i in range(n)]
        return {k: torch.stack([c[k] for c in cols]) for k in self.like}

    # -- views -------------------------------------------------------------------------------------
    def _view(
        self, mv: Product, bmv: Product | None, rmv: Product | None, brmv: Product | None, psd: bool
    ) -> LinearOperator:
        if self._symmetric:
            view = LinearOperator(mv, self.like, batched_matvec=bmv, symmetric=True, psd=psd)
        else:
            view = LinearOperator(mv, self.like, batched_matvec=bmv, rmatvec=rmv, batched_rmatvec=brmv,
                                  symmetric=False)  # fmt: skip
        view._calls = self._calls
        return view

    @property
    def T(self) -> LinearOperator:
        """The transpose :math:`A^\\top` (the operator itself when symmetric); products count here too."""
        if self._symmetric:
            return self
        if self._rmatvec is None:
            raise UnsupportedError("this non-symmetric operator has no transpose product; build it with rmatvec=")
        return self._view(self._rmatvec, self._rbatched, self._matvec, self._batched, psd=False)

    def shifted(self, sigma: float) -> LinearOperator:
        """:math:`A + \\sigma I` (damping); tags are kept, ``psd`` only for :math:`\\sigma \\ge 0`."""
        s = float(sigma)

        def shift(p: Product) -> Product:
            return lambda v: tree.axpy(s, v, p(v))

        def maybe(p: Product | None) -> Product | None:
            return None if p is None else shift(p)

        psd = self._psd and s >= 0.0
        return self._view(shift(self._matvec), maybe(self._batched), maybe(self._rmatvec), maybe(self._rbatched), psd)

    def __repr__(self) -> str:
        tags = "psd" if self._psd else ("symmetric" if self._symmetric else "general")
        return f"LinearOperator({self.numel} x {self.numel}, {tags})"
