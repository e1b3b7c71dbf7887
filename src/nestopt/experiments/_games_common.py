"""Helpers shared by the differentiable-games experiments (not an experiment module: the leading underscore
keeps it out of discovery)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["PAPER", "grid_minima", "nelder_mead"]

PAPER = "Lorraine, Acuna, Vicol, Duvenaud. Complex Momentum for Optimization in Games. AISTATS 2022"


def grid_minima(values: Tensor, k: int) -> Tensor:
    """The indices ``(k', 2)`` (``k' <= k``) of the ``k`` smallest local minima of a 2-d grid of values, where
    a point is a local minimum when none of its (up to 8) neighbours is smaller; best first.

    Example:
        >>> v = torch.tensor([[3.0, 2.0, 3.0], [4.0, 5.0, 4.0], [1.0, 4.0, 5.0]])
        >>> grid_minima(v, 5).tolist()
        [[2, 0], [0, 1]]
    """
    padded = torch.nn.functional.pad(values[None, None], (1, 1, 1, 1), value=float("inf"))[0, 0]
    rows, cols = values.shape
    neighbours = torch.stack(
        [padded[1 + i : 1 + i + rows, 1 + j : 1 + j + cols] for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0)]
    )
    minima = (values <= neighbours.min(dim=0).values).nonzero()
    order = torch.argsort(values[minima[:, 0], minima[:, 1]])
    return minima[order[:k]]


def nelder_mead(
    f: Callable[[Tensor], Tensor],
    x0: Tensor,
    step: Tensor,
    lower: Tensor,
    upper: Tensor,
    iterations: int,
) -> tuple[Tensor, Tensor]:
    """Minimize ``B`` independent functions at once with the Nelder-Mead simplex method inside a box.

    ``f`` maps points ``(N, B, d)`` to values ``(N, B)`` (problem ``b`` sees column ``b``). Problem ``b`` starts
    from the simplex ``x0[b]`` and ``x0[b] + step[b, i] e_i``; every iteration evaluates the reflected,
    expanded and both contracted points and the shrunk simplex in one call of ``f``, then takes for each
    problem the standard step (reflection 1, expansion 2, contraction 1/2, shrink 1/2). Points are clipped to
    ``[lower, upper]``. The method needs no derivatives and follows narrow, non-smooth valleys, such as those of
    a spectral radius at coalescing eigenvalues, where grid refinement stalls.

    Args:
        f: the batched objective.
        x0, step: ``(B, d)`` starting points and initial simplex edges.
        lower, upper: ``(d,)`` bounds of the box.
        iterations: how many simplex steps every problem takes.

    Returns:
        ``(x, value)``: each problem's best point ``(B, d)`` and value ``(B,)``.

    Example:
        >>> f = lambda x: ((x - torch.tensor([1.0, -2.0], dtype=x.dtype)) ** 2).sum(-1)
        >>> x, v = nelder_mead(f, torch.zeros(3, 2, dtype=torch.float64), torch.ones(3, 2, dtype=torch.float64),
        ...                    torch.full((2,), -5.0, dtype=torch.float64), torch.full((2,), 5.0, dtype=torch.float64), 100)
        >>> torch.allclose(x, torch.tensor([[1.0, -2.0]] * 3, dtype=torch.float64)), bool(v.max() < 1e-12)
        (True, True)
    """
    n, d = x0.shape
    eye = torch.eye(d, dtype=x0.dtype, device=x0.device)
    simplex = torch.cat([x0[:, None], x0[:, None] + step[:, None] * eye], dim=1).clamp(lower, upper)  # (B, d+1, d)
    values = f(simplex.transpose(0, 1)).transpose(0, 1)  # (B, d+1)
    rows = torch.arange(n, device=x0.device)
    for _ in range(iterations):
        order = torch.argsort(values, dim=1)
        simplex, values = simplex[rows[:, None], order], values[rows[:, None], order]
        best, second, worst = values[:, 0], values[:, -2], values[:, -1]
        x_best, x_worst = simplex[:, 0], simplex[:, -1]
        centroid = simplex[:, :-1].mean(dim=1)
        trial = torch.stack(
            [
                centroid + (centroid - x_worst),  # reflection
                centroid + 2.0 * (centroid - x_worst),  # expansion
                centroid + 0.5 * (centroid - x_worst),  # outside contraction
                centroid + 0.5 * (x_worst - centroid),  # inside contraction
                *(x_best + 0.5 * (simplex[:, i] - x_best) for i in range(1, d + 1)),  # shrink
            ]
        ).clamp(lower, upper)  # (4 + d, B, d)
        tv = f(trial)
        fr, fe, foc, fic = tv[0], tv[1], tv[2], tv[3]
        expand = (fr < best) & (fe < fr)
        reflect = ((fr < best) & ~expand) | ((fr >= best) & (fr < second))
        outside = (fr >= second) & (fr < worst) & (foc <= fr)
        inside = (fr >= worst) & (fic < worst)
        shrink = ~(expand | reflect | outside | inside)
        new, new_value = x_worst.clone(), worst.clone()
        for mask, idx in ((reflect, 0), (expand, 1), (outside, 2), (inside, 3)):
            new[mask], new_value[mask] = trial[idx][mask], tv[idx][mask]
        simplex = simplex.clone()
        simplex[:, -1], values = new, torch.cat([values[:, :-1], new_value[:, None]], dim=1)
        simplex[shrink, 1:] = trial[4:].transpose(0, 1)[shrink]
        values[shrink, 1:] = tv[4:].transpose(0, 1)[shrink]
    k = torch.argmin(values, dim=1)
    return simplex[rows, k], values[rows, k]
