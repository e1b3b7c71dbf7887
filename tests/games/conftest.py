"""Helpers shared by the game tests."""

from __future__ import annotations

import torch

from nestopt import games


class _OnceDifferentiableSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):  # type: ignore[no-untyped-def]
        (x,) = ctx.saved_tensors
        return 2 * x * g


def first_order_only_game() -> games.Game:
    """A game whose losses autograd can differentiate once but not twice (no game Jacobian)."""
    return games.Game(
        [{"x": torch.ones(2, dtype=torch.float64)}, {"y": torch.ones(2, dtype=torch.float64)}],
        [lambda p, _: (_OnceDifferentiableSquare.apply(p[0]["x"]) * p[1]["y"]).sum(),
         lambda p, _: -(_OnceDifferentiableSquare.apply(p[0]["x"]) * p[1]["y"]).sum()],
    )  # fmt: skip
