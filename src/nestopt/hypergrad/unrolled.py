"""Hypergradients by reverse-mode differentiation through an unrolled inner optimization.

Starting from :math:`w_0`, ``K`` steps of a differentiable optimizer give
:math:`w_{k+1} = \\Phi(w_k, s_k, \\lambda, B_k)` and the hypergradient is the exact derivative of the
unrolled objective :math:`L_{out}(w_K(\\lambda), \\lambda)` (Maclaurin et al., 2015; Franceschi et al., 2017).

* ``truncate=T`` differentiates only the last ``T`` steps (Shaban et al., 2019): the first ``K - T``
  steps run without a graph.
* ``checkpoint=True`` keeps no graph across steps. The backward pass bisects the trajectory: it stores
  the state at the midpoint of the segment it works on, recursively, so at most
  :math:`\\lceil\\log_2 T\\rceil + 1` states are alive at once and only one step's graph exists at a time, at
  the price of recomputing about :math:`\\tfrac12 T \\log_2 T` forward steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import _pytree as pytree

from nestopt import tree
from nestopt.autodiff import Counter, LossFn, check_tree, evaluate_loss, vjp
from nestopt.errors import InvalidArgumentError, NonFiniteError
from nestopt.hypergrad._outer import outer_gradients
from nestopt.hypergrad._unroll import batch_schedule, check_steps, inner_step
from nestopt.hypergrad.result import HypergradInfo, HypergradResult
from nestopt.linalg import Status
from nestopt.optim.functional import FunctionalOptimizer
from nestopt.tree import Tree

__all__ = ["Unrolled", "unrolled"]

_State = tuple[Tree, dict[str, Any]]


def _check_optimizer(optimizer: Any) -> FunctionalOptimizer:
    if not isinstance(optimizer, FunctionalOptimizer):
        raise InvalidArgumentError(
            "optimizer must be a differentiable functional optimizer such as nestopt.optim.functional.sgd(lr=0.1), "
            f"got {optimizer!r}; torch.optim optimizers update in place and cannot be differentiated through"
        )
    return optimizer


def _check_truncate(truncate: int | None, steps: int) -> int:
    if truncate is None:
        return steps
    if not isinstance(truncate, int) or isinstance(truncate, bool) or not 1 <= truncate <= steps:
        raise InvalidArgumentError(f"truncate must be an integer in [1, steps={steps}] or None, got {truncate!r}")
    return truncate


def _float_leaves(state: dict[str, Any]) -> tuple[list[Any], Any, list[int]]:
    leaves, spec = pytree.tree_flatten(state)
    idx = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor) and leaf.is_floating_point()]
    return leaves, spec, idx


def _detach_state(state: dict[str, Any]) -> dict[str, Any]:
    return pytree.tree_map(lambda x: x.detach() if isinstance(x, torch.Tensor) else x, state)


class _Bisection:
    """Reverse pass through steps ``[start, end)`` with logarithmic memory (see the module docstring)."""

    def __init__(
        self, inner_loss: LossFn, optimizer: FunctionalOptimizer, hparams: Tree, schedule: Any, counter: Counter
    ):
        self.inner_loss, self.optimizer, self.schedule, self.counter = inner_loss, optimizer, schedule, counter
        self.h = {k: v.detach().requires_grad_(True) for k, v in hparams.items()}
        self.h_grad = tree.zeros_like(hparams)
        self.recomputed = 0
        self.peak_states = 0
        self.last_grad: Tree = {}
        self._alive = 0

    def _forward(self, snap: _State, start: int, end: int) -> _State:
        w, s = snap
        for k in range(start, end):
            w, s, self.last_grad = inner_step(
                self.inner_loss, self.optimizer, w, s, self.h, self.schedule(k),
                create_graph=False, counter=self.counter, step=k,
            )  # fmt: skip
            self.recomputed += 1
        return w, s

    def _vjp_step(self, snap: _State, k: int, ct_w: Tree, ct_s: list[Any]) -> tuple[Tree, list[Any]]:
        w0 = {key: v.detach().requires_grad_(True) for key, v in snap[0].items()}
        leaves, spec, idx = _float_leaves(snap[1])
        leaves = list(leaves)
        for i in idx:
            leaves[i] = leaves[i].detach().requires_grad_(True)
        s0 = pytree.tree_unflatten(leaves, spec)
        w1, s1, _ = inner_step(
            self.inner_loss, self.optimizer, w0, s0, self.h, self.schedule(k),
            create_graph=True, counter=self.counter, step=k,
        )  # fmt: skip
        out_leaves, _, out_idx = _float_leaves(s1)
        outputs = list(w1.values()) + [out_leaves[i] for i in out_idx]
        cotangents = list(ct_w.values()) + [ct_s[i] for i in out_idx]
        live = [(o, c) for o, c in zip(outputs, cotangents) if o.requires_grad]
        inputs = list(w0.values()) + [leaves[i] for i in idx] + list(self.h.values())
        grads_in = vjp([o for o, _ in live], inputs, [c for _, c in live])
        n_w, n_s = len(w0), len(idx)
        ct_w_prev = dict(zip(w0, grads_in[:n_w]))
        ct_s_prev: list[Any] = [None] * len(leaves)
        for i, g in zip(idx, grads_in[n_w : n_w + n_s]):
            ct_s_prev[i] = g
        for key, g in zip(self.h, grads_in[n_w + n_s :]):
            self.h_grad[key] = self.h_grad[key] + g
        return ct_w_prev, ct_s_prev

    def reverse(self, start: int, end: int, snap: _State, ct_w: Tree, ct_s: list[Any]) -> tuple[Tree, list[Any]]:
        self._alive += 1
        self.peak_states = max(self.peak_states, self._alive)
        try:
            if end - start == 1:
                return self._vjp_step(snap, start, ct_w, ct_s)
            mid = (start + end) // 2
            mid_snap = self._forward(snap, start, mid)
            ct_w, ct_s = self.reverse(mid, end, mid_snap, ct_w, ct_s)
            del mid_snap
            return self.reverse(start, mid, snap, ct_w, ct_s)
        finally:
            self._alive -= 1


def unrolled(
    inner_loss: LossFn,
    outer_loss: LossFn,
    params0: Tree,
    hparams: Tree,
    inner_batches: Any,
    outer_batch: Any,
    *,
    optimizer: FunctionalOptimizer,
    steps: int,
    truncate: int | None = None,
    checkpoint: bool = False,
    opt_state: dict[str, Any] | None = None,
) -> HypergradResult:
    """Reverse-mode hypergradient through ``steps`` steps of ``optimizer`` from ``params0``.

    Args:
        inner_loss, outer_loss: ``(params, hparams, batch) -> scalar``.
        params0: the initial inner parameters (not modified).
        hparams: the hyperparameters.
        inner_batches: one batch per step: a list, an iterator, or a callable ``k -> batch``.
        outer_batch: the batch of the outer loss.
        optimizer: a differentiable optimizer from :mod:`nestopt.optim.functional`.
        steps: the number of inner steps ``K``.
        truncate: differentiate only the last ``truncate`` steps (``None``: all of them).
        checkpoint: trade recomputation for memory (logarithmic in the number of differentiated steps).
        opt_state: the optimizer's initial state (default ``optimizer.init(params0)``), e.g. the ``opt_state``
            of a previous result, to continue a trajectory with its momentum.

    Returns:
        A :class:`HypergradResult` with ``grads``, ``info``, and the final ``params`` and ``opt_state``.

    Example:
        >>> import torch
        >>> from nestopt import hypergrad
        >>> from nestopt.optim import functional
        >>> inner = lambda p, h, b: ((p["w"] - 1.0) ** 2).sum() + h["l2"] * (p["w"] ** 2).sum()
        >>> outer = lambda p, h, b: ((p["w"] - 2.0) ** 2).sum()
        >>> res = hypergrad.unrolled(inner, outer, {"w": torch.zeros(2)}, {"l2": torch.tensor(0.5)},
        ...                          [None] * 10, None, optimizer=functional.sgd(lr=0.1), steps=10)
        >>> res.grads["l2"].shape, res.info.iterations
        (torch.Size([]), 10)
    """
    params0 = check_tree(params0, "params0")
    hparams = check_tree(hparams, "hparams")
    optimizer = _check_optimizer(optimizer)
    schedule = batch_schedule(inner_batches, steps)
    differentiated = _check_truncate(truncate, steps)
    counter = Counter()
    w: Tree = tree.clone(params0)
    state = optimizer.init(w) if opt_state is None else _detach_state(opt_state)
    last_grad: Tree = tree.zeros_like(w)
    first = steps - differentiated
    for k in range(first):
        w, state, last_grad = inner_step(
            inner_loss, optimizer, w, state, hparams, schedule(k), create_graph=False, counter=counter, step=k
        )
    extra: dict[str, Any] = {"truncate": truncate, "checkpoint": checkpoint}

    if checkpoint:
        bisect = _Bisection(inner_loss, optimizer, hparams, schedule, counter)
        start_snap = (w, state)
        w_end, s_end = bisect._forward(start_snap, first, steps)
        bisect.recomputed = 0
        outer_value, ct_w, direct, _ = outer_gradients(outer_loss, w_end, hparams, outer_batch, counter)
        leaves, _, _ = _float_leaves(s_end)
        ct_s = [torch.zeros_like(x) if isinstance(x, torch.Tensor) else None for x in leaves]
        bisect.reverse(first, steps, start_snap, ct_w, ct_s)
        grads = tree.add(direct, bisect.h_grad)
        final_w, final_state = tree.detach(w_end), s_end
        extra.update(recomputed_steps=bisect.recomputed, peak_stored_states=bisect.peak_states)
        last_norm = float(tree.norm(bisect.last_grad))
    else:
        h = {k: v.detach().requires_grad_(True) for k, v in hparams.items()}
        for k in range(first, steps):
            w, state, last_grad = inner_step(
                inner_loss, optimizer, w, state, h, schedule(k), create_graph=True, counter=counter, step=k
            )
        # the last inner gradient is needed only for its norm: release its buffer before the backward pass
        last_norm = float(tree.norm(last_grad))
        last_grad = {}
        with torch.enable_grad():
            value = evaluate_loss(outer_loss, w, h, outer_batch, "outer_loss")
        grads = dict(zip(h, vjp([value], list(h.values()))))
        counter.grads += 1
        outer_value = float(value.detach())
        final_w = tree.detach(w)
        final_state = _detach_state(state)
    if not tree.all_finite(grads):
        raise NonFiniteError("the unrolled hypergradient is not finite: lower the inner learning rate or the steps")
    info = HypergradInfo(
        method="unrolled",
        status=Status.CONVERGED,
        iterations=differentiated,
        residual=None,
        hvp_calls=0,
        grad_calls=counter.grads,
        outer_loss=outer_value,
        inner_grad_norm=last_norm,
        message="exact derivative of the unrolled objective",
        extra=extra,
    )
    return HypergradResult(tree.detach(grads), info, params=final_w, opt_state=final_state)


@dataclass
class Unrolled:
    """Reverse-mode unrolling as a strategy value: ``Unrolled(optimizer=sgd(lr=0.1), steps=20, truncate=5)``.

    Calling it runs :func:`unrolled` with its settings.

    Example:
        >>> from nestopt import hypergrad
        >>> from nestopt.optim import functional
        >>> hypergrad.Unrolled(optimizer=functional.sgd(lr=0.1), steps=20, truncate=5).truncate
        5
    """

    optimizer: FunctionalOptimizer
    steps: int
    truncate: int | None = None
    checkpoint: bool = False

    def __post_init__(self) -> None:
        _check_optimizer(self.optimizer)
        check_steps(self.steps)
        _check_truncate(self.truncate, self.steps)

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
        return unrolled(
            inner_loss,
            outer_loss,
            params0,
            hparams,
            inner_batches,
            outer_batch,
            optimizer=self.optimizer,
            steps=self.steps,
            truncate=self.truncate,
            checkpoint=self.checkpoint,
            opt_state=opt_state,
        )
