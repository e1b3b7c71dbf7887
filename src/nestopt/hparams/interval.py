"""The range of a hyperparameter, and the projection from the unconstrained value the tree holds onto it.

A hyperparameter tree holds unconstrained real numbers :math:`u`; each family maps them onto its range:

==================================  =================================================================  =================
range                               projection :math:`u \\mapsto \\lambda`                                example
==================================  =================================================================  =================
``(low, high)``                     :math:`\\text{low} + (\\text{high} - \\text{low})\\,\\sigma(u)`               a dropout rate
``(0, inf)``, ``"exp"``             :math:`e^u`                                                        an L2 coefficient
``(-inf, inf)``, ``"identity"``     :math:`u`                                                          a shift, a target
integers ``low..high``              :math:`\\text{low} + \\lfloor n\\,\\sigma(u) \\rfloor` (:math:`n` values)               a cutout length
==================================  =================================================================  =================

(:math:`\\sigma` is the logistic sigmoid.) A discrete projection gives every integer of its range an
interval of :math:`u` of positive length, so a perturbation of :math:`u` visits each value with positive
probability and a best-response model, which sees :math:`u` itself, needs no relaxation of the count.

Example:
    >>> import torch
    >>> from nestopt.hparams import Interval
    >>> holes = Interval(0, 4, discrete=True)
    >>> holes.project(torch.linspace(-3, 3, 7)).tolist()
    [0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 4.0]
    >>> float(holes.project(torch.tensor(holes.unproject(3))))
    3.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from nestopt._validate import real
from nestopt.errors import InvalidArgumentError

__all__ = ["Interval"]


@dataclass(frozen=True)
class Interval:
    """A hyperparameter's range and its projection (see the module docstring).

    Args:
        low: the lower end (``0`` with ``transform="exp"``).
        high: the upper end (``math.inf`` with ``transform="exp"``).
        discrete: the integers ``low, ..., high`` (both must be integers, ``low <= high``).
        transform: ``"sigmoid"`` (a bounded range), ``"exp"`` (the positive half-line) or ``"identity"``
            (the real line).
    """

    low: float
    high: float
    discrete: bool = False
    transform: str = "sigmoid"

    def __post_init__(self) -> None:
        ends = {"exp": (0, math.inf), "identity": (-math.inf, math.inf)}
        if self.transform not in ("sigmoid", *ends):
            raise InvalidArgumentError(f"transform must be 'sigmoid', 'exp' or 'identity', got {self.transform!r}")
        if self.transform in ends:
            if (self.low, self.high) != ends[self.transform] or self.discrete:
                raise InvalidArgumentError(
                    f"an {self.transform!r} interval is the continuous range {ends[self.transform]}, got "
                    f"({self.low}, {self.high}){' (discrete)' if self.discrete else ''}"
                )
            return
        low, high = real("low", self.low), real("high", self.high)
        if self.discrete:
            if low != int(low) or high != int(high):
                raise InvalidArgumentError(
                    f"a discrete range needs integer ends, got low={self.low!r}, high={self.high!r}"
                )
            if low > high:
                raise InvalidArgumentError(
                    f"the discrete range {int(low)}..{int(high)} is empty: low={self.low!r} must be at most "
                    f"high={self.high!r}"
                )
        elif not low < high:
            raise InvalidArgumentError(f"the range ({self.low}, {self.high}) is empty: low must be below high")

    @property
    def size(self) -> int:
        """The number of values of a discrete range."""
        return int(self.high - self.low) + 1

    def choices(self) -> list[int]:
        """Every value of a discrete range, in order."""
        if not self.discrete:
            raise InvalidArgumentError(f"{self} is continuous: it has no list of choices")
        return list(range(int(self.low), int(self.high) + 1))

    def project(self, u: Tensor) -> Tensor:
        """The hyperparameter's value (same shape as ``u``; integers stored as floats when discrete)."""
        if self.transform == "exp":
            return u.exp()
        if self.transform == "identity":
            return u
        s = torch.sigmoid(u)
        if self.discrete:
            return (self.low + torch.floor(self.size * s)).clamp(max=self.high)
        return self.low + (self.high - self.low) * s

    def unproject(self, value: float) -> float:
        """The unconstrained value whose projection is ``value`` (for a discrete value, the middle of its
        interval of ``u``); raises :class:`InvalidArgumentError` unless ``value`` lies strictly inside a
        continuous range or is one of a discrete range's values."""
        v = real("value", value)
        if self.transform == "identity":
            return v
        if self.transform == "exp":
            if v <= 0:
                raise InvalidArgumentError(f"value must be positive for the range (0, inf), got {value!r}")
            return math.log(v)
        if self.discrete:
            if v != int(v) or not self.low <= v <= self.high:
                raise InvalidArgumentError(f"value must be one of {self.choices()}, got {value!r}")
            p = (v - self.low + 0.5) / self.size
        else:
            if not self.low < v < self.high:
                raise InvalidArgumentError(
                    f"value must lie strictly inside ({self.low:g}, {self.high:g}), got {value!r}"
                )
            p = (v - self.low) / (self.high - self.low)
        return math.log(p) - math.log1p(-p)

    def __str__(self) -> str:
        if self.discrete:
            return f"{{{int(self.low)}, ..., {int(self.high)}}}"
        return f"({self.low:g}, {self.high:g})"
