"""Argument checks of both optimizer front ends, and the coefficients of the transforms.

The ``torch.optim`` classes take numbers (:func:`check_lr`, :func:`check_coefficient`, :func:`check_betas`).
A transform coefficient (:data:`Coefficient`) may also be a tensor, a per-parameter tree, or a function of
the hyperparameters (``lr=lambda h: h["log_lr"].exp()``): :func:`coefficient` checks what can be checked
when the transform is built, and :func:`resolve` turns it into a kernel coefficient at each update.
"""

from __future__ import annotations

import cmath
import math
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import torch
from torch import Tensor

from nestopt.errors import InvalidArgumentError, OptimizerWarning
from nestopt.tree import Tree

__all__ = [
    "Coefficient",
    "check_betas",
    "check_coefficient",
    "check_lr",
    "coefficient",
    "complex_value",
    "resolve",
    "warn_if_not_decaying",
]

Coefficient: TypeAlias = float | complex | Tensor | Mapping[str, Any] | Callable[[Tree], Any]
"""A number, a tensor, a per-parameter tree ``{name: number or tensor}``, or ``hparams -> any of those``."""


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


def check_lr(lr: Any, name: str = "lr") -> float:
    """A finite real number >= 0, as a float."""
    if isinstance(lr, Tensor) and lr.numel() == 1 and not lr.is_complex():
        lr = float(lr)
    if not _is_number(lr) or isinstance(lr, complex):
        raise InvalidArgumentError(f"Invalid learning rate: {name}={lr!r}; it must be a real number")
    if not math.isfinite(lr) or lr < 0:
        raise InvalidArgumentError(f"Invalid learning rate: {name}={lr!r}; it must be finite and >= 0")
    return float(lr)


def check_coefficient(value: Any, name: str, *, allow_complex: bool = True) -> complex:
    """A finite coefficient, given as a number or as ``(magnitude, phase)``; returned as a Python complex.

    With ``allow_complex=False`` the value must be real and is returned as a complex with zero imaginary part.
    """
    if isinstance(value, tuple | list) and allow_complex:
        if len(value) != 2 or not all(_is_number(v) and not isinstance(v, complex) for v in value):
            raise InvalidArgumentError(
                f"{name} given as a tuple must be (magnitude, phase) of two reals, got {value!r}"
            )
        magnitude, phase = float(value[0]), float(value[1])
        if not (math.isfinite(magnitude) and math.isfinite(phase)):
            raise InvalidArgumentError(f"Invalid {name}: (magnitude, phase)={value!r}; both must be finite")
        if magnitude < 0:
            raise InvalidArgumentError(f"Invalid {name}: magnitude {magnitude!r} must be >= 0")
        return cmath.rect(magnitude, phase)
    if not _is_number(value):
        kind = "a real number" if not allow_complex else "a number (complex allowed) or (magnitude, phase)"
        raise InvalidArgumentError(f"Invalid {name}: {name}={value!r}; it must be {kind}")
    if isinstance(value, complex) and not allow_complex and value.imag != 0:
        raise InvalidArgumentError(f"Invalid {name}: {name}={value!r}; it must be real here")
    z = complex(value)
    if not cmath.isfinite(z):
        raise InvalidArgumentError(f"Invalid {name}: {name}={value!r}; it must be finite")
    return z


def check_betas(betas: Any, *, complex_beta1: bool) -> tuple[complex | float, float]:
    """Adam's ``(beta1, beta2)``: ``beta2`` real in ``[0, 1)``; ``beta1`` complex (any finite value, or
    ``(magnitude, phase)``) or, with ``complex_beta1=False``, real in ``[0, 1)``."""
    if not isinstance(betas, tuple | list) or len(betas) != 2:
        raise InvalidArgumentError(f"Invalid betas: {betas!r}; expected (beta1, beta2)")
    beta2 = check_coefficient(betas[1], "beta2", allow_complex=False).real
    if not 0.0 <= beta2 < 1.0:
        raise InvalidArgumentError(f"Invalid beta2: beta2={betas[1]!r}; it must be in [0, 1)")
    if complex_beta1:
        return check_coefficient(betas[0], "beta1"), beta2
    beta1 = check_coefficient(betas[0], "beta1", allow_complex=False).real
    if not 0.0 <= beta1 < 1.0:
        raise InvalidArgumentError(f"Invalid beta1: beta1={betas[0]!r}; it must be in [0, 1)")
    return beta1, beta2


def warn_if_not_decaying(beta: complex | float, name: str, stacklevel: int = 3) -> None:
    """Warn (:class:`OptimizerWarning`) when ``|beta| >= 1``: the momentum buffer then never forgets."""
    if abs(beta) >= 1:
        warnings.warn(
            f"|{name}| = {abs(beta):.4g} >= 1: the momentum buffer does not decay, so the iterates usually "
            f"diverge or keep oscillating; use |{name}| < 1",
            OptimizerWarning,
            stacklevel=stacklevel,
        )


def coefficient(
    name: str,
    value: Any,
    check: Callable[[str, Any], Any] | None = None,
    *,
    tree: bool = False,
) -> Any:
    """Check a transform coefficient where it is known (numbers, and tensors of one element) and return it.

    ``check(name, number)`` validates (and may normalize) a number; ``tree`` allows a per-parameter tree.
    Functions of the hyperparameters are returned as they are: their values are known only at update time.
    """
    if callable(value):
        return value
    if isinstance(value, Mapping):
        if not tree:
            raise InvalidArgumentError(f"{name} cannot be a per-parameter tree here, got keys {sorted(value)}")
        return {k: coefficient(f"{name}[{k!r}]", v, check) for k, v in value.items()}
    if isinstance(value, Tensor):
        if value.numel() == 1 and check is not None:
            item = value.detach().reshape(()).item()
            check(name, item)
        elif not bool(torch.isfinite(value.detach()).all()):
            raise InvalidArgumentError(f"{name} must be finite, got {value!r}")
        return value
    if not _is_number(value):
        raise InvalidArgumentError(
            f"{name} must be a number, a tensor{', a per-parameter tree' if tree else ''} or a function of the "
            f"hyperparameters, got {value!r}"
        )
    return check(name, value) if check is not None else value


def resolve(value: Any, hparams: Tree, keys: Sequence[str], name: str) -> Any:
    """The kernel coefficient of ``value`` for the tensors ``keys``: a scalar, or a list for a tree."""
    if callable(value):
        value = value(hparams)
    if isinstance(value, Mapping):
        missing = sorted(set(keys) - set(value))
        if missing:
            raise InvalidArgumentError(f"the per-parameter values of {name} lack keys {missing}")
        return [value[k] for k in keys]
    return value


def complex_value(value: Any) -> Any:
    """A complex coefficient from a number, a (complex) tensor, or ``(magnitude, phase)`` of numbers or tensors."""
    if isinstance(value, tuple | list):
        magnitude, phase = value
        if isinstance(magnitude, Tensor) or isinstance(phase, Tensor):
            return torch.polar(torch.as_tensor(magnitude), torch.as_tensor(phase))
        return cmath.rect(magnitude, phase)
    return value
