"""The controller analysis of Adam & Lorraine (2019): do a controller's hidden states reflect the structure of
the architectures it samples?

:func:`analyse_controller` samples ``n`` *distinct* architectures from a controller (identical cells have
identical hidden states and the largest similarity, pairs that would say nothing about structure), and
measures on their hidden states (the LSTM state after reading the whole cell, :class:`~nestopt.nas.Rollout`):

* ``spread``: :func:`~nestopt.nas.relative_spread`, how far the hidden states are from identical;
* ``correlations``: :func:`~nestopt.nas.embedding_correlation`, Spearman's correlation over all pairs between
  hidden-state closeness and each graph similarity;
* ``conditioning``: :meth:`~nestopt.nas.Rollout.conditioning`, how much the policy's step distributions depend
  on the earlier decisions (0 for a controller that ignores its past).

Example:
    >>> import torch
    >>> from nestopt import nas
    >>> space = nas.CellSpace(nodes=3, ops=("tanh", "relu"))
    >>> ctrl = nas.Controller(space, hidden=8, generator=torch.Generator().manual_seed(0))
    >>> res = nas.analyse_controller(ctrl, 10, generator=torch.Generator().manual_seed(0))
    >>> len(set(res.architectures)), res.hidden.shape, sorted(res.correlations)[0]
    (10, torch.Size([10, 8]), 'activations in common')
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from nestopt._validate import positive_int
from nestopt.errors import InvalidArgumentError
from nestopt.nas.controller import Controller, Rollout
from nestopt.nas.similarity import embedding_correlation, relative_spread
from nestopt.nas.space import Architecture

__all__ = ["ControllerAnalysis", "analyse_controller"]


@dataclass
class ControllerAnalysis:
    """What :func:`analyse_controller` measured (see the module docstring); ``draws`` counts the samples it
    took to find ``n`` distinct architectures."""

    architectures: list[Architecture]
    hidden: Tensor
    spread: float
    correlations: dict[str, float]
    conditioning: float
    draws: int

    def as_dict(self) -> dict[str, object]:
        return {"spread": self.spread, "correlations": self.correlations, "conditioning": self.conditioning,
                "distinct": len(self.architectures), "draws": self.draws}  # fmt: skip


def analyse_controller(
    controller: Controller, n: int = 100, *, generator: torch.Generator | None = None, max_draws: int = 100_000
) -> ControllerAnalysis:
    """Sample ``n`` distinct architectures from ``controller`` and measure its hidden states on them.

    Raises:
        InvalidArgumentError: fewer than ``n`` distinct architectures turned up in ``max_draws`` samples (a
            policy that has collapsed onto a few cells).
    """
    n = positive_int("n", n)
    if n < 2:
        raise InvalidArgumentError(f"n must be at least 2 (the measures compare pairs), got {n}")
    seen: set[tuple[int, ...]] = set()
    outs: list[Rollout] = []
    keep: list[int] = []
    draws = 0
    with torch.no_grad():
        while len(keep) < n and draws < max_draws:
            out = controller.sample(min(4 * n, max_draws - draws), generator)
            for k, seq in enumerate(out.tokens.tolist()):
                if len(keep) < n and tuple(seq) not in seen:
                    seen.add(tuple(seq))
                    keep.append(draws + k)
            draws += out.tokens.shape[0]
            outs.append(out)
    if len(keep) < n:
        raise InvalidArgumentError(
            f"only {len(keep)} distinct architectures in {draws} samples, fewer than n={n}: lower n"
        )
    idx = torch.tensor(keep)
    cat = lambda parts: torch.cat(parts)[idx]
    distinct = Rollout(
        cat([o.tokens for o in outs]), cat([o.log_prob for o in outs]), cat([o.entropy for o in outs]),
        cat([o.hidden for o in outs]), [cat([o.probs[t] for o in outs]) for t in range(len(outs[0].probs))],
    )  # fmt: skip
    archs = controller.architectures(distinct)
    return ControllerAnalysis(
        archs, distinct.hidden, relative_spread(distinct.hidden), embedding_correlation(distinct.hidden, archs),
        distinct.conditioning(), draws,
    )  # fmt: skip
