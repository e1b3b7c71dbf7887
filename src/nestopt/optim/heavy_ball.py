"""Heavy-ball momentum with any real coefficient in (-1, 1), negative momentum included.

``torch.optim.SGD`` refuses ``momentum < 0``. Negative momentum (Gidel et al., 2019) damps the rotation of
adversarial games: with *alternating* updates it makes bilinear games converge, which neither plain
gradient descent-ascent nor positive momentum does. :class:`HeavyBall` is the heavy-ball method for any
real coefficient,

.. math::  b \\leftarrow \\beta b + g, \\qquad w \\leftarrow w - \\mathrm{lr}\\, b,

identical to ``torch.optim.SGD(lr=lr, momentum=beta)`` (no dampening, no Nesterov) for ``beta >= 0``.
It is the real special case of :class:`~nestopt.optim.ComplexMomentum` with one real buffer instead of two.

References:
    Gidel, Askari Hemmat, Pezeshki, Le Priol, Huang, Lacoste-Julien, Mitliagkas. Negative Momentum for
    Improved Game Dynamics. AISTATS 2019.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor

from nestopt._validate import nonnegative
from nestopt.optim import _kernels as K
from nestopt.optim._checks import check_coefficient, check_lr, warn_if_not_decaying
from nestopt.optim._common import ValidatedOptimizer, state_buffers
from nestopt.optim._fused import run
from nestopt.optim._ops import Ops

__all__ = ["HeavyBall", "heavy_ball"]


class HeavyBall(ValidatedOptimizer):
    """SGD with heavy-ball momentum of any real sign (negative momentum allowed).

    .. math::  b \\leftarrow \\beta b + g, \\qquad w \\leftarrow w - \\mathrm{lr}\\, b

    Args:
        params: parameters or parameter groups.
        lr: the step size.
        momentum: the real coefficient :math:`\\beta`; ``|momentum| >= 1`` warns
            (:class:`~nestopt.errors.OptimizerWarning`).
        weight_decay: L2 penalty added to the gradient.
        maximize: ascend instead of descend.
        foreach: use the ``torch._foreach_*`` kernels (default: only on CUDA).
        fused: one ``torch.compile``-fused pass per tensor (see :class:`~nestopt.optim.ComplexMomentum`).

    The same kernel, out of place, is :func:`nestopt.optim.functional.sgd` (``momentum`` of any sign).

    Example:
        >>> import torch
        >>> from nestopt.optim import HeavyBall
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = HeavyBall([w], lr=0.4, momentum=-0.2)
        >>> for _ in range(100):
        ...     opt.zero_grad()
        ...     (w ** 2).sum().backward()
        ...     opt.step()
        >>> bool(w.abs().max() < 1e-4)
        True
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.0,
        *,
        weight_decay: float = 0.0,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": check_lr(lr),
            "momentum": check_coefficient(momentum, "momentum", allow_complex=False).real,
            "weight_decay": nonnegative("weight_decay", weight_decay),
            "maximize": bool(maximize),
            "foreach": foreach,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        group["lr"] = check_lr(group["lr"])
        group["momentum"] = check_coefficient(group["momentum"], "momentum", allow_complex=False).real
        group["weight_decay"] = nonnegative("weight_decay", group["weight_decay"])
        warn_if_not_decaying(group["momentum"], "momentum", stacklevel=5)

    def _step_group(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> None:
        (bufs,), _ = state_buffers(self, params, ("momentum_buffer",))
        heavy_ball(
            params,
            grads,
            bufs,
            lr=group["lr"],
            momentum=group["momentum"],
            weight_decay=group["weight_decay"],
            **self._backend(group, params),
        )


def heavy_ball(
    params: list[Tensor],
    grads: list[Tensor],
    buffers: list[Tensor],
    *,
    lr: float,
    momentum: float,
    weight_decay: float = 0.0,
    foreach: bool = False,
    fused: bool = False,
) -> None:
    """The in-place step of :class:`HeavyBall`: updates params and buffers."""
    run(
        _heavy_ball_step, params, grads, buffers, foreach=foreach, fused=fused,
        lr=lr, momentum=momentum, weight_decay=weight_decay,
    )  # fmt: skip


def _heavy_ball_step(
    ops: Ops, params: list[Tensor], grads: list[Tensor], buffers: list[Tensor], *, lr: Any, momentum: Any,
    weight_decay: Any,
) -> None:  # fmt: skip
    grads = K.add_decayed_weights(ops, grads, params, weight_decay)
    d, _ = K.momentum(ops, grads, buffers, momentum)
    K.apply(ops, params, d, -lr)
