"""Hypergradients by forward-mode differentiation through an unrolled inner optimization.

Forward mode carries the tangent :math:`Z_k = dw_k/d\\lambda \\cdot u` along the trajectory (real-time
recurrent learning; Franceschi et al., 2017) and reads off :math:`dL_{out}/d\\lambda \\cdot u` at the end.
One tangent per hyperparameter scalar is needed for the full hypergradient, so it suits a few
hyperparameters (learning rates, a global weight decay), while memory stays flat in the number of steps. The
tangents are pushed through one unroll together with ``torch.func.vmap`` over ``torch.func.jvp``; each step's
randomness is seeded from ``(seed, step)`` and shared by all tangents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

from nestopt import _rng, tree
from nestopt.autodiff import LossFn, check_tree, raw_vjp
from nestopt.errors import InvalidArgumentError, NonFiniteError, TooLargeError, UnsupportedError
from nestopt.hypergrad._unroll import batch_schedule, check_steps
from nestopt.hypergrad.result import HypergradInfo, HypergradResult
from nestopt.hypergrad.strategy import Problem
from nestopt.hypergrad.unrolled import (
    UnrollStrategy,
    check_optimizer,
    detach_state,
    divergence,
    report_divergence,
    unusable_error,
)
from nestopt.linalg import Status
from nestopt.optim.functional import FunctionalOptimizer
from nestopt.tree import Tree

__all__ = ["Forward", "forward"]


def _unread(inner_loss: LossFn, outer_loss: LossFn, optimizer: FunctionalOptimizer, w: Tree, state: Any,
            h: Tree, batch: Any, outer_batch: Any) -> list[str]:  # fmt: skip
    """Hyperparameters that neither one step (loss and optimizer) nor the outer loss reads, structurally."""
    hh = {k: v.detach().requires_grad_(True) for k, v in h.items()}
    ww = {k: v.detach().requires_grad_(True) for k, v in w.items()}
    with torch.enable_grad():
        g = torch.autograd.grad(inner_loss(ww, hh, batch), list(ww.values()), create_graph=True, allow_unused=True)
        grads = {k: torch.zeros_like(v) if gi is None else gi for (k, v), gi in zip(ww.items(), g)}
        new_w, _ = optimizer.update(grads, state, ww, hh)
        outs = [*new_w.values(), outer_loss(tree.detach(w), hh, outer_batch)]
        got = raw_vjp([o.sum() for o in outs], list(hh.values()))
    return [k for k, gi in zip(hh, got) if gi is None]


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
    seed: int | None = None,
    throw: bool = False,
) -> HypergradResult:
    """Forward-mode hypergradient through ``steps`` steps of ``optimizer`` from ``params0``.

    Same arguments and result as :func:`nestopt.hypergrad.unrolled` (without truncation), plus:

    Args:
        max_hparams: refuse more hyperparameter scalars than this (each costs one tangent).
        chunk_size: push at most this many tangents through the unroll at once (``None``: all).

    Raises:
        UnsupportedError: a hyperparameter is read neither by the steps nor by the outer loss.

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
    optimizer = check_optimizer(optimizer)
    schedule = batch_schedule(inner_batches, check_steps(steps))
    n = tree.numel(hparams)
    if n > max_hparams:
        raise TooLargeError(
            f"forward mode needs one tangent per hyperparameter scalar: {n} exceeds max_hparams={max_hparams}; "
            "use hypergrad.unrolled (reverse mode) or hypergrad.implicit for many hyperparameters"
        )
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise InvalidArgumentError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    seed = _rng.fresh_seed() if seed is None else int(seed)
    w0 = tree.clone(params0)
    h0 = tree.detach(hparams)
    state0 = optimizer.init(w0) if opt_state is None else detach_state(opt_state)
    batches = [schedule(k) for k in range(steps)]
    with _rng.fork(_rng.derive(seed, 0)):
        unusable = _unread(inner_loss, outer_loss, optimizer, w0, state0, h0, batches[0], outer_batch)
    if unusable:
        raise unusable_error(unusable)
    state_leaves, state_spec = pytree.tree_flatten(state0)
    tensor_idx = [i for i, x in enumerate(state_leaves) if isinstance(x, Tensor)]
    plain = {i: x for i, x in enumerate(state_leaves) if not isinstance(x, Tensor)}

    def run(h: Tree) -> tuple[Tensor, tuple[Tree, list[Tensor], Tensor, Tensor]]:
        w, state = w0, state0
        g: Tree = {}
        losses = []
        for k, batch in enumerate(batches):
            with _rng.fork(_rng.derive(seed, k)):
                g, value = torch.func.grad_and_value(lambda w_, b=batch: inner_loss(w_, h, b))(w)
            losses.append(value)
            w, state = optimizer.update(g, state, w, h)
        value = outer_loss(w, h, outer_batch)
        leaves = pytree.tree_flatten(state)[0]
        plain.update({i: x for i, x in enumerate(leaves) if not isinstance(x, Tensor)})
        return value, (w, [leaves[i] for i in tensor_idx], tree.norm(g), torch.stack(losses))

    vec, spec = tree.flatten(h0)
    basis = tree.unflatten(torch.eye(n, dtype=vec.dtype, device=vec.device), spec)

    def push(u: Tree) -> tuple[Tensor, Any, Tensor]:
        out: tuple[Any, ...] = torch.func.jvp(run, (h0,), (u,), has_aux=True)
        value, tangent, aux = out
        return tangent, aux, value

    with torch.enable_grad():
        batched = torch.func.vmap(push, out_dims=(0, None, None), chunk_size=chunk_size, randomness="same")  # type: ignore[arg-type]
        tangents, (w_end, state_tensors, last_norm, losses), values = batched(basis)
    value = values.reshape(-1)[0] if values.dim() else values
    if not bool(torch.isfinite(value)):
        raise NonFiniteError(f"outer_loss returned a non-finite value ({float(value)}) after the unroll")
    grads = tree.unflatten(tangents.reshape(n), spec)
    if not tree.all_finite(grads):
        raise NonFiniteError("the forward-mode hypergradient is not finite: lower the inner learning rate or the steps")
    leaves = [
        state_tensors[tensor_idx.index(i)].detach() if i in tensor_idx else plain[i] for i in range(len(state_leaves))
    ]
    loss_list = list(losses.detach().unbind())
    why = divergence(loss_list, w0, tree.detach(w_end))
    if why:
        report_divergence("forward", why, throw)
    info = HypergradInfo(
        method="forward",
        status=Status.DIVERGED if why else Status.EXACT,
        iterations=steps,
        residual=None,
        hvp_calls=0,
        grad_calls=steps + 1,
        outer_loss=float(value),
        inner_grad_norm=float(last_norm),
        message=why or "exact derivative of the unrolled objective",
        extra={"tangents": n},
    )
    return HypergradResult(
        tree.detach(grads), info, params=tree.detach(w_end), opt_state=pytree.tree_unflatten(leaves, state_spec),
        inner_losses=[float(v) for v in loss_list],
    )  # fmt: skip


@dataclass
class Forward(UnrollStrategy):
    """Forward-mode unrolling as a strategy: ``Forward(optimizer=sgd(lr=0.1), steps=20)``.

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
    throw: bool = False
    name = "forward"

    def _estimate(self, problem: Problem, batches: list[Any]) -> HypergradResult:
        if problem.step_loss is not problem.inner_loss:
            raise UnsupportedError(
                "forward mode runs the inner steps inside torch.func transforms, where a model's buffers "
                "(BatchNorm running statistics) cannot be updated: use hypergrad.Unrolled for this model"
            )
        return forward(
            problem.inner_loss, problem.outer_loss, tree.detach(problem.params), problem.hparams, batches,
            problem.next_val(), optimizer=self.optimizer, steps=self.steps, max_hparams=self.max_hparams,
            chunk_size=self.chunk_size, opt_state=self._opt_state, seed=problem.seed, throw=self.throw,
        )  # fmt: skip

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
            inner_loss, outer_loss, params0, hparams, inner_batches, outer_batch, optimizer=self.optimizer,
            steps=self.steps, max_hparams=self.max_hparams, chunk_size=self.chunk_size, opt_state=opt_state,
            throw=self.throw,
        )  # fmt: skip
