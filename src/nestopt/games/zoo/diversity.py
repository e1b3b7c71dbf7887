"""Problems for the diversity searches: a 2-D surface with easy and hard minima, and the lever game.

* :func:`ridge_surface`: a hill at the origin (a saddle of the loss: a maximum) with two wide, shallow wells on
  the steep axis and two narrow, deep wells (the global minima) on the shallow one. Gradient descent from
  near the hill's top escapes along the steep direction and lands in the wide wells; the global minima lie
  at the end of the other ridge (after Figure 1 of Parker-Holder et al., 2020).
* :func:`lever_game`: the zero-shot coordination lever game of Hu et al. (2020), as Ridge Rider uses it: two
  players each pull one of ``n`` levers and get the lever's payoff if they pull the same one.

References:
    Parker-Holder et al. Ridge Rider: Finding Diverse Solutions by Following Eigenvectors of the Hessian.
    NeurIPS 2020.
    Hu, Lerer, Peysakhovich, Foerster. "Other-Play" for Zero-Shot Coordination. ICML 2020.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.games.game import Game
from nestopt.games.zoo.classic import Init, make_init
from nestopt.tree import Tree

__all__ = ["LEVER_PAYOFFS", "Surface", "lever_game", "ridge_surface"]

LEVER_PAYOFFS = (1.0,) * 7 + (0.8, 0.8, 0.6)
"""Seven levers of payoff 1.0, two of 0.8 and one unique lever of 0.6 (Parker-Holder et al., 2020)."""

# hill height and widths (x: shallow, y: steep); wells (center x, center y, depth, width); confinement
_HILL = (3.0, 2.5, 0.8)
_WELLS = ((2.5, 0.0, 5.0, 0.35), (-2.5, 0.0, 5.0, 0.35), (0.0, 2.0, 2.0, 0.8), (0.0, -2.0, 2.0, 0.8))
_CONFINE = 0.05


@dataclass(frozen=True)
class Surface:
    """A 2-D loss surface with known minima.

    Attributes:
        loss: ``loss(tree) -> scalar`` over the tree ``{"xy": (2,)}``.
        value: the same function on points ``(..., 2)`` (batched).
        start: the central saddle, ``{"xy": zeros(2)}``.
        minima: ``(m, 2)`` the local minima.
        values: ``(m,)`` the loss at each.
        global_minima: the indices of the global minima.
    """

    loss: Callable[[Tree], Tensor]
    value: Callable[[Tensor], Tensor]
    start: Tree
    minima: Tensor
    values: Tensor
    global_minima: tuple[int, ...]

    def nearest_minimum(self, xy: Tensor) -> Tensor:
        """The index of the minimum nearest each point of ``xy`` (``(..., 2)``)."""
        return torch.cdist(xy.reshape(-1, 2).to(self.minima.dtype), self.minima).argmin(dim=1).reshape(xy.shape[:-1])


def _surface_value(xy: Tensor) -> Tensor:
    x, y = xy[..., 0], xy[..., 1]
    height, sx, sy = _HILL
    out = height * torch.exp(-0.5 * (x**2 / sx**2 + y**2 / sy**2)) + _CONFINE * (x * x + y * y)
    for cx, cy, depth, width in _WELLS:
        out = out - depth * torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * width**2))
    return out


@functools.cache
def _minima() -> Tensor:
    """The surface's minima (float64), by Newton's method from the well centers."""
    minima = []
    for cx, cy, _, _ in _WELLS:
        p = torch.tensor([cx, cy], dtype=torch.float64)
        for _ in range(50):
            q = p.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(_surface_value(q), q, create_graph=True)
            h = torch.stack([torch.autograd.grad(g[i], q, retain_graph=True)[0] for i in range(2)])
            step = torch.linalg.solve(h.detach(), g.detach())
            p = p - step
            if float(step.abs().max()) < 1e-13:
                break
        minima.append(p)
    return torch.stack(minima)


def ridge_surface(*, dtype: torch.dtype | None = None) -> Surface:
    """The surface of the ``ridge-rider-toy`` experiment (see the module docstring).

    .. math::

        L(x, y) = 3 e^{-\\frac12 (x^2 / 2.5^2 + y^2 / 0.8^2)} + 0.05 (x^2 + y^2)
        - \\sum_k d_k e^{-\\|(x, y) - c_k\\|^2 / 2 s_k^2}

    with wells :math:`c = (\\pm 2.5, 0)`, :math:`d = 5`, :math:`s = 0.35` (narrow, deep: the global minima) and
    :math:`c = (0, \\pm 2)`, :math:`d = 2`, :math:`s = 0.8` (wide, shallow). The origin is a stationary point
    with Hessian eigenvalues about -6.0 (along y) and -0.11 (along x). The minima are located by Newton's
    method from the well centers.

    Example:
        >>> s = ridge_surface(dtype=torch.float64)
        >>> s.minima.round(decimals=3).tolist(), s.global_minima
        ([[2.512, 0.0], [-2.512, 0.0], [0.0, 2.05], [0.0, -2.05]], (0, 1))
    """
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    mins = _minima()
    values = _surface_value(mins)
    best = float(values.min())
    glob = tuple(i for i, v in enumerate(values.tolist()) if v <= best + 1e-9)
    return Surface(
        loss=lambda t: _surface_value(t["xy"]),
        value=_surface_value,
        start={"xy": torch.zeros(2, dtype=dtype)},
        minima=mins.to(dtype),
        values=values.to(dtype),
        global_minima=glob,
    )


def lever_game(
    payoffs: Sequence[float] = LEVER_PAYOFFS,
    *,
    init: Init = 0.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> Game:
    """The lever game: both players pick a lever; if it is the same one, both get its payoff.

    Each player's policy is :math:`\\pi_i = \\mathrm{softmax}(\\theta_i)` over the ``n`` levers; both minimize
    the common loss :math:`L = -\\sum_a \\pi_1(a) \\pi_2(a) r_a`. Self-play can settle on any lever, and
    among levers of equal payoff on an arbitrary one, so that two independently trained pairs rarely
    match: the *cross-play* value (player 1 of one run with player 2 of another) is what zero-shot
    coordination asks to maximize. The full-support fixed point is :math:`\\pi(a) \\propto 1/r_a` for both
    players (the symmetric saddle).

    :attr:`Game.info` holds ``"payoffs"`` (a tensor), ``"loss"`` (the common loss over the joint tree, for
    :func:`~nestopt.games.diversity.ridge_rider`), ``"policies"`` (joint tree -> the two policies) and
    ``"cross_play"`` (``(joint_a, joint_b) -> `` the expected payoff of player 1 of ``a`` with player 2 of
    ``b``, averaged with the swapped pairing).

    Args:
        payoffs: the levers' payoffs (default :data:`LEVER_PAYOFFS`).
        init: the starting logits (a number, two tensors, or ``None`` for N(0, 1) draws).
        generator: for the random start.
        dtype: dtype of the logits.

    Example:
        >>> game = lever_game(dtype=torch.float64)
        >>> round(-float(game.losses()[0]), 4)   # uniform policies: the mean payoff / n
        0.092
    """
    r = torch.as_tensor(list(payoffs), dtype=dtype if dtype is not None else torch.get_default_dtype())
    if r.dim() != 1 or len(r) < 2:
        raise ShapeMismatchError(f"payoffs must list at least two levers, got {list(payoffs)!r}")
    if bool((r <= 0).any()):
        raise InvalidArgumentError(f"payoffs must be positive, got {r.tolist()}")
    n = len(r)
    t1, t2 = make_init(init, [(n,), (n,)], generator=generator, dtype=r.dtype)

    def value(p1: Tensor, p2: Tensor) -> Tensor:
        return (p1 * p2 * r).sum(dim=-1)

    def losses(p: list[Tree], batch: Any) -> list[Tensor]:
        v = value(torch.softmax(p[0]["logits"], -1), torch.softmax(p[1]["logits"], -1))
        return [-v, -v]

    game = Game([{"logits": t1}, {"logits": t2}], losses, names=["player1", "player2"])

    def policies(joint: Tree) -> tuple[Tensor, Tensor]:
        return torch.softmax(joint["player1/logits"], -1), torch.softmax(joint["player2/logits"], -1)

    def cross_play(a: Tree, b: Tree) -> float:
        pa, pb = policies(a), policies(b)
        return float(0.5 * (value(pa[0], pb[1]) + value(pb[0], pa[1])))

    game.info.update({"payoffs": r, "loss": lambda joint: game.evaluate(joint)[0], "policies": policies,
                      "cross_play": cross_play})  # fmt: skip
    return game
