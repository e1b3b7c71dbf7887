"""Seeded building blocks for small networks: a ``Linear`` layer and a multilayer perceptron.

``torch.nn.Linear`` draws its initial weights from torch's global random state. The builders here take a
``torch.Generator`` instead, so that the same seed gives the same network wherever it is built and building
one leaves the global state alone. The initialization is PyTorch's default for ``Linear``,

.. math::  W_{ij}, b_i \\sim \\mathcal{U}\\big(-1/\\sqrt{n_{in}},\\, 1/\\sqrt{n_{in}}\\big),

drawn in the same order (weight, then bias, layer by layer), so ``mlp(sizes, generator=g)`` with
``g = torch.Generator().manual_seed(s)`` holds exactly the numbers that ``torch.manual_seed(s)`` followed by
the same ``torch.nn.Linear`` layers gives.

Example:
    >>> import torch
    >>> from nestopt.nets import mlp
    >>> net = mlp([4, 8, 3], "relu", generator=torch.Generator().manual_seed(0))
    >>> net
    Sequential(
      (0): Linear(in_features=4, out_features=8, bias=True)
      (1): Activation(relu)
      (2): Linear(in_features=8, out_features=3, bias=True)
    )
    >>> _ = torch.manual_seed(0)
    >>> reference = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> all(torch.equal(a, b) for a, b in zip(net.parameters(), reference.parameters()))
    True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from nestopt import _validate
from nestopt.errors import InvalidArgumentError

__all__ = ["ACTIVATIONS", "Activation", "mlp", "seeded_linear"]

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softplus": nn.functional.softplus,
    "silu": nn.functional.silu,
    "relu": torch.relu,
}
"""The activations :func:`mlp` and :class:`Activation` know, by name."""


class Activation(nn.Module):
    """An element-wise activation from :data:`ACTIVATIONS`, as a module (it has no parameters)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = _validate.one_of("activation", name, ACTIVATIONS)
        self.fn = ACTIVATIONS[name]

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


def seeded_linear(fan_in: int, fan_out: int, generator: torch.Generator | None, *, bias: bool = True) -> nn.Linear:
    """A ``Linear`` layer with PyTorch's default uniform initialization drawn from ``generator``.

    With ``generator=None`` it is a plain ``torch.nn.Linear`` (initialized from the global random state).
    """
    _validate.positive_int("fan_in", fan_in)
    _validate.positive_int("fan_out", fan_out)
    if generator is None:
        return nn.Linear(fan_in, fan_out, bias=bias)
    layer = torch.nn.utils.skip_init(nn.Linear, fan_in, fan_out, bias=bias)  # no draw from the global state
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        if layer.bias is not None:
            layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


def mlp(
    sizes: Sequence[int], activation: str = "relu", *, generator: torch.Generator | int | None = None
) -> nn.Sequential:
    """A multilayer perceptron ``sizes[0] -> ... -> sizes[-1]`` with ``activation`` between the layers.

    Args:
        sizes: the widths, input first and output last (at least two).
        activation: a name from :data:`ACTIVATIONS`, applied after every layer but the last.
        generator: where the initial weights come from: a ``torch.Generator``, a seed (an int: a new generator
            seeded with it), or ``None`` (torch's global random state).

    Returns:
        ``nn.Sequential`` of ``Linear`` layers and :class:`Activation` modules (parameter names ``"0.weight"``,
        ``"0.bias"``, ``"2.weight"``, ... as with ``nn.Sequential(nn.Linear, nn.ReLU, ...)``).

    Example:
        >>> import torch
        >>> net = mlp([2, 8, 1], "tanh", generator=0)
        >>> net(torch.zeros(5, 2)).shape
        torch.Size([5, 1])
    """
    sizes = list(sizes)
    if len(sizes) < 2:
        raise InvalidArgumentError(f"sizes must give at least an input and an output width, got {sizes!r}")
    _validate.one_of("activation", activation, ACTIVATIONS)
    if isinstance(generator, int) and not isinstance(generator, bool):
        generator = torch.Generator().manual_seed(generator)
    elif generator is not None and not isinstance(generator, torch.Generator):
        raise InvalidArgumentError(f"generator must be a torch.Generator, an int seed or None, got {generator!r}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(seeded_linear(a, b, generator))
        if i < len(sizes) - 2:
            layers.append(Activation(activation))
    return nn.Sequential(*layers)
