"""Hypergradients by forward-mode differentiation through an unrolled inner optimization.

Forward mode carries the tangent :math:`Z_k = dw_k/d\\lambda \\cdot u` along the trajectory (real-time
recurrent learning; Franceschi et al., 2017) and reads off :math:`dL_{out}/d\\lambda \\cdot u` at the end.
One tangent per hyperparameter scalar is needed for the full hypergradient, so it suits a few
hyperparameters (learning rates, a global weight decay), while memory stays flat in the number of steps. The
tangents are pushed through one unroll together with ``torch.func.vmap`` over ``torch.func.jvp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nestopt import tree
from nestopt.autodiff import LossFn, check_tree
from nestopt.errors import InvalidArgumentError, NonFiniteError, TooLargeError
from nestopt.hypergrad._unroll import batch_schedule, check_steps
from nestopt.hypergrad.result import HypergradInfo, HypergradResult
from nestopt.hypergrad.unrolled import _check_optimizer
from nestopt.linalg import Status
from nestopt.optim.functional import FunctionalOptimizer
from nestopt.tree import Tree

__all__ = ["Forward", "forward"]


def forward(
    inner_loss: LossFn,
    outer_loss: LossFn,
    params0: Tree,
    hparams: Tree,
    inner_batches: Any,
    outer_batch: Any,
    *,
    optimizer: FunctionalOptimizer,
    steps: int,
    max_hparams: int = 256,
    chunk_size: int | None = None,
    opt_state: dict[str, Any] | None = None,
) -> HypergradResult:
    """Forward-mode hypergradient through ``steps`` steps of ``optimizer`` from ``params0``.

    Same arguments and result as :func:`nestopt.hypergrad.unrolled` (without truncation), plus:

    Args:
        max_hparams: refuse more hyperparameter scalars than this (each costs one tangent).
        chunk_size: push at most this many tangents through the unroll at once (``None``: all).
        opt_state: the optimizer's initial state (default ``optimizer.init(params0)``). The final state is
            not returned in forward mode (``opt_state`` of the result is ``None``).

    Example:
        >>> import torch
        >>> from nestopt import hypergrad
        >>> from nestopt.optim import functional
        >>> inner = lambda p, h, b: ((p["w"] - 1.0) ** 2).sum() + h["l2"] * (p["w"] ** 2).sum()
        >>> outer = lambda p, h, b: ((p["w"] - 2.0) ** 2).sum()
        >>> args = (inner, outer, {"w": torch.zeros(2)}, {"l2": torch.tensor(0.5)}, [None] * 10, None)
        >>> fwd = hypergrad.forward(*args, optimizer=functional.sgd(lr=0.1), steps=10)
        >>> rev = hypergrad.unrolled(*args, optimizer=functional.sgd(lr=0.1), steps=10)
        >>> torch.allclose(fwd.grads["l2"], rev.grads["l2"])
        True
    """
    params0 = check_tree(params0, "params0")
    hparams = check_tree(hparams, "hparams")
    optimizer = _check_optimizer(optimizer)
    schedule = batch_schedule(inner_batches, check_steps(steps))
    n = tree.numel(hparams)
    if n > max_hparams:
        raise TooLargeError(
            f"forward mode needs one tangent per hyperparameter scalar: {n} exceeds max_hparams={max_hparams}; "
            "use hypergrad.unrolled (reverse mode) or hypergrad.implicit for many hyperparameters"
        )
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise InvalidArgumentError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    w0 = tree.clone(params0)
    h0 = tree.detach(hparams)
    batches = [schedule(k) for k in range(steps)]

    def run(h: Tree) -> tuple[Tensor, tuple[Tree, Tensor]]:
        w = w0
        state = optimizer.init(w) if opt_state is None else opt_state
        g: Tree = {}
        for batch in batches:
            g = torch.func.grad(lambda w_, b=batch: inner_loss(w_, h, b))(w)
            w, state = optimizer.update(g, state, w, h)
        value = outer_loss(w, h, outer_batch)
        return value, (w, tree.norm(g))

    vec, spec = tree.flatten(h0)
    basis = tree.unflatten(torch.eye(n, dtype=vec.dtype, device=vec.device), spec)

    def push(u: Tree) -> tuple[Tensor, tuple[Tree, Tensor], Tensor]:
        out: tuple[Any, ...] = torch.func.jvp(run, (h0,), (u,), has_aux=True)
        value, tangent, aux = out
        return tangent, aux, value

    with torch.enable_grad():
        batched = torch.func.vmap(push, out_dims=(0, None, None), chunk_size=chunk_size)  # type: ignore[arg-type]
        tangents, (w_end, last_norm), values = batched(basis)
    value = values.reshape(-1)[0] if values.dim() else values
    if not bool(torch.isfinite(value)):
        raise NonFiniteError(f"outer_loss returned a non-finite value ({float(value)}) after the unroll")
    grads = tree.unflatten(tangents.reshape(n), spec)
    if not tree.all_finite(grads):
        raise NonFiniteError("the forward-mode hypergradient is not finite: lower the inner learning rate or the steps")
    info = HypergradInfo(
        method="forward",
        status=Status.CONVERGED,
        iterations=steps,
        residual=None,
        hvp_calls=0,
        grad_calls=steps + 1,
        outer_loss=float(value),
        inner_grad_norm=float(last_norm),
        message="exact derivative of the unrolled objective",
        extra={"tangents": n},
    )
    return HypergradResult(tree.detach(grads), info, params=tree.detach(w_end))


@dataclass
class Forward:
    """Forward-mode unrolling as a strategy value: ``Forward(optimizer=sgd(lr=0.1), steps=20)``.

    Example:
        >>> from nestopt import hypergrad
        >>> from nestopt.optim import functional
        >>> hypergrad.Forward(optimizer=functional.sgd(lr=0.1), steps=20).steps
        20
    """

    optimizer: FunctionalOptimizer
    steps: int
    max_hparams: int = 256
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        _check_optimizer(self.optimizer)
        check_steps(self.steps)

    def __call__(
        self,
        inner_loss: LossFn,
        outer_loss: LossFn,
        params0: Tree,
        hparams: Tree,
        inner_batches: Any,
        outer_batch: Any,
        *,
        opt_state: dict[str, Any] | None = None,
    ) -> HypergradResult:
        return forward(
            inner_loss,
            outer_loss,
            params0,
            hparams,
            inner_batches,
            outer_batch,
            optimizer=self.optimizer,
            steps=self.steps,
            max_hparams=self.max_hparams,
            chunk_size=self.chunk_size,
            opt_state=opt_state,
        )
