"""How the ``torch.optim`` classes run a step: for-loop, ``_foreach``, or fused by ``torch.compile``.

A *step* is a function ``step(ops, *tensor_lists, **coefficients)`` that composes kernels of
:mod:`nestopt.optim._kernels` and updates the lists in place. :func:`run` picks the backend:

* ``foreach=False``: :data:`~nestopt.optim._ops.LOOP`, one tensor at a time;
* ``foreach=True``: :data:`~nestopt.optim._ops.FOREACH`, the ``torch._foreach_*`` kernels;
* ``fused=True``: ``torch.compile`` of the ``LOOP`` step (``fullgraph=True``), which fuses each tensor's
  update into one pass: complex momentum then reads the gradient, both buffers and the parameter and writes
  back three tensors (7 passes over parameter-sized memory, against about 20 for the ``_foreach`` path).
  Coefficients enter the compiled graph as 0-d float64 tensors, so new learning rates (schedulers) or step
  counts do not recompile. If compilation fails (no C++ compiler, an unsupported platform), the step warns
  once (:class:`~nestopt.errors.OptimizerWarning`) and runs the ``LOOP`` kernel from then on. ``torch.compile``
  compiles once per step function and set of tensor shapes (tens of seconds on a CPU), then reuses it.
"""

from __future__ import annotations

import functools
import numbers
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from nestopt.errors import OptimizerWarning
from nestopt.optim._ops import FOREACH, LOOP

__all__ = ["FusedStep", "run"]

Step = Callable[..., None]


def _tensor(value: Any, like: Tensor) -> Any:
    dtype = torch.float32 if like.device.type == "mps" else torch.float64
    if isinstance(value, list | tuple):
        return [_tensor(v, like) for v in value]
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=dtype, device=like.device)
    return value


class FusedStep:
    """``step`` compiled with ``torch.compile`` on the ``LOOP`` backend, with a fallback to the plain kernel.

    Attributes:
        error: why compilation failed (``None`` while the compiled path works).
    """

    def __init__(self, step: Step) -> None:
        self.step = step
        self.error: str | None = None
        self._compiled: Callable[..., None] | None = None

    def __call__(self, *lists: list[Tensor], **coefficients: Any) -> None:
        if self.error is None and lists and lists[0]:
            try:
                if self._compiled is None:
                    self._compiled = torch.compile(functools.partial(self.step, LOOP), fullgraph=True, dynamic=False)
                like = lists[0][0]
                self._compiled(*lists, **{k: _tensor(v, like) for k, v in coefficients.items()})
                return
            except Exception as err:  # compilation is unavailable here: fall back to the same kernel, eagerly
                self.error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                warnings.warn(
                    f"fused=True: torch.compile failed ({self.error}); running the for-loop kernel instead",
                    OptimizerWarning,
                    stacklevel=4,
                )
        self.step(LOOP, *lists, **coefficients)


_FUSED: dict[Step, FusedStep] = {}


def run(step: Step, *lists: list[Tensor], foreach: bool, fused: bool, **coefficients: Any) -> None:
    """Run ``step`` in place on ``lists``: fused, ``_foreach`` or for-loop (see the module docstring)."""
    if fused:
        if step not in _FUSED:
            _FUSED[step] = FusedStep(step)
        _FUSED[step](*lists, **coefficients)
    else:
        step(FOREACH if foreach else LOOP, *lists, **coefficients)
