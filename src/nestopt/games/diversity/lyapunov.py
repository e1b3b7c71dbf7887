"""Finite-time Lyapunov exponents of a game's learning dynamics (Lorraine et al., AAMAS 2022).

For the learning map :math:`F(\\theta) = \\theta - \\eta\\, d(\\theta)` (:class:`LearningMap`: naive learning,
look-ahead or LOLA) the trajectory :math:`\\theta_{t+1} = F(\\theta_t)` carries tangent vectors along,
:math:`v_{t+1} = J_F(\\theta_t) v_t`. The top finite-time exponent is the average log growth of one
renormalized tangent, and the top ``k`` exponents come from ``k`` tangents re-orthonormalized by QR at every
step (Benettin et al., 1980):

.. math::

    J_F(\\theta_t) Q_t = Q_{t+1} R_t, \\qquad \\lambda_i(\\theta_0) = \\frac{1}{T} \\sum_{t=0}^{T-1} \\log |(R_t)_{ii}|.

Exponents are per step (natural log). Where nearby trajectories separate, on the boundary between two
basins of attraction, the exponent is large: maximizing it (:func:`~nestopt.games.diversity.find_bifurcation`)
finds bifurcation points. The computation keeps its autograd graph when the starting point requires grad,
so :math:`\\partial \\lambda / \\partial \\theta_0` is one backward pass (through the trajectory, the tangents
and the QR factorizations).

For a linear map :math:`F(\\theta) = A\\theta` the exponents tend to :math:`\\log |\\mu_i(A)|`, the logs of
the moduli of :math:`A`'s eigenvalues (the top one to the log of the spectral radius), as fast as
:math:`\\frac1T \\log \\sigma_i(A^T)`.

References:
    Lorraine, Vicol, Parker-Holder, Kachman, Metz, Foerster. Lyapunov Exponents for Diversity in
    Differentiable Games. AAMAS 2022.
    Benettin, Galgani, Giorgilli, Strelcyn. Lyapunov characteristic exponents for smooth dynamical systems.
    Meccanica, 1980.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from nestopt import tree
from nestopt._rng import generator
from nestopt._validate import nonnegative, positive_int
from nestopt.errors import InvalidArgumentError, NonFiniteError
from nestopt.games.diversity.dynamics import LearningMap
from nestopt.tree import Tree

if TYPE_CHECKING:
    from nestopt.games.game import Game, Params

__all__ = ["LyapunovResult", "lyapunov"]


@dataclass
class LyapunovResult:
    """Finite-time Lyapunov exponents and what they were computed from.

    Attributes:
        exponents: ``(k,)`` (with copies: ``(E, k)``) per-step exponents, largest first as the QR iteration orders them; differentiable
            with respect to the starting point when it required grad.
        vectors: the final orthonormal tangents (the top Lyapunov vectors at :math:`\\theta_T`), joint trees.
        growth: ``(steps, k)`` (``(steps, E, k)``) the per-step logs :math:`\\log|(R_t)_{ii}|` (detached).
        final: :math:`\\theta_T` (detached joint tree).
        trajectory: :math:`\\theta_0, \\dots, \\theta_T` (detached), when asked for.
        steps, lr: the horizon and the learning rate.
        grads, hvps: gradient and Jacobian-vector products spent.
    """

    exponents: Tensor
    vectors: list[Tree]
    growth: Tensor
    final: Tree
    trajectory: list[Tree] | None
    steps: int
    lr: float
    grads: int
    hvps: int

    @property
    def exponent(self) -> Tensor:
        """The top exponent (per copy with ``copies=True``)."""
        return self.exponents[..., 0]

    def as_dict(self) -> dict[str, Any]:
        return {"exponents": self.exponents.detach().tolist(), "steps": self.steps, "lr": self.lr,
                "grads": self.grads, "hvps": self.hvps}  # fmt: skip


def _start(game: Game, params: Params | None) -> tuple[Tree, bool]:
    point = game.state if params is None else game._joint_tree(params, "params")
    differentiable = params is not None and any(v.requires_grad for v in point.values())
    if not differentiable:
        point = {k: v.detach() for k, v in point.items()}
    return dict(point), differentiable


class _Layout:
    """Joint trees as ``(E, n)`` matrices: one row per independent copy (``E = 1`` without copies)."""

    def __init__(self, point: Tree, copies: bool) -> None:
        self.keys = list(point)
        self.shapes = [point[k].shape for k in self.keys]
        if copies:
            lead = {s[0] if len(s) else None for s in self.shapes}
            if len(lead) != 1 or None in lead:
                raise InvalidArgumentError(
                    "copies=True needs every state tensor to have the same leading (copy) dimension, got shapes "
                    f"{[tuple(s) for s in self.shapes]}"
                )
            self.copies = int(next(iter(lead)))  # type: ignore[arg-type]
        else:
            self.copies = 1
        self.sizes = [int(torch.Size(s).numel()) // self.copies for s in self.shapes]
        self.n = sum(self.sizes)

    def matrix(self, t: Tree) -> Tensor:
        return torch.cat([t[k].reshape(self.copies, -1) for k in self.keys], dim=1)

    def tree(self, m: Tensor) -> Tree:
        return {k: p.reshape(s) for k, p, s in zip(self.keys, torch.split(m, self.sizes, dim=1), self.shapes)}


def _tangents(
    game: Game, layout: _Layout, k: int, given: list[Tree] | Tensor | None, seed: int | torch.Generator,
    like: Tensor,
) -> Tensor:  # fmt: skip
    """``(E, n, k)`` orthonormal starting tangents (columns), one set per copy."""
    e, n = layout.copies, layout.n
    if given is None:
        z = torch.randn(e, n, k, generator=generator(seed), dtype=like.dtype)
    elif isinstance(given, Tensor):
        z = given.reshape(n, -1).expand(e, n, -1) if given.numel() % (e * n) else given.reshape(e, n, -1)
        if given.dim() <= 2 and given.shape[0] == n:  # one set of tangents for every copy
            z = given.reshape(n, -1).expand(e, n, -1)
    else:
        z = torch.stack([layout.matrix(game._joint_tree(t, "tangents")).detach() for t in given], dim=2)
    if z.shape[2] != k:
        raise InvalidArgumentError(f"tangents must hold k={k} vectors, got {z.shape[2]}")
    q, r = torch.linalg.qr(z.to(device=like.device, dtype=torch.float64))
    if bool((r.diagonal(dim1=1, dim2=2).abs() < 1e-12).any()):
        raise InvalidArgumentError("the starting tangents are linearly dependent (or zero)")
    return q.to(like.dtype)


def lyapunov(
    game: Game,
    params: Params | None = None,
    *,
    steps: int = 50,
    lr: float = 0.1,
    k: int = 1,
    rule: Any = None,
    batch: Any = None,
    tangents: list[Tree] | Tensor | None = None,
    seed: int | torch.Generator = 0,
    copies: bool = False,
    keep_trajectory: bool = False,
) -> LyapunovResult:
    """The top ``k`` finite-time Lyapunov exponents of a game's learning map from ``params``.

    Args:
        game: the game.
        params: the starting point :math:`\\theta_0` (a joint tree or one tree per player; default the game's
            state). When its tensors require grad, the exponents are differentiable with respect to them.
        steps: the horizon :math:`T`.
        lr: the learning rate :math:`\\eta` of the map.
        k: how many exponents (``k`` tangents, re-orthonormalized by QR each step).
        rule: ``None`` (naive learning), a :class:`~nestopt.games.LookAhead` or a :class:`~nestopt.games.LOLA`.
        batch: the batch the losses see.
        tangents: the starting tangents: ``k`` joint trees, an ``n x k`` matrix (with copies: the same for every
            copy, or ``E x n x k``); random when ``None``.
        seed: seed or generator of the random starting tangents.
        copies: the game holds independent copies along the leading dimension of every state tensor (as
            :func:`~nestopt.games.zoo.ipd` with ``batch_shape`` or :func:`~nestopt.games.zoo.mixture_gan` with
            ``ensemble``): each copy gets its own tangents and exponents (``exponents`` is ``(E, k)``), all
            copies advancing in one Jacobian product.
        keep_trajectory: keep :math:`\\theta_0, \\dots, \\theta_T` in the result.

    Returns:
        A :class:`LyapunovResult`.

    Raises:
        UnsupportedError: the game Jacobian cannot be formed (losses that autograd cannot differentiate twice,
            or that do not depend on the parameters), or an unsupported rule.
        NonFiniteError: the trajectory or a tangent became NaN or infinite.

    Example:
        >>> import math, torch
        >>> from nestopt.games import zoo
        >>> from nestopt.games.diversity import lyapunov
        >>> game = zoo.bilinear(dim=1, init=1.0, dtype=torch.float64)   # J = [[0, 1], [-1, 0]]
        >>> res = lyapunov(game, steps=20, lr=0.1, k=2)
        >>> [round(float(x), 8) for x in res.exponents], round(0.5 * math.log(1 + 0.1 ** 2), 8)
        ([0.00497517, 0.00497517], 0.00497517)
    """
    positive_int("steps", steps)
    nonnegative("lr", lr, positive=True)
    positive_int("k", k)
    point, differentiable = _start(game, params)
    layout = _Layout(point, copies)
    if k > layout.n:
        raise InvalidArgumentError(f"k={k} exceeds the {layout.n} parameters (of each copy)")
    fmap = LearningMap(game, lr, rule, batch, what="the Lyapunov exponent")
    fmap.check(point)
    grads0, hvps0 = game.counter.grads, game.counter.hvps
    q = _tangents(game, layout, k, tangents, seed, next(iter(point.values())))
    logs: list[Tensor] = []
    trajectory = [tree.detach(point)] if keep_trajectory else None
    for t in range(steps):
        if not differentiable:
            point = {key: v.detach().requires_grad_(True) for key, v in point.items()}
        nxt, images = fmap.step(point, [layout.tree(q[:, :, j]) for j in range(k)])
        z = torch.stack([layout.matrix(img) for img in images], dim=2)
        if not differentiable:
            z = z.detach()
        q, r = torch.linalg.qr(z)
        growth = r.diagonal(dim1=1, dim2=2).abs().log()
        if not bool(torch.isfinite(growth.detach()).all()) or not tree.all_finite(tree.detach(nxt)):
            raise NonFiniteError(
                f"the Lyapunov computation became non-finite at step {t} (a tangent collapsed to zero or the "
                "trajectory diverged); lower lr or steps"
            )
        logs.append(growth)
        point = nxt if differentiable else tree.detach(nxt)
        if trajectory is not None:
            trajectory.append(tree.detach(point))
    growth_all = torch.stack(logs)  # (steps, E, k)
    exponents = growth_all.mean(dim=0)
    return LyapunovResult(
        exponents=exponents if copies else exponents[0],
        vectors=[layout.tree(q[:, :, j].detach()) for j in range(k)],
        growth=(growth_all if copies else growth_all[:, 0]).detach(),
        final=tree.detach(point),
        trajectory=trajectory,
        steps=steps,
        lr=float(lr),
        grads=game.counter.grads - grads0,
        hvps=game.counter.hvps - hvps0,
    )
