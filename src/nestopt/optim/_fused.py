"""How the ``torch.optim`` classes run a step: for-loop, ``_foreach``, or fused by ``torch.compile``.

A *step* is a function ``step(ops, *tensor_lists, **coefficients)`` that composes kernels of
:mod:`nestopt.optim._kernels` and updates the lists in place. :func:`run` picks the backend:

* ``foreach=False``: :data:`~nestopt.optim._ops.LOOP`, the whole step for one tensor, then the next
  (:func:`per_tensor`: its buffers stay in cache between the kernel's operations);
* ``foreach=True``: :data:`~nestopt.optim._ops.FOREACH`, the ``torch._foreach_*`` kernels;
* ``fused=True``: ``torch.compile`` of the ``LOOP`` step (``fullgraph=True``), which fuses each tensor's
  update into one pass: complex momentum then reads the gradient, both buffers and the parameter and writes
  back three tensors (7 passes over parameter-sized memory, against 18 for the ``_foreach`` path).
  Coefficients enter the compiled graph as one float64 tensor, so new learning rates (schedulers) or step
  counts do not recompile. If compilation fails (no C++ compiler, an unsupported platform), the step warns
  once (:class:`~nestopt.errors.OptimizerWarning`) and runs the ``LOOP`` kernel from then on. ``torch.compile``
  compiles once per step function and set of tensor shapes (tens of seconds on a CPU), then reuses it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from nestopt.errors import OptimizerWarning
from nestopt.optim._ops import FOREACH, LOOP

__all__ = ["FusedStep", "run"]

Step = Callable[..., None]


def _pack(coefficients: dict[str, Any]) -> tuple[list[float], tuple[tuple[str, int | None], ...]]:
    """The numbers of ``coefficients`` (scalars, or lists with one per tensor) in one flat list, and its layout."""
    flat: list[float] = []
    spec: list[tuple[str, int | None]] = []
    for key, value in coefficients.items():
        if isinstance(value, list | tuple):
            flat.extend(float(v) for v in value)
            spec.append((key, len(value)))
        else:
            flat.append(float(value))
            spec.append((key, None))
    return flat, tuple(spec)


def _unpacked(
    step: Step, spec: tuple[tuple[str, int | None], ...], lists: tuple[list[Tensor], ...], packed: Tensor
) -> None:
    """``step`` on the ``LOOP`` backend with its coefficients read from ``packed`` (traced by ``torch.compile``)."""
    coefficients: dict[str, Any] = {}
    i = 0
    for key, n in spec:
        if n is None:
            coefficients[key] = packed[i]
            i += 1
        else:
            coefficients[key] = [packed[i + j] for j in range(n)]
            i += n
    step(LOOP, *lists, **coefficients)


class FusedStep:
    """``step`` compiled with ``torch.compile`` on the ``LOOP`` backend, with a fallback to the plain kernel.

    The coefficients (numbers, or lists of numbers) travel as one float64 tensor, so that changing them
    neither recompiles nor costs more than one small host-to-device copy per step.

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
                    self._compiled = torch.compile(
                        functools.partial(_unpacked, self.step), fullgraph=True, dynamic=False
                    )
                flat, spec = _pack(coefficients)
                like = lists[0][0]
                dtype = torch.float32 if like.device.type == "mps" else torch.float64
                self._compiled(spec, lists, torch.tensor(flat, dtype=dtype, device=like.device))
                return
            except Exception as err:  # compilation is unavailable here: fall back to the same kernel, eagerly
                self.error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                warnings.warn(
                    f"fused=True: torch.compile failed ({self.error}); running the for-loop kernel instead",
                    OptimizerWarning,
                    stacklevel=4,
                )
        per_tensor(self.step, lists, coefficients)


def per_tensor(step: Step, lists: tuple[list[Tensor], ...], coefficients: dict[str, Any]) -> None:
    """``step`` on the ``LOOP`` backend one tensor at a time, so that each tensor's buffers stay in cache
    across the kernel's operations (the steps are elementwise: no reduction across tensors)."""
    for i in range(len(lists[0])):
        step(
            LOOP,
            *[[xs[i]] for xs in lists],
            **{k: v[i] if isinstance(v, list | tuple) else v for k, v in coefficients.items()},
        )


_FUSED: dict[Step, FusedStep] = {}


def run(step: Step, *lists: list[Tensor], foreach: bool, fused: bool, **coefficients: Any) -> None:
    """Run ``step`` in place on ``lists``: fused, ``_foreach`` or for-loop (see the module docstring)."""
    if fused:
        if step not in _FUSED:
            _FUSED[step] = FusedStep(step)
        _FUSED[step](*lists, **coefficients)
    elif foreach:
        step(FOREACH, *lists, **coefficients)
    else:
        per_tensor(step, lists, coefficients)
