"""The inner learning rate as a hyperparameter (reachable only by differentiating the trajectory)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nestopt.errors import InvalidArgumentError
from nestopt.hparams.base import Family
from nestopt.optim import functional
from nestopt.tree import Tree

__all__ = ["LearningRate"]


class LearningRate(Family):
    """A log-parameterized inner learning rate :math:`\\eta = e^{\\lambda}`.

    A learning rate does not appear in the inner loss, so the implicit function theorem gives it no
    hypergradient: it acts only through the optimization trajectory. Use it with ``Unrolled`` or ``Forward``
    hypergradients whose optimizer reads it: :meth:`sgd` and :meth:`adam` build such optimizers.

    Example:
        >>> from nestopt import hparams
        >>> lr = hparams.LearningRate(init=0.1)
        >>> opt = lr.sgd(momentum=0.9)
        >>> round(float(lr.value(lr.init(prefixed=True))), 6)
        0.1
    """

    enters = frozenset({"trajectory"})

    def __init__(self, init: float = 0.1, *, name: str = "learning_rate") -> None:
        if not (isinstance(init, float | int) and init > 0 and math.isfinite(init)):
            raise InvalidArgumentError(f"init must be a positive finite learning rate, got {init!r}")
        self.init_value, self.name = float(init), name

    def init(self, prefixed: bool = False) -> Tree:
        value = {"log_lr": torch.tensor(math.log(self.init_value))}
        return {self.key(k): v for k, v in value.items()} if prefixed else value

    def value(self, hparams: Tree) -> Tensor:
        """:math:`\\eta = e^{\\lambda}` from the full hyperparameter tree."""
        return hparams[self.key("log_lr")].exp()

    def sgd(self, momentum: float = 0.0, *, nesterov: bool = False) -> functional.FunctionalOptimizer:
        """A differentiable SGD whose learning rate is this hyperparameter."""
        return functional.sgd(lr=self.value, momentum=momentum, nesterov=nesterov)

    def adam(self, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> functional.FunctionalOptimizer:
        """A differentiable Adam whose learning rate is this hyperparameter."""
        return functional.adam(lr=self.value, b1=b1, b2=b2, eps=eps)
