"""The iterated prisoner's dilemma with exact discounted values, and its one-logit variants.

**State order.** An outcome is written with player 1's action first: ``CC, CD, DC, DD`` (``CD``: player 1
cooperated, player 2 defected). Each agent's 5 logits are the log-odds of cooperating at the start and
after each previous outcome *seen from its own side* (own action first): ``(start, CC, CD, DC, DD)``. So
tit-for-tat is ``(C, C, D, C, D)`` for either player, and when the joint chain (in player 1's order) is
built, player 2's ``CD`` and ``DC`` entries are swapped.

**Exact value.** With :math:`p_0` the distribution of the first outcome and :math:`P` the transition
matrix between outcomes,

.. math::  V_i = p_0^\\top (I - \\gamma P)^{-1} r_i, \\qquad L_i = -V_i,

where :math:`r_1 = (-1, -3, 0, -2)` and :math:`r_2 = (-1, 0, -3, -2)` are the rewards of the four outcomes
and :math:`\\gamma = 0.96`. :math:`V_i` counts the first outcome undiscounted; :math:`(1-\\gamma) V_i` is the
average reward per step (mutual defection: -2; mutual cooperation: -1).

References:
    Foerster, Chen, Al-Shedivat, Whiteson, Abbeel, Mordatch. Learning with Opponent-Learning Awareness. 2018.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.games.game import Game
from nestopt.games.zoo.classic import Init, make_init
from nestopt.tree import Tree

__all__ = [
    "IPD_REWARDS",
    "IPD_STRATEGIES",
    "OUTCOMES",
    "bimatrix_value",
    "ipd",
    "ipd_matching_pennies",
    "ipd_outcome",
    "ipd_values",
    "reciprocity",
    "small_ipd",
    "small_ipd_payoffs",
]

OUTCOMES = ("CC", "CD", "DC", "DD")
"""Outcome order: player 1's action first."""

IPD_REWARDS = ((-1.0, -3.0, 0.0, -2.0), (-1.0, 0.0, -3.0, -2.0))
"""Rewards of player 1 and player 2 for the outcomes ``CC, CD, DC, DD``."""

IPD_STRATEGIES: dict[str, tuple[float, ...]] = {
    "always_cooperate": (1.0, 1.0, 1.0, 1.0, 1.0),
    "always_defect": (0.0, 0.0, 0.0, 0.0, 0.0),
    "tit_for_tat": (1.0, 1.0, 0.0, 1.0, 0.0),
    "suspicious_tit_for_tat": (0.0, 1.0, 0.0, 1.0, 0.0),
    "grudger": (1.0, 1.0, 0.0, 0.0, 0.0),
    "alternator": (1.0, 0.0, 0.0, 1.0, 1.0),
}
"""Deterministic memory-one strategies as cooperation probabilities ``(start, CC, CD, DC, DD)``, own side first."""

_SWAP = [0, 1, 3, 2, 4]


def _check_gamma(gamma: float) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not 0.0 <= gamma < 1.0:
        raise InvalidArgumentError(f"gamma must be in [0, 1), got {gamma!r}")
    return float(gamma)


def ipd_values(
    coop1: Tensor, coop2: Tensor, gamma: float = 0.96, *, probabilities: bool = False
) -> tuple[Tensor, Tensor]:
    """Exact discounted values :math:`(V_1, V_2)` of two memory-one policies.

    Args:
        coop1, coop2: each agent's 5 logits (or, with ``probabilities=True``, cooperation probabilities)
            in its own state order ``(start, CC, CD, DC, DD)``; leading batch dimensions broadcast.
        gamma: the discount in ``[0, 1)``.

    Returns:
        ``(V1, V2)``, shaped like the batch dimensions.

    Example:
        >>> import torch
        >>> tft = torch.tensor(IPD_STRATEGIES["tit_for_tat"], dtype=torch.float64)
        >>> v1, v2 = ipd_values(tft, tft, 0.96, probabilities=True)
        >>> round(float(v1) * (1 - 0.96), 6)   # average reward per step
        -1.0
    """
    gamma = _check_gamma(gamma)
    if coop1.shape[-1:] != (5,) or coop2.shape[-1:] != (5,):
        raise ShapeMismatchError(f"each agent needs 5 entries, got {tuple(coop1.shape)} and {tuple(coop2.shape)}")
    p1 = coop1 if probabilities else torch.sigmoid(coop1)
    p2 = (coop2 if probabilities else torch.sigmoid(coop2))[..., _SWAP]
    p1, p2 = torch.broadcast_tensors(p1, p2)
    a, b = p1[..., 0], p2[..., 0]
    p0 = torch.stack([a * b, a * (1 - b), (1 - a) * b, (1 - a) * (1 - b)], dim=-1)
    c1, c2 = p1[..., 1:], p2[..., 1:]
    P = torch.stack([c1 * c2, c1 * (1 - c2), (1 - c1) * c2, (1 - c1) * (1 - c2)], dim=-1)
    eye = torch.eye(4, dtype=P.dtype, device=P.device)
    r = torch.tensor(IPD_REWARDS, dtype=P.dtype, device=P.device).T  # (4, 2)
    values = torch.linalg.solve(eye - gamma * P, r.expand(*P.shape[:-2], 4, 2))  # (..., 4, 2)
    v = (p0.unsqueeze(-1) * values).sum(dim=-2)
    return v[..., 0], v[..., 1]


def reciprocity(probs: Tensor) -> Tensor:
    """P(C | the opponent cooperated) - P(C | it defected), averaged over own actions, for cooperation
    probabilities ``(..., 5)`` in own-side state order: tit-for-tat 1, always-defect 0, always-cooperate 0."""
    return 0.5 * (probs[..., 1] + probs[..., 3]) - 0.5 * (probs[..., 2] + probs[..., 4])


def ipd_outcome(logits1: Tensor, logits2: Tensor, gamma: float = 0.96, *, min_reciprocity: float = 0.25) -> str:
    """Name the outcome of two memory-one policies (5 logits each, as in :func:`ipd`).

    With :math:`r_i = (1-\\gamma) V_i` the average rewards per step: ``"mutual defection"`` when both are
    below -1.9 (mutual defection pays -2); ``"reciprocating"`` when both are above -1.1 (mutual cooperation
    pays -1) and both policies punish defection, :func:`reciprocity` at least ``min_reciprocity``;
    ``"cooperating"`` for cooperation without that; ``"mixed"`` otherwise.

    Example:
        >>> tft = torch.tensor(IPD_STRATEGIES["tit_for_tat"]) * 16 - 8   # logits of near-deterministic TFT
        >>> ipd_outcome(tft, tft), ipd_outcome(-tft.abs(), -tft.abs())
        ('reciprocating', 'mutual defection')
    """
    v1, v2 = ipd_values(logits1.detach(), logits2.detach(), gamma)
    r = (1 - gamma) * torch.stack([v1, v2])
    if float(r.max()) < -1.9:
        return "mutual defection"
    if float(r.min()) > -1.1:
        rec = min(float(reciprocity(torch.sigmoid(logits1))), float(reciprocity(torch.sigmoid(logits2))))
        return "reciprocating" if rec >= min_reciprocity else "cooperating"
    return "mixed"


def ipd(
    gamma: float = 0.96,
    *,
    init: Init = None,
    batch_shape: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> Game:
    """The iterated prisoner's dilemma between two memory-one agents with 5 logits each.

    :math:`L_i = -V_i` with the exact discounted value of :func:`ipd_values`. With ``batch_shape`` the
    logits get leading dimensions and the game holds that many independent copies (losses are summed, so
    each copy's gradients are its own): one game for many seeds at once.

    Args:
        gamma: the discount.
        init: starting logits (a number, two tensors, or ``None`` for N(0, 1) draws).
        batch_shape: leading dimensions for independent copies.
        generator: for the random start.
        dtype: dtype of the logits.

    Example:
        >>> game = ipd(generator=torch.Generator().manual_seed(0))
        >>> game.sizes
        [5, 5]
    """
    gamma = _check_gamma(gamma)
    shape = (*batch_shape, 5)
    t1, t2 = make_init(init, [shape, shape], generator=generator, dtype=dtype)

    def losses(p: list[Tree], batch: Any) -> list[Tensor]:
        v1, v2 = ipd_values(p[0]["logits"], p[1]["logits"], gamma)
        return [-v1.sum(), -v2.sum()]

    return Game(
        [{"logits": t1}, {"logits": t2}], losses, names=["agent1", "agent2"],
        info={"gamma": gamma, "outcomes": OUTCOMES, "rewards": IPD_REWARDS},
    )  # fmt: skip


def small_ipd_payoffs(gamma: float = 0.96, *, dtype: torch.dtype | None = None) -> Tensor:
    """Average reward per step of tit-for-tat (row/column 0) and always-defect (1): ``R[mine, theirs]``.

    .. math::

        R = \\begin{pmatrix} -1 & -3(1-\\gamma) - 2\\gamma \\\\ -2\\gamma & -2 \\end{pmatrix}

    (the IPD is symmetric, so the column player's payoffs are ``R.T``). A stag hunt: mutual tit-for-tat and
    mutual defection are both equilibria.
    """
    g = _check_gamma(gamma)
    return torch.tensor([[-1.0, -3.0 * (1 - g) - 2.0 * g], [-2.0 * g, -2.0]], dtype=dtype)


def bimatrix_value(a: Tensor, b: Tensor, M: Tensor) -> Tensor:
    """:math:`x^\\top M y` for the mixed strategies :math:`x = (a, 1-a)`, :math:`y = (b, 1-b)`, elementwise over
    any batch shape of ``a`` and ``b``."""
    return a * (b * M[0, 0] + (1 - b) * M[0, 1]) + (1 - a) * (b * M[1, 0] + (1 - b) * M[1, 1])


def small_ipd(
    gamma: float = 0.96,
    *,
    init: Init = None,
    batch_shape: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> Game:
    """The one-logit IPD: each agent plays tit-for-tat with probability :math:`\\sigma(\\theta_i)`, else defects.

    :math:`L_1 = -x^\\top R y`, :math:`L_2 = -y^\\top R x` with :math:`x = (\\sigma(\\theta_1), 1 - \\sigma(\\theta_1))`,
    :math:`y` likewise and :math:`R` from :func:`small_ipd_payoffs`: the average reward per step. A stag hunt:
    naive learners reach mutual tit-for-tat when the opponent plays it with probability above
    :math:`(1-\\gamma)/\\gamma`, mutual defection below; the mixed equilibrium at that probability is the saddle
    between the two basins. With ``batch_shape`` the logits get leading dimensions and the game holds that
    many independent copies (losses summed), as :func:`ipd` does.

    Example:
        >>> game = small_ipd(init=5.0)
        >>> round(-float(game.losses()[0]), 2)   # both mostly tit-for-tat
        -1.01
    """
    t1, t2 = make_init(init, [batch_shape, batch_shape], generator=generator, dtype=dtype)
    R = small_ipd_payoffs(gamma, dtype=t1.dtype)

    def losses(p: list[Tree], batch: Any) -> list[Tensor]:
        a, b = torch.sigmoid(p[0]["logit"]), torch.sigmoid(p[1]["logit"])
        return [-bimatrix_value(a, b, R).sum(), -bimatrix_value(b, a, R).sum()]

    return Game([{"logit": t1}, {"logit": t2}], losses, names=["agent1", "agent2"],
                info={"payoffs": (R, R.T), "gamma": float(gamma)})  # fmt: skip


def ipd_matching_pennies(
    tau: float = 0.5,
    gamma: float = 0.96,
    *,
    init: Init = None,
    batch_shape: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> Game:
    """The mix :math:`L_i = \\tau L_i^{\\mathrm{smallIPD}} + (1 - \\tau) L_i^{\\mathrm{MP}}` on the same logits.

    :math:`\\tau = 1` is the one-logit IPD (:func:`small_ipd`, two stable equilibria), :math:`\\tau = 0`
    matching pennies (:func:`~nestopt.games.zoo.matching_pennies`, one rotational equilibrium).
    ``batch_shape`` as in :func:`small_ipd`.

    Example:
        >>> game = ipd_matching_pennies(0.5, init=0.0)
        >>> game.n_players
        2
    """
    if isinstance(tau, bool) or not isinstance(tau, int | float) or not 0.0 <= tau <= 1.0:
        raise InvalidArgumentError(f"tau must be in [0, 1], got {tau!r}")
    t1, t2 = make_init(init, [batch_shape, batch_shape], generator=generator, dtype=dtype)
    R = small_ipd_payoffs(gamma, dtype=t1.dtype)
    M = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=t1.dtype)
    t = float(tau)

    def losses(p: list[Tree], batch: Any) -> list[Tensor]:
        a, b = torch.sigmoid(p[0]["logit"]), torch.sigmoid(p[1]["logit"])
        pennies = bimatrix_value(a, b, M)
        return [(-t * bimatrix_value(a, b, R) - (1 - t) * pennies).sum(),
                (-t * bimatrix_value(b, a, R) + (1 - t) * pennies).sum()]  # fmt: skip

    return Game([{"logit": t1}, {"logit": t2}], losses, names=["agent1", "agent2"], info={"tau": t, "gamma": gamma})
