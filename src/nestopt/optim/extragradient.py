"""Extragradient around any ``torch.optim`` optimizer.

Extragradient (Korpelevich, 1976) takes a look-ahead step, evaluates the gradient there, and applies that
gradient from the original point:

.. math::  w_{t+1/2} = w_t - \\mathrm{lr}\\, g(w_t), \\qquad w_{t+1} = w_t - \\mathrm{lr}\\, g(w_{t+1/2}).

:class:`ExtraGradient` wraps a *base* optimizer and uses the base's update for both half steps (as the
Extra-Adam of Gidel et al., 2019): around ``torch.optim.SGD`` without momentum it is exactly the rule above;
around Adam or momentum both half steps update the base's moment estimates. Each step costs two gradient
evaluations.

It is a ``torch.optim.Optimizer`` that shares ``param_groups`` and ``state`` with its base, so learning-rate
schedulers, ``zero_grad`` and ``state_dict`` act on the base.

References:
    Korpelevich. The extragradient method for finding saddle points. 1976.
    Gidel, Berard, Vignoud, Vincent, Lacoste-Julien. A Variational Inequality Perspective on GANs. ICLR 2019.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from nestopt.errors import InvalidArgumentError

__all__ = ["ExtraGradient"]


class ExtraGradient(torch.optim.Optimizer):
    """Extragradient steps taken with a base optimizer's update rule.

    Use it with a closure that zeroes the gradients, evaluates the loss and calls ``backward``:
    ``opt.step(closure)`` calls it twice (at :math:`w_t` and at the look-ahead point). Or drive the two
    halves yourself: fill the gradients at :math:`w_t`, call :meth:`extrapolate`, fill the gradients at the
    look-ahead point, call :meth:`step` without a closure.

    Args:
        base: the optimizer whose update is used for both half steps.

    Example:
        >>> import torch
        >>> from nestopt.optim import ExtraGradient
        >>> x = torch.nn.Parameter(torch.tensor([1.0]))
        >>> y = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = ExtraGradient(torch.optim.SGD([x, y], lr=0.3))
        >>> def closure():  # min_x max_y x*y: gradient descent on x, ascent on y
        ...     opt.zero_grad()
        ...     x.grad, y.grad = y.detach().clone(), -x.detach().clone()
        ...     return x * y
        >>> for _ in range(200):
        ...     _ = opt.step(closure)
        >>> bool(x.abs() < 1e-3 and y.abs() < 1e-3)
        True
    """

    def __init__(self, base: torch.optim.Optimizer) -> None:
        if not isinstance(base, torch.optim.Optimizer):
            raise InvalidArgumentError(f"base must be a torch.optim.Optimizer, got {type(base).__name__}")
        if isinstance(base, ExtraGradient):
            raise InvalidArgumentError("base is already an ExtraGradient; wrap the inner optimizer once")
        self.base = base
        self._anchor: list[tuple[Tensor, Tensor]] | None = None
        self._initializing = True
        params = [p for group in base.param_groups for p in group["params"]]
        super().__init__(params, dict(base.defaults))
        self._initializing = False
        self._link()

    def _link(self) -> None:
        self.param_groups = self.base.param_groups
        self.state = self.base.state
        self.defaults = self.base.defaults

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if getattr(self, "_initializing", False):
            super().add_param_group(param_group)
        else:
            self.base.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state dict (the extrapolation anchor is not part of it)."""
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base.load_state_dict(state_dict)
        self._link()
        self._anchor = None

    @property
    def extrapolated(self) -> bool:
        """Whether :meth:`extrapolate` was called and :meth:`step` has not completed the step yet."""
        return self._anchor is not None

    @torch.no_grad()
    def extrapolate(self) -> None:
        """First half step: remember :math:`w_t` and move to the look-ahead point with the base's update."""
        if self._anchor is not None:
            raise InvalidArgumentError("extrapolate() was already called; call step() to complete the step first")
        self._anchor = [(p, p.detach().clone()) for group in self.param_groups for p in group["params"]]
        self.base.step()

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """A full extragradient step with ``closure``, or the second half after :meth:`extrapolate`.

        Returns the closure's value at :math:`w_t` (``None`` without a closure).
        """
        loss = None
        if closure is not None:
            if self._anchor is not None:
                raise InvalidArgumentError(
                    "step(closure) after extrapolate(): either drive both halves with a closure or call step()"
                )
            with torch.enable_grad():
                loss = closure()
            self.extrapolate()
            with torch.enable_grad():
                closure()
        if self._anchor is None:
            raise InvalidArgumentError(
                "ExtraGradient.step needs a closure, or extrapolate() first with the gradients at the current point"
            )
        for p, saved in self._anchor:
            p.copy_(saved)
        self._anchor = None
        self.base.step()
        return loss
