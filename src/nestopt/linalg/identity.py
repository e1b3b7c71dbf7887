"""The cheapest inverse-Hessian approximation: a multiple of the identity."""

from __future__ import annotations

from dataclasses import dataclass

from nestopt import tree
from nestopt._validate import nonnegative
from nestopt.linalg.base import LinearOperator, Solution, SolveInfo, Solver, Status
from nestopt.tree import Tree

__all__ = ["Identity"]


@dataclass
class Identity(Solver):
    """:math:`A^{-1} b \\approx \\alpha\\, b`: no operator products.

    This is the approximation behind one-step "greedy" hypergradients (Luketina et al., 2016) and the
    ``K = 0`` Neumann series. The status is ``MAX_ITERATIONS`` (a fixed approximation that checks
    nothing); ``residual=True`` spends one product to say how far it is from a solution. It ignores the
    operator, so a singular one changes nothing: the answer keeps the part of :math:`b` in the null space.

    Example:
        >>> import torch
        >>> from nestopt import linalg
        >>> op = linalg.LinearOperator(lambda v: v, like={"x": torch.zeros(2)})
        >>> linalg.Identity(alpha=0.5).solve(op, {"x": torch.ones(2)}).value["x"]
        tensor([0.5000, 0.5000])
    """

    uses_x0 = False

    alpha: float = 1.0
    residual: bool = False
    throw: bool = False

    def __post_init__(self) -> None:
        nonnegative("alpha", self.alpha, positive=True)

    def _solve(self, op: LinearOperator, b: Tree, x0: Tree | None) -> Solution:
        x = tree.scale(b, self.alpha)
        res = None
        if self.residual:
            res = self._relative_residual(op, x, b, tree.norm(b))
        return Solution(x, SolveInfo(Status.MAX_ITERATIONS, 0, res, 0, "fixed approximation alpha * I"))
