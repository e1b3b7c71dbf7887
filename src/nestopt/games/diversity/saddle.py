"""Where diversity searches start: the maximally invariant saddle of a loss, the nearest fixed point of a game.

**Saddle of a loss** (Ridge Rider's start), found by minimizing the gradient norm:

.. math::  \\theta^{\\mathrm{MIS}} = \\arg\\min_\\theta \\; \\tfrac12 \\|\\nabla L(\\theta)\\|^2 \\;-\\; \\beta\\, \\mathcal{E}(\\theta)

from a symmetric start (the uniform policy, zero weights), where :math:`\\mathcal{E}` is an optional entropy of
the policies (for games on policies, it keeps the search away from deterministic policies, where gradients
vanish too) and :math:`\\beta` its weight. The gradient of the first term is :math:`H \\nabla L`: one
Hessian-vector product per step. The search runs Adam on the point.

**Fixed point of a game** (a branching point for Game Ridge Rider): the minimizer of the Hamiltonian
:math:`\\tfrac12\\|\\xi(\\theta)\\|^2` nearest the start (:func:`find_fixed_point`), whose gradient is
:math:`J^\\top \\xi`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from nestopt import tree
from nestopt._progress import progress
from nestopt._validate import nonnegative, positive_int
from nestopt.autodiff import check_loss_value, check_tree
from nestopt.errors import InvalidArgumentError, NonFiniteError
from nestopt.games.diversity.dynamics import LearningMap
from nestopt.tree import Tree

if TYPE_CHECKING:
    from nestopt.games.game import Game, Params

__all__ = ["SaddleResult", "find_fixed_point", "find_saddle"]


@dataclass
class SaddleResult:
    """The point found, its gradient norm and loss, the steps taken and the gradient norm along the way."""

    params: Tree
    gradient_norm: float
    loss: float
    steps: int
    converged: bool
    history: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "params"}


def find_saddle(
    loss: Callable[[Tree], Tensor],
    start: Mapping[str, Tensor],
    *,
    entropy: Callable[[Tree], Tensor] | None = None,
    entropy_weight: float = 0.0,
    steps: int = 2000,
    lr: float = 0.01,
    tol: float = 1e-10,
    show_progress: bool | None = None,
) -> SaddleResult:
    """Minimize :math:`\\tfrac12\\|\\nabla L\\|^2 - \\beta \\mathcal{E}` from ``start`` (see the module docstring).

    Args:
        loss: ``loss(tree) -> scalar``.
        start: the starting point (a tree); start from the problem's most symmetric point.
        entropy: ``entropy(tree) -> scalar``, the policies' entropy, for games on policies.
        entropy_weight: :math:`\\beta \\ge 0`.
        steps: Adam steps at most.
        lr: Adam's learning rate.
        tol: stop once :math:`\\|\\nabla L\\| \\le` ``tol``.
        show_progress: draw a progress bar.

    Returns:
        A :class:`SaddleResult`; ``converged`` says whether the gradient norm reached ``tol``.

    Example:
        >>> import torch
        >>> from nestopt.games.diversity import find_saddle
        >>> loss = lambda p: ((p["w"] - 1.0) ** 2 - 1.0).pow(2).sum()   # a saddle (a maximum) at w = 1
        >>> res = find_saddle(loss, {"w": torch.tensor([0.9], dtype=torch.float64)}, lr=0.01, tol=1e-8)
        >>> round(float(res.params["w"]), 6), res.converged
        (1.0, True)
    """
    if not callable(loss):
        raise InvalidArgumentError(f"loss must be a callable loss(tree) -> scalar, got {type(loss).__name__}")
    if entropy is not None and not callable(entropy):
        raise InvalidArgumentError(f"entropy must be a callable entropy(tree) -> scalar, got {type(entropy).__name__}")
    start = check_tree(start, "start")
    weight = nonnegative("entropy_weight", entropy_weight)
    positive_int("steps", steps)
    nonnegative("lr", lr, positive=True)
    nonnegative("tol", tol)

    def objective(point: Tree) -> tuple[Tensor, Tensor]:
        value = check_loss_value(loss(point), "loss")
        grads = torch.autograd.grad(value, list(point.values()), create_graph=True, allow_unused=True)
        sq = sum(((torch.zeros_like(p) if g is None else g) ** 2).sum() for g, p in zip(grads, point.values()))
        sq = torch.as_tensor(sq)
        return sq, 0.5 * sq - (weight * entropy(point) if entropy is not None and weight > 0 else 0.0)

    return _minimize(objective, start, lambda p: float(loss(p)), steps, lr, tol, "saddle search", show_progress)


def find_fixed_point(
    game: Game,
    start: Params | None = None,
    *,
    batch: Any = None,
    steps: int = 2000,
    lr: float = 0.01,
    tol: float = 1e-10,
    show_progress: bool | None = None,
) -> SaddleResult:
    """The fixed point of a game nearest ``start``: minimize :math:`\\tfrac12\\|\\xi\\|^2` by Adam.

    Returns a :class:`SaddleResult` whose ``loss`` is the Hamiltonian :math:`\\tfrac12\\|\\xi\\|^2` at the point.

    Example:
        >>> import torch
        >>> from nestopt.games import zoo
        >>> from nestopt.games.diversity import find_fixed_point
        >>> game = zoo.matching_pennies(init=0.3, dtype=torch.float64)
        >>> res = find_fixed_point(game, lr=0.05, tol=1e-9)
        >>> [round(float(v), 6) for v in res.params.values()], res.converged
        ([0.0, 0.0], True)
    """
    positive_int("steps", steps)
    nonnegative("lr", lr, positive=True)
    nonnegative("tol", tol)
    fmap = LearningMap(game, 1.0, None, batch, what="the fixed-point search")
    base = tree.detach(game.state if start is None else game._joint_tree(start, "start"))
    fmap.check(base)

    def objective(point: Tree) -> tuple[Tensor, Tensor]:
        sq = torch.as_tensor(sum((v * v).sum() for v in fmap.direction(point).values()))
        return sq, 0.5 * sq

    return _minimize(objective, base, lambda p: float(game.hamiltonian(p, batch)), steps, lr, tol,
                     "fixed-point search", show_progress)  # fmt: skip


def _minimize(
    objective: Callable[[Tree], tuple[Tensor, Tensor]],
    start: Mapping[str, Tensor],
    final_value: Callable[[Tree], float],
    steps: int,
    lr: float,
    tol: float,
    desc: str,
    show_progress: bool | None,
) -> SaddleResult:
    """Adam on ``objective(point) -> (squared gradient norm, value to minimize)`` until the norm reaches ``tol``."""
    point = {k: v.detach().clone().requires_grad_(True) for k, v in start.items()}
    opt = torch.optim.Adam(list(point.values()), lr=lr)
    history: list[float] = []
    norm, n = float("inf"), steps
    for i in progress(range(steps), desc=desc, enabled=show_progress):
        with torch.enable_grad():
            sq, value = objective(point)
            norm = float(sq.detach().sqrt())
            if not math.isfinite(norm):
                raise NonFiniteError(f"the gradient norm became {norm} at step {i} of the {desc}; lower lr")
            history.append(norm)
            if norm <= tol:
                n = i
                break
            opt.zero_grad(set_to_none=True)
            value.backward()
        opt.step()
    params = tree.detach(point)
    with torch.no_grad():
        value_at = final_value(params)
    return SaddleResult(params, norm, value_at, n, norm <= tol, history)
