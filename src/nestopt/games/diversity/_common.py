"""Pieces shared by the diversity searches: a loss on flat vectors, sign conventions, the warning class."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from nestopt import autodiff, linalg, tree
from nestopt.autodiff import Counter
from nestopt.errors import InvalidArgumentError, NestoptWarning, NonFiniteError
from nestopt.tree import Tree

__all__ = ["DiversityWarning", "FlatLoss", "canonical_sign", "warn"]

TreeLoss = Callable[[Tree], Tensor]


class DiversityWarning(NestoptWarning, RuntimeWarning):
    """A diversity search started somewhere it should not (not near a stationary point), found nothing to
    branch on, or stopped at its budget."""


def warn(message: str) -> None:
    """Emit a :class:`DiversityWarning` pointing at the caller of the public function."""
    warnings.warn(message, DiversityWarning, stacklevel=3)


def canonical_sign(v: Tensor) -> Tensor:
    """``v`` or ``-v``: the one whose entry of largest magnitude is positive (first such entry on ties).

    Eigensolvers return eigenvectors with an arbitrary sign; this convention (scikit-learn's ``svd_flip``)
    makes "ridge ``i`` with sign ``+``" mean the same direction in every run.
    """
    idx = int(torch.argmax(v.abs()))
    return -v if float(v[idx]) < 0 else v


class FlatLoss:
    """A loss over a tree, evaluated at flat vectors (the tree's leaves concatenated in key order).

    Args:
        loss: ``loss(tree) -> scalar``.
        like: a tree with the shapes, dtypes and devices of the points.
        counter: where gradient and Hessian-vector products are counted.
    """

    def __init__(self, loss: TreeLoss, like: Mapping[str, Tensor], counter: Counter | None = None) -> None:
        if not callable(loss):
            raise InvalidArgumentError(f"loss must be a callable loss(tree) -> scalar, got {type(loss).__name__}")
        like = autodiff.check_tree(like, "start")
        self.loss = loss
        vec, self.spec = tree.flatten(tree.detach(like))
        self.dtype, self.device = vec.dtype, vec.device
        self.counter = counter if counter is not None else Counter()

    @property
    def numel(self) -> int:
        return self.spec.numel

    def tree(self, x: Tensor) -> Tree:
        return tree.unflatten(x, self.spec)

    def flat(self, t: Mapping[str, Tensor]) -> Tensor:
        return tree.flatten(t)[0].detach()

    def _triple(self, p: Tree, h: Tree, b: object) -> Tensor:
        return self.loss(p)

    def value(self, x: Tensor) -> float:
        with torch.no_grad():
            v = autodiff.check_loss_value(self.loss(self.tree(x)), "loss")
        if not torch.isfinite(v):
            raise NonFiniteError(f"the loss is {float(v)} at the current point")
        return float(v)

    def value_and_grad(self, x: Tensor) -> tuple[float, Tensor]:
        point = {k: v.detach().requires_grad_(True) for k, v in self.tree(x).items()}
        with torch.enable_grad():
            v = autodiff.check_loss_value(self.loss(point), "loss")
            grads = autodiff.vjp([v], list(point.values()))
        self.counter.grads += 1
        g = torch.cat([gi.reshape(-1) for gi in grads]).detach()
        if not (torch.isfinite(v) and bool(torch.isfinite(g).all())):
            raise NonFiniteError("the loss or its gradient is NaN or infinite at the current point")
        return float(v.detach()), g

    def hessian(self, x: Tensor) -> tuple[linalg.LinearOperator, float, Tensor]:
        """The Hessian at ``x`` as a symmetric operator on trees (products counted), the loss and its gradient."""
        lin = autodiff.linearize(self._triple, self.tree(x), {}, None, counter=self.counter, name="loss", seed=0)
        return linalg.LinearOperator.hessian(lin), float(lin.value), self.flat(lin.grad)
