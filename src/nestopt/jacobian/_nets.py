"""Small building blocks shared by the networks of :mod:`nestopt.jacobian`: input checks and activations.

The seeded layers and the MLP come from :mod:`nestopt.nets` (the same seed gives the same network).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.nets import ACTIVATIONS, mlp, seeded_linear

__all__ = ["ACTIVATIONS", "activation_fn", "check_dim", "check_points", "check_widths", "mlp", "seeded_linear"]


def activation_fn(name: str, allowed: Sequence[str], argument: str = "activation") -> Callable[[Tensor], Tensor]:
    """The activation called ``name``, or an error naming ``argument`` when it is not in ``allowed``."""
    if name not in allowed:
        raise InvalidArgumentError(f"{argument} must be one of {list(allowed)}, got {name!r}")
    return ACTIVATIONS[name]


def check_dim(dim: object, argument: str = "dim") -> int:
    """Validate a positive integer dimension."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise InvalidArgumentError(f"{argument} must be a positive integer, got {dim!r}")
    return dim


def check_points(x: object, dim: int, owner: str, name: str = "x", *, like: Tensor | None = None) -> Tensor:
    """Validate a floating-point tensor of points of shape ``(..., dim)`` for the network ``owner``.

    ``like`` (one of the network's parameters) fixes the dtype and device that ``x`` must have: torch does not
    mix them in a matrix product, and converting behind the user's back would hide a costly copy.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise InvalidArgumentError(f"{name} must be a floating-point tensor, got {getattr(x, 'dtype', type(x))}")
    if x.dim() == 0 or x.shape[-1] != dim:
        hint = " (add a trailing axis: x.unsqueeze(-1))" if dim == 1 and x.dim() >= 1 else ""
        raise ShapeMismatchError(
            f"{name} must have shape (..., {dim}) for this {owner}(dim={dim}), got {tuple(x.shape)}{hint}"
        )
    if like is not None:
        for what, got, want in (("dtype", x.dtype, like.dtype), ("device", x.device, like.device)):
            if got != want:
                raise ShapeMismatchError(
                    f"{name} has {what} {got} but this {owner}'s parameters have {what} {want}; convert the network "
                    f"(net.to({_literal(got)})) or the input ({name}.to({_literal(want)}))"
                )
    return x


def _literal(value: torch.dtype | torch.device) -> str:
    return str(value) if isinstance(value, torch.dtype) else repr(str(value))


def check_widths(hidden: int | Sequence[int], argument: str = "hidden") -> tuple[int, ...]:
    """Normalise ``hidden`` (an int or a sequence of ints) into a non-empty tuple of positive widths."""
    widths = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise InvalidArgumentError(f"{argument} must be a positive int or a non-empty sequence of them, got {hidden!r}")
    return widths
