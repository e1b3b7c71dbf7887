"""The ``reduce`` hook of the implicit hypergradient: where a data-parallel run averages over its ranks.

When the inner and outer losses are means over ranks (each rank holds a shard of every batch), the global
hypergradient needs every quantity computed from local data averaged before it is used: the outer gradient
in the weights, every curvature product inside the linear solve, and the hyperparameter-sized result
(direct term plus mixed term). A ``reduce`` is a function ``tree -> tree`` that does this
(:func:`nestopt.distributed.all_reduce_mean`); ``None`` is the identity of a single process.

Every rank then holds bit-identical vectors, so a solver's decisions (CG's step lengths, a stopping test, a
divergence check) see identical data and every rank runs the same iterations.
"""

from __future__ import annotations

from collections.abc import Callable

from nestopt.errors import InvalidArgumentError
from nestopt.linalg import LinearOperator
from nestopt.tree import Tree

__all__ = ["CountedReduce", "Reduce", "counted", "reduced_operator"]

Reduce = Callable[[Tree], Tree]
"""``tree -> tree``: the mean of a tree over the ranks of a data-parallel run (same keys and shapes)."""


class CountedReduce:
    """A reduce that counts its calls and the bytes of the trees handed to it (for ``info.extra``)."""

    def __init__(self, reduce: Reduce | None) -> None:
        self.fn = reduce
        self.calls = 0
        self.bytes = 0

    def __call__(self, value: Tree) -> Tree:
        if self.fn is None:
            return value
        self.calls += 1
        self.bytes += sum(t.numel() * t.element_size() for t in value.values())
        return self.fn(value)

    def extra(self) -> dict[str, object]:
        """The diagnostics of a hypergradient that used this reduce (empty without one)."""
        if self.fn is None:
            return {}
        return {"reduce": getattr(self.fn, "__name__", repr(self.fn)), "reduce_calls": self.calls,
                "reduce_bytes": self.bytes}  # fmt: skip


def counted(reduce: Reduce | None) -> CountedReduce:
    """Wrap ``reduce`` (or the identity, for ``None``) in a counter; checks that it is callable."""
    if reduce is not None and not callable(reduce):
        raise InvalidArgumentError(
            f"reduce must be a function tree -> tree such as nestopt.distributed.all_reduce_mean, got {reduce!r}"
        )
    return CountedReduce(reduce)


def reduced_operator(op: LinearOperator, reduce: CountedReduce) -> LinearOperator:
    """The symmetric ``op`` (a Hessian) with every product, single and batched, reduced over the ranks; ``op``
    itself without a reduce."""
    if reduce.fn is None:
        return op
    return LinearOperator(
        lambda v: reduce(op.matvec(v)), op.like, batched_matvec=lambda vs: reduce(op.matmat(vs)),
        symmetric=op.symmetric, psd=op.psd,
    )  # fmt: skip
