"""Bifurcation points of a game's learning dynamics, found by maximizing the finite-time Lyapunov exponent.

Near the boundary between two basins of attraction, trajectories that start close together separate: the
finite-time exponent :math:`\\lambda_T(\\theta_0)` (:func:`~nestopt.games.diversity.lyapunov`) peaks there.
Gradient ascent on it,

.. math::  \\theta_0 \\leftarrow \\theta_0 + \\mathrm{Adam}\\big(\\nabla_{\\theta_0} \\lambda_T(\\theta_0)\\big),

with the gradient taken through the trajectory and the tangent propagation, walks to such a boundary; the
best point seen is the bifurcation point, from which Game Ridge Rider branches. The starting tangents are
held fixed along the ascent, so that the objective is one smooth function of :math:`\\theta_0`.

References:
    Lorraine, Vicol, Parker-Holder, Kachman, Metz, Foerster. Lyapunov Exponents for Diversity in
    Differentiable Games. AAMAS 2022.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from nestopt import tree
from nestopt._progress import progress
from nestopt._validate import nonnegative, positive_int
from nestopt.games.diversity.lyapunov import _Layout, _tangents, lyapunov
from nestopt.tree import Tree

if TYPE_CHECKING:
    from nestopt.games.game import Game, Params

__all__ = ["BifurcationResult", "find_bifurcation"]


@dataclass
class BifurcationResult:
    """The bifurcation point found by exponent ascent, and the ascent's record.

    Attributes:
        params: the best point seen (joint tree; with copies, each copy's own best).
        exponent: the top exponent there (a float; with copies, a ``(E,)`` tensor).
        start_exponent: the top exponent at the start.
        history: the top exponent at every ascent iteration (with copies: their mean).
        path: the points of the ascent (detached joint trees), the start first.
        iterations: ascent iterations run.
        grads, hvps: gradient and Jacobian-vector products spent (the backward passes not counted).
    """

    params: Tree
    exponent: float | Tensor
    start_exponent: float | Tensor
    history: list[float] = field(default_factory=list)
    path: list[Tree] = field(default_factory=list)
    iterations: int = 0
    grads: int = 0
    hvps: int = 0

    def as_dict(self) -> dict[str, Any]:
        def num(x: float | Tensor) -> Any:
            return x.tolist() if isinstance(x, Tensor) else x

        return {"exponent": num(self.exponent), "start_exponent": num(self.start_exponent), "history": self.history,
                "iterations": self.iterations, "grads": self.grads, "hvps": self.hvps}  # fmt: skip


def find_bifurcation(
    game: Game,
    start: Params | None = None,
    *,
    steps: int = 50,
    lr: float = 0.05,
    horizon: int = 50,
    map_lr: float = 0.1,
    rule: Any = None,
    batch: Any = None,
    tangents: list[Tree] | Tensor | None = None,
    seed: int | torch.Generator = 0,
    copies: bool = False,
    show_progress: bool | None = None,
) -> BifurcationResult:
    """Maximize the top finite-time Lyapunov exponent over the starting point, by Adam ascent.

    Args:
        game: the game.
        start: where the ascent starts (default: the game's state).
        steps: ascent iterations.
        lr: Adam's learning rate for the ascent.
        horizon: the exponent's horizon :math:`T`.
        map_lr: the learning rate :math:`\\eta` of the learning map :math:`F = \\theta - \\eta d(\\theta)`.
        rule: the learning rule (``None``: naive; :class:`~nestopt.games.LookAhead`, :class:`~nestopt.games.LOLA`).
        batch: the batch the losses see.
        tangents: the fixed starting tangent (random from ``seed`` when ``None``).
        seed: seed of the random tangent.
        copies: the game holds independent copies (see :func:`~nestopt.games.diversity.lyapunov`); each
            climbs on its own.
        show_progress: draw a progress bar.

    Returns:
        A :class:`BifurcationResult`.

    Example:
        >>> import torch
        >>> from nestopt.games import zoo
        >>> from nestopt.games.diversity import find_bifurcation
        >>> game = zoo.small_ipd(0.6, init=0.0, dtype=torch.float64)   # basins of defection and tit-for-tat
        >>> res = find_bifurcation(game, steps=10, lr=0.1, horizon=30, map_lr=1.0)
        >>> res.exponent > res.start_exponent
        True
    """
    positive_int("steps", steps)
    nonnegative("lr", lr, positive=True)
    positive_int("horizon", horizon)
    base = game.state if start is None else game._joint_tree(start, "start")
    point = {k: v.detach().clone().requires_grad_(True) for k, v in base.items()}
    layout = _Layout(point, copies)
    fixed = _tangents(game, layout, 1, tangents, seed, next(iter(point.values())))
    opt = torch.optim.Adam(list(point.values()), lr=lr, maximize=True)
    grads0, hvps0 = game.counter.grads, game.counter.hvps
    best: Tree = tree.detach(point)
    best_value: Tensor | None = None
    start_value: Tensor | None = None
    history: list[float] = []
    path = [tree.clone(point)]
    iterations = 0
    bar = progress(range(steps + 1), desc="exponent ascent", enabled=show_progress)
    for it in bar:
        res = lyapunov(game, point, steps=horizon, lr=map_lr, rule=rule, batch=batch, tangents=fixed,
                       copies=copies)  # fmt: skip
        value = res.exponent.detach().reshape(-1)
        if start_value is None:
            start_value = value.clone()
        history.append(float(value.mean()))
        bar.set_postfix(f"exponent {float(value.mean()):.4g}")
        improved = torch.ones_like(value, dtype=torch.bool) if best_value is None else value > best_value
        best_value = value if best_value is None else torch.where(improved, value, best_value)
        rows = layout.matrix(tree.detach(point))
        best_rows = layout.matrix(best)
        best = layout.tree(torch.where(improved[:, None], rows, best_rows))
        if it == steps:  # the last point is evaluated, not stepped from
            break
        opt.zero_grad(set_to_none=True)
        res.exponent.sum().backward()
        opt.step()
        iterations += 1
        path.append(tree.clone(point))
    assert best_value is not None and start_value is not None
    scalar = not copies
    return BifurcationResult(
        params=best,
        exponent=float(best_value[0]) if scalar else best_value,
        start_exponent=float(start_value[0]) if scalar else start_value,
        history=history,
        path=path,
        iterations=iterations,
        grads=game.counter.grads - grads0,
        hvps=game.counter.hvps - hvps0,
    )
