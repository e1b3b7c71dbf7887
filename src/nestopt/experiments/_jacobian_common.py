"""Helpers shared by the experiments on structured Jacobians (``jacnet-*``, ``icgn-vs-icnn``).

Not an experiment module (the leading underscore keeps it out of discovery).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from nestopt.errors import NonFiniteError
from nestopt.experiments.registry import Context
from nestopt.jacobian import ICGN, AdaptiveQuadrature, JacNet
from nestopt.nets import mlp

__all__ = ["DTYPE", "box_grid", "fit", "matched_mlp", "param_count"]

DTYPE = torch.float64
"""The experiments run in float64: their claims go down to round-trip errors far below float32 resolution."""


EVALUATION_TOL = 1e-6
"""The quadrature tolerance of every evaluation: the structural guarantees are stated for the function evaluated."""


def for_evaluation(net: JacNet | ICGN) -> JacNet | ICGN:
    """Swap the fixed rule a network was trained with for the adaptive one (tolerance :data:`EVALUATION_TOL`).

    Training uses the fixed ``nodes``-point rule (the training signal needs no certificate, and refining every
    step would double the cost); every number the experiments report comes from the adaptive rule, so the
    Lipschitz, invertibility and convexity guarantees hold to the stated tolerance for what is measured.
    """
    net.quadrature = AdaptiveQuadrature(nodes=net.nodes, tol=EVALUATION_TOL)
    return net


def param_count(module: nn.Module) -> int:
    """The number of trainable scalars of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def matched_mlp(d_in: int, d_out: int, target: int, generator: torch.Generator, activation: str = "tanh") -> nn.Module:
    """A two-hidden-layer MLP ``d_in -> w -> w -> d_out`` whose parameter count is closest to ``target``."""

    def count(w: int) -> int:
        return d_in * w + w + w * w + w + w * d_out + d_out

    width = min(range(1, 4 * int(math.sqrt(target)) + 8), key=lambda w: abs(count(w) - target))
    return mlp([d_in, width, width, d_out], activation, generator=generator).to(DTYPE)


def box_grid(lo: float, hi: float, n: int, dim: int) -> Tensor:
    """The ``n ** dim`` points of a regular grid on ``[lo, hi] ** dim``, shape ``(n ** dim, dim)``."""
    axis = torch.linspace(lo, hi, n, dtype=DTYPE)
    if dim == 1:
        return axis.unsqueeze(-1)
    return torch.cartesian_prod(*([axis] * dim))


def fit(
    loss_fn: Callable[[], Tensor],
    module: nn.Module,
    *,
    steps: int,
    lr: float,
    ctx: Context,
    desc: str,
) -> float:
    """Minimise ``loss_fn()`` over ``module``'s parameters: full-batch Adam with a cosine learning-rate decay.

    Returns the last loss; raises :class:`NonFiniteError` if the loss becomes NaN or infinite.
    """
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    value = float("nan")
    for step in ctx.progress(range(steps), desc=desc):
        opt.zero_grad()
        loss = loss_fn()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteError(f"{desc}: the training loss became {value} at step {step}")
        loss.backward()
        opt.step()
        sched.step()
    return value
