"""Exceptions and warnings raised by nestopt.

Every error that bad input can cause is a subclass of :class:`NestoptError`, and also of the built-in
exception that fits (``ValueError`` or ``TypeError``), so that ``except ValueError`` keeps working.
Messages name the offending argument and its value.

Example:
    >>> import nestopt
    >>> try:
    ...     nestopt.linalg.CG(steps=0)
    ... except nestopt.errors.NestoptError as err:
    ...     print(type(err).__name__)
    InvalidArgumentError
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "InvalidArgumentError",
    "NestoptError",
    "NestoptWarning",
    "NonFiniteError",
    "OptimizerWarning",
    "RankFailedError",
    "ShapeMismatchError",
    "SolverDivergedError",
    "SolverWarning",
    "TooLargeError",
    "UnsupportedError",
]


class NestoptError(Exception):
    """Root of every exception that nestopt raises on purpose."""


class InvalidArgumentError(NestoptError, ValueError):
    """An argument has a value outside the range the function accepts."""


class ShapeMismatchError(NestoptError, ValueError):
    """Two trees (dicts of tensors) that must match differ in keys, shapes, dtypes or devices."""


class NonFiniteError(NestoptError, ValueError):
    """A loss, gradient or solver iterate became NaN or infinite."""


class TooLargeError(NestoptError, ValueError):
    """A problem is too large for the requested method (for instance a dense Hessian)."""


class UnsupportedError(NestoptError, TypeError):
    """The combination of method and problem is not supported; the message says what to use instead."""


class CheckpointError(NestoptError, ValueError):
    """A checkpoint file cannot be loaded: it is not one, it was written for another set-up, or it carries
    objects other than tensors and plain values (which are never unpickled)."""


class RankFailedError(NestoptError, ConnectionError):
    """In a run over several processes (``torch.distributed``), another rank failed, hung, or called a different
    sequence of collectives; the message names it and what it raised."""


class SolverDivergedError(NestoptError, RuntimeError):
    """A solver asked to ``throw=True`` diverged or found that its assumptions do not hold."""


class NestoptWarning(UserWarning):
    """Root of the warnings that nestopt emits."""


class SolverWarning(NestoptWarning, RuntimeWarning):
    """A solver stopped without converging, diverged, or found negative curvature."""


class OptimizerWarning(NestoptWarning, RuntimeWarning):
    """An optimizer was configured so that it usually fails to converge, for instance momentum with ``|beta| >= 1``."""
