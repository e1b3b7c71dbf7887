"""REINFORCE for the controller: the policy-gradient surrogate, its moving-average baseline, and the
supervised reconstruction loss of Adam & Lorraine (2019).

The controller maximizes the expected reward with an entropy bonus,

.. math::  J(\\theta) = \\mathbb{E}_{a \\sim \\pi_\\theta}\\big[R(a) + \\beta H_\\theta(a)\\big], \\qquad
           H_\\theta(a) = \\textstyle\\sum_t H\\big(\\pi_\\theta(\\cdot | a_{<t})\\big),

whose gradient (the score-function identity; Williams, 1992) is

.. math::  \\nabla J = \\mathbb{E}\\big[(R(a) + \\beta H_\\theta(a) - b)\\, \\nabla \\log \\pi_\\theta(a)
           + \\beta \\nabla H_\\theta(a)\\big]

for any baseline :math:`b` that does not depend on the sampled :math:`a`. :func:`reinforce_loss` is a
surrogate whose gradient is minus the sample mean of that expression, an unbiased estimate of
:math:`-\\nabla J`. :class:`MovingAverage` is ENAS's baseline: an exponential moving average of past rewards,
read *before* the current batch updates it, so that it does not depend on the current samples.

:func:`supervised_loss` is the autoregressive negative log-likelihood of architectures (from a
:class:`~nestopt.nas.MemoryBuffer`) under the controller: added to the policy-gradient loss, it makes the
controller reproduce past architectures, so that its hidden state must encode its past decisions.

Example:
    >>> import torch
    >>> from nestopt import nas
    >>> space = nas.CellSpace(nodes=2, ops=("tanh", "relu"))
    >>> ctrl = nas.Controller(space, hidden=8, generator=torch.Generator().manual_seed(0))
    >>> out = ctrl.sample(16, generator=torch.Generator().manual_seed(0))
    >>> reward = (out.tokens[:, 0] == 1).to(out.log_prob.dtype)        # reward relu at node 0
    >>> baseline = nas.MovingAverage(decay=0.95)
    >>> loss = nas.reinforce_loss(out, reward, baseline.advance(reward), entropy_weight=1e-4)
    >>> loss.backward()
    >>> ctrl.decoders[0].bias.grad.shape
    torch.Size([2])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nestopt._validate import in_range, nonnegative
from nestopt.errors import ShapeMismatchError
from nestopt.nas.controller import Controller, Rollout

__all__ = ["MovingAverage", "reinforce_loss", "supervised_loss"]


def reinforce_loss(rollout: Rollout, rewards: Tensor, baseline: float | Tensor, entropy_weight: float = 0.0) -> Tensor:
    """The REINFORCE surrogate: its gradient is an unbiased estimate of :math:`-\\nabla J` (module docstring).

    .. math::  \\mathcal{L}_{PG} = -\\frac1n \\sum_k \\Big[\\mathrm{sg}\\big(R_k + \\beta H_k - b\\big)
               \\log \\pi(a_k) + \\beta H_k\\Big]

    Args:
        rollout: the sampled architectures (:meth:`Controller.sample`).
        rewards: ``(n,)`` the reward of each.
        baseline: :math:`b`, a number (or a tensor broadcasting to ``(n,)``) independent of these samples.
        entropy_weight: :math:`\\beta`.
    """
    beta = nonnegative("entropy_weight", entropy_weight)
    rewards = torch.as_tensor(rewards, dtype=rollout.log_prob.dtype, device=rollout.log_prob.device)
    if rewards.shape != rollout.log_prob.shape:
        raise ShapeMismatchError(
            f"rewards must have one entry per sampled architecture, shape {tuple(rollout.log_prob.shape)}, "
            f"got {tuple(rewards.shape)}"
        )
    advantage = (rewards + beta * rollout.entropy - baseline).detach()
    return -(advantage * rollout.log_prob + beta * rollout.entropy).mean()


def supervised_loss(controller: Controller, tokens: Tensor) -> Tensor:
    """The mean negative log-likelihood of the token sequences ``tokens`` under ``controller`` (teacher forcing)."""
    return -controller.evaluate(tokens).log_prob.mean()


class MovingAverage:
    """ENAS's reward baseline: :math:`b \\leftarrow \\delta b + (1 - \\delta) \\bar R` after each batch.

    :meth:`advance` returns the baseline to use for a batch (the value before the batch, or the batch's mean
    reward for the very first batch) and then folds the batch in.

    Args:
        decay: :math:`\\delta \\in [0, 1)`.
    """

    def __init__(self, decay: float = 0.95) -> None:
        self.decay = in_range("decay", decay, 0.0, 1.0, high_open=True)
        self.value: float | None = None

    def advance(self, rewards: Tensor) -> float:
        mean = float(torch.as_tensor(rewards).detach().to(torch.float64).mean())
        used = mean if self.value is None else self.value
        self.value = self.decay * used + (1.0 - self.decay) * mean
        return used

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay, self.value = float(state["decay"]), state["value"]
