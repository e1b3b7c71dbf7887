"""Argument checks and helpers shared by the ``torch.optim`` optimizers of :mod:`nestopt.optim`."""

from __future__ import annotations

import cmath
import math
import numbers
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from nestopt.errors import InvalidArgumentError, OptimizerWarning, UnsupportedError

__all__ = [
    "ValidatedOptimizer",
    "check_coefficient",
    "check_lr",
    "check_real_params",
    "default_foreach",
    "grads_of_group",
    "state_buffers",
    "use_foreach",
    "warn_if_not_decaying",
    "with_weight_decay",
]


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

    With ``allow_complex=False`` the value must be real (a float) and is returned as a complex with zero
    imaginary part.
    """
    if isinstance(value, tuple) and allow_complex:
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


def warn_if_not_decaying(beta: complex, name: str, stacklevel: int = 3) -> None:
    """Warn (:class:`OptimizerWarning`) when ``|beta| >= 1``: the momentum buffer then never forgets."""
    if abs(beta) >= 1:
        warnings.warn(
            f"|{name}| = {abs(beta):.4g} >= 1: the momentum buffer does not decay, so the iterates usually "
            f"diverge or keep oscillating; use |{name}| < 1",
            OptimizerWarning,
            stacklevel=stacklevel,
        )


def check_real_params(params: Iterable[Tensor], optimizer: str) -> None:
    """Raise :class:`UnsupportedError` for complex or integer parameters: these optimizers step real ones."""
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise InvalidArgumentError(f"{optimizer} got a non-tensor parameter at position {i}: {type(p).__name__}")
        if not p.is_floating_point():
            raise UnsupportedError(
                f"{optimizer} steps real floating-point parameters; parameter {i} has dtype {p.dtype}. "
                "For complex parameters, optimize torch.view_as_real(p) instead"
            )


def default_foreach(params: list[Tensor]) -> bool:
    """torch's rule: the fused ``_foreach`` kernels by default only when every tensor is on a CUDA device."""
    return bool(params) and all(p.device.type == "cuda" for p in params)


def grads_of_group(group: dict[str, Any], optimizer: str) -> tuple[list[Tensor], list[Tensor]]:
    """The parameters of ``group`` that have a gradient, and those gradients (negated if ``maximize``)."""
    params: list[Tensor] = []
    grads: list[Tensor] = []
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise UnsupportedError(f"{optimizer} does not support sparse gradients")
        params.append(p)
        grads.append(-p.grad if group.get("maximize", False) else p.grad)
    return params, grads


def state_buffers(
    optimizer: torch.optim.Optimizer, params: list[Tensor], names: tuple[str, ...], *, count_steps: bool = False
) -> tuple[list[list[Tensor]], list[int]]:
    """Each parameter's state tensors ``names`` (zeros like the parameter on first use), one list per name,
    and, with ``count_steps``, each parameter's step count after incrementing it."""
    buffers: list[list[Tensor]] = [[] for _ in names]
    steps: list[int] = []
    for p in params:
        state = optimizer.state[p]
        if not state:
            if count_steps:
                state["step"] = 0
            for name in names:
                state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
        for bucket, name in zip(buffers, names):
            bucket.append(state[name])
        if count_steps:
            state["step"] += 1
            steps.append(state["step"])
    return buffers, steps


def use_foreach(group: dict[str, Any], params: list[Tensor]) -> bool:
    """Whether to take the ``_foreach`` path for ``group``."""
    foreach = group.get("foreach")
    return default_foreach(params) if foreach is None else bool(foreach)


def with_weight_decay(params: list[Tensor], grads: list[Tensor], weight_decay: float, foreach: bool) -> list[Tensor]:
    """``g + weight_decay * p`` (L2 regularization added to the gradient), out of place."""
    if weight_decay == 0:
        return grads
    if foreach:
        return list(torch._foreach_add(grads, params, alpha=weight_decay))
    return [g.add(p, alpha=weight_decay) for g, p in zip(grads, params)]


class ValidatedOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` that validates every parameter group, including ones added later.

    Subclasses implement :meth:`_validate_group`, which checks (and may normalize) the hyperparameters of a
    group after the defaults were filled in; a group that fails is not added.
    """

    def _validate_group(self, group: dict[str, Any]) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _step_group(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> None:
        """Update ``params`` (those of ``group`` with a gradient) from ``grads``."""
        raise NotImplementedError  # pragma: no cover - overridden

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Take one step; ``closure`` (optional) re-evaluates the loss with gradients enabled."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads = grads_of_group(group, type(self).__name__)
            if params:
                self._step_group(group, params, grads)
        return loss

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            check_real_params(group["params"], type(self).__name__)
            self._validate_group(group)
        except Exception:
            self.param_groups.pop()
            raise
