"""Argument checks shared by every layer: each returns the normalized value or raises an error naming it.

Every function takes the argument's name first and its value second, and raises
:class:`~nestopt.errors.InvalidArgumentError` with a message of the form ``"<name> must be ..., got <value>"``.

Example:
    >>> from nestopt import _validate
    >>> _validate.positive_int("steps", 5)
    5
    >>> _validate.nonnegative("damping", 0)
    0.0
    >>> _validate.positive_int("steps", 0)
    Traceback (most recent call last):
    ...
    nestopt.errors.InvalidArgumentError: steps must be a positive integer, got 0
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any, TypeVar

from nestopt.errors import InvalidArgumentError

__all__ = ["in_range", "nonnegative", "nonnegative_int", "one_of", "positive_int", "real"]

T = TypeVar("T")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(name: str, value: object) -> int:
    """An integer ``>= 1``."""
    if not _is_int(value) or value < 1:  # type: ignore[operator]
        raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
    return int(value)  # type: ignore[call-overload]


def nonnegative_int(name: str, value: object) -> int:
    """An integer ``>= 0``."""
    if not _is_int(value) or value < 0:  # type: ignore[operator]
        raise InvalidArgumentError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)  # type: ignore[call-overload]


def real(name: str, value: object) -> float:
    """A finite real number (not a bool, not complex), as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgumentError(f"{name} must be a finite real number, got {value!r}")
    return float(value)


def nonnegative(name: str, value: object, *, positive: bool = False) -> float:
    """A finite real number ``>= 0`` (``> 0`` with ``positive=True``), as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        kind = "positive" if positive else "non-negative"
        raise InvalidArgumentError(f"{name} must be a finite {kind} number, got {value!r}")
    v = float(value)
    if v < 0.0 or (positive and v == 0.0):
        raise InvalidArgumentError(
            f"{name} must be a finite {'positive' if positive else 'non-negative'} number, got {value!r}"
        )
    return v


def in_range(
    name: str, value: object, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> float:
    """A finite real number in the interval from ``low`` to ``high`` (closed unless ``*_open``)."""
    v = real(name, value)
    if (v < low or (low_open and v == low)) or (v > high or (high_open and v == high)):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise InvalidArgumentError(f"{name} must be in {interval}, got {value!r}")
    return v


def one_of(name: str, value: T, choices: Collection[Any]) -> T:
    """``value`` itself, if it is one of ``choices``."""
    if value not in choices:
        raise InvalidArgumentError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value
