"""Hooks into a bilevel training run: called at its start, after every outer step, and at its end.

A callback is an object with any of the methods of :class:`Callback`, or a plain function
``fn(trainer, record)``, which is called after every outer step. :class:`TensorBoardLogger` writes every
numeric entry of the step records to TensorBoard (extra ``tensorboard``).

Callbacks must not draw from torch's global random generator expecting to change training: each outer step
seeds its own randomness, so a run's trajectory depends only on its seed.

Example:
    >>> from nestopt.bilevel import Callback
    >>> class PrintLoss(Callback):
    ...     def on_outer_step(self, trainer, record):
    ...         print(record["outer_step"], round(record["outer_loss"], 3))
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from nestopt.errors import InvalidArgumentError, UnsupportedError

if TYPE_CHECKING:
    from nestopt.bilevel.trainer import BilevelTrainer

__all__ = ["Callback", "TensorBoardLogger", "as_callbacks"]


class Callback:
    """Base class of callbacks; override the hooks you need."""

    def on_fit_start(self, trainer: BilevelTrainer) -> None:
        """Before the first outer step of a :meth:`~nestopt.BilevelTrainer.fit` call."""

    def on_outer_step(self, trainer: BilevelTrainer, record: dict[str, Any]) -> None:
        """After every outer step, with that step's record (already in ``trainer.history``)."""

    def on_fit_end(self, trainer: BilevelTrainer) -> None:
        """After the last outer step of a :meth:`~nestopt.BilevelTrainer.fit` call (also when it fails)."""


class _FunctionCallback(Callback):
    def __init__(self, fn: Callable[[BilevelTrainer, dict[str, Any]], Any]) -> None:
        self.fn = fn

    def on_outer_step(self, trainer: BilevelTrainer, record: dict[str, Any]) -> None:
        self.fn(trainer, record)


def as_callbacks(callbacks: Iterable[Any]) -> list[Callback]:
    """Normalize callbacks (objects with the hooks of :class:`Callback`, or functions) into a list."""
    out: list[Callback] = []
    for cb in callbacks:
        if isinstance(cb, Callback) or any(hasattr(cb, m) for m in ("on_outer_step", "on_fit_start", "on_fit_end")):
            out.append(cb)
        elif callable(cb):
            out.append(_FunctionCallback(cb))
        else:
            raise InvalidArgumentError(
                f"a callback must be a nestopt.bilevel.Callback or a function (trainer, record), got {cb!r}"
            )
    return out


class TensorBoardLogger(Callback):
    """Write each outer step's numeric record entries as TensorBoard scalars (``torch.utils.tensorboard``).

    Args:
        log_dir: the run's folder (``tensorboard --logdir`` its parent).
        prefix: prepended to every tag.

    Raises:
        UnsupportedError: the ``tensorboard`` package is missing (``pip install 'nestopt[tensorboard]'``).

    Example:
        >>> import tempfile
        >>> from nestopt.bilevel import TensorBoardLogger
        >>> logger = TensorBoardLogger(tempfile.mkdtemp())  # doctest: +SKIP
    """

    def __init__(self, log_dir: str | os.PathLike[str], *, prefix: str = "") -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise UnsupportedError(
                "TensorBoardLogger needs the tensorboard package: pip install 'nestopt[tensorboard]'"
            ) from err
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.prefix = prefix

    def on_outer_step(self, trainer: BilevelTrainer, record: dict[str, Any]) -> None:
        step = int(record["outer_step"])
        for key, value in record.items():
            if key == "outer_step" or isinstance(value, bool) or not isinstance(value, numbers.Real):
                continue
            if math.isfinite(float(value)):
                self.writer.add_scalar(f"{self.prefix}{key}", float(value), step)

    def on_fit_end(self, trainer: BilevelTrainer) -> None:
        self.writer.flush()
