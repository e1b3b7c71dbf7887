"""Shared pieces of the diversity experiments (Ridge Rider, Lyapunov exponents, Game Ridge Rider)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from nestopt.experiments.registry import Claim

__all__ = ["PAPER_GRR", "PAPER_LYAPUNOV", "PAPER_RR", "below", "more_than", "train_copies"]

PAPER_RR = (
    "Parker-Holder, Metz, Resnick, Hu, Lerer, Letcher, Peysakhovich, Pacchiano, Foerster. Ridge Rider: Finding "
    "Diverse Solutions by Following Eigenvectors of the Hessian. NeurIPS 2020"
)
PAPER_LYAPUNOV = (
    "Lorraine, Vicol, Parker-Holder, Kachman, Metz, Foerster. Lyapunov Exponents for Diversity in Differentiable "
    "Games. AAMAS 2022"
)
PAPER_GRR = (
    "Lorraine, Vicol, Parker-Holder, Kachman, Metz, Foerster. Using Bifurcations for Diversity in Differentiable "
    "Games. ICML 2021 workshop; and Lyapunov Exponents for Diversity in Differentiable Games. AAMAS 2022"
)


def below(name: str, value: float, threshold: float) -> Claim:
    """A claim that ``value`` is strictly below ``threshold`` ("under 5%")."""
    v = float(value)
    return Claim(name, v < threshold, v, threshold, f"{name} = {v:.4g} < {threshold:.4g} (needed)")


def more_than(name: str, value: float, threshold: float) -> Claim:
    """A claim that ``value`` is strictly above ``threshold`` ("in most runs")."""
    v = float(value)
    return Claim(name, v > threshold, v, threshold, f"{name} = {v:.4g} > {threshold:.4g} (needed)")


def train_copies(
    make: Callable[[list[torch.Tensor]], Any], starts: list[dict[str, torch.Tensor]], steps: int, lr: float,
    rule: Any = None,
) -> list[dict[str, torch.Tensor]]:  # fmt: skip
    """Naive (or ``rule``) learning by SGD from every start at once, as independent copies of one batched game.

    ``make(inits)`` builds the batched game from one stacked tensor per player state key (in the joint
    tree's order); returns the final point of each copy as a joint tree.
    """
    keys = list(starts[0])
    game = make([torch.stack([s[k] for s in starts]) for k in keys])
    opt = torch.optim.SGD(game.parameters(), lr=lr)
    for _ in range(steps):
        game.step(opt, rule=rule)
    return [{k: game.state[k][i].detach().clone() for k in keys} for i in range(len(starts))]
