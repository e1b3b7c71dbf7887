"""The ``torch.optim`` base of :mod:`nestopt.optim`: group validation, gradients, state buffers, backends."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from nestopt.errors import InvalidArgumentError, UnsupportedError

__all__ = [
    "ValidatedOptimizer",
    "check_flags",
    "check_real_params",
    "default_foreach",
    "grads_of_group",
    "one_or_list",
    "state_buffers",
    "use_foreach",
]


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


def check_flags(group: dict[str, Any]) -> None:
    """``foreach`` and ``fused`` are ``None``/booleans, and not both ``True`` (torch's rule)."""
    for name in ("foreach", "fused"):
        if group.get(name) is not None and not isinstance(group[name], bool):
            raise InvalidArgumentError(f"{name} must be True, False or None, got {group[name]!r}")
    if group.get("foreach") and group.get("fused"):
        raise InvalidArgumentError("foreach=True and fused=True cannot be combined: fused replaces the foreach path")


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


def one_or_list(values: list[Any]) -> Any:
    """``values[0]`` when all values are equal (one coefficient for every tensor), else the list."""
    return values[0] if all(v == values[0] for v in values) else values


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

    def _backend(self, group: dict[str, Any], params: list[Tensor]) -> dict[str, bool]:
        """The ``foreach``/``fused`` flags of :func:`nestopt.optim._fused.run` for ``group``."""
        fused = bool(group.get("fused"))
        return {"foreach": not fused and use_foreach(group, params), "fused": fused}

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
            check_flags(group)
            self._validate_group(group)
        except Exception:
            self.param_groups.pop()
            raise
