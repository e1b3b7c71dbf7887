"""Hypergradients by reverse-mode differentiation through an unrolled inner optimization.

Starting from :math:`w_0`, ``K`` steps of a differentiable optimizer give
:math:`w_{k+1} = \\Phi(w_k, s_k, \\lambda, B_k)`. :func:`unrolled_vjp` pulls a cotangent :math:`v` on
:math:`w_K` back to the hyperparameters and to the initial weights,

.. math::  v \\mapsto \\Big(\\frac{\\partial w_K}{\\partial \\lambda}\\Big)^{\\!\\top} v, \\quad
           \\Big(\\frac{\\partial w_K}{\\partial w_0}\\Big)^{\\!\\top} v,

and :func:`unrolled` is the exact derivative of the unrolled objective :math:`L_{out}(w_K(\\lambda), \\lambda)`
(Maclaurin et al., 2015; Franceschi et al., 2017): the outer loss's direct term plus the VJP of its gradient.

* ``truncate=T`` differentiates only the last ``T`` steps (Shaban et al., 2019): the first ``K - T``
  steps run without a graph.
* ``checkpoint=True`` keeps no graph across steps. The backward pass bisects the trajectory: it stores
  the state at the midpoint of the segment it works on, recursively, so at most
  :math:`\\lceil\\log_2 T\\rceil + 1` states are alive at once and only one step's graph exists at a time, at
  the price of recomputing about :math:`\\tfrac12 T \\log_2 T` forward steps. Every step's loss is evaluated
  with torch's global generators seeded from ``(seed, step)``, so a recomputed step draws the same dropout
  masks and ``checkpoint=True`` equals ``checkpoint=False`` to rounding.

An unroll whose inner loss or parameters grow by more than a factor of a million reports status
``DIVERGED`` (a :class:`~nestopt.errors.SolverWarning`, or :class:`~nestopt.errors.SolverDivergedError`
with ``throw=True``); a non-finite loss raises :class:`~nestopt.errors.NonFiniteError` naming the step.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

from nestopt import _rng, tree
from nestopt.autodiff import Counter, LossFn, check_tree, raw_vjp
from nestopt.errors import (
    InvalidArgumentError,
    NonFiniteError,
    SolverDivergedError,
    SolverWarning,
    UnsupportedError,
)
from nestopt.hypergrad._outer import outer_gradients
from nestopt.hypergrad._unroll import batch_schedule, check_steps, inner_step
from nestopt.hypergrad.result import HypergradInfo, HypergradResult, VJPResult
from nestopt.hypergrad.strategy import Problem, Strategy
from nestopt.linalg import Status
from nestopt.optim.functional import FunctionalOptimizer
from nestopt.tree import Tree

__all__ = ["Unrolled", "unrolled", "unrolled_vjp"]

_State = tuple[Tree, dict[str, Any]]
GROWTH_LIMIT = 1e6
"""An unroll whose inner loss or parameter norm grows by more than this factor is reported as diverged."""


def check_optimizer(optimizer: Any) -> FunctionalOptimizer:
    """Raise unless ``optimizer`` is a differentiable functional optimizer."""
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


def detach_state(state: dict[str, Any]) -> dict[str, Any]:
    """A functional optimizer state with every tensor detached."""
    return pytree.tree_map(lambda x: x.detach() if isinstance(x, torch.Tensor) else x, state)


def divergence(losses: list[Tensor], w0: Tree, w_end: Tree) -> str:
    """Why an unroll counts as diverged (its loss or its parameters grew a millionfold), or ``""``."""
    first = abs(float(losses[0]))
    worst = float(torch.stack(losses).max())
    if worst > GROWTH_LIMIT * max(1.0, first):
        return f"the inner loss grew from {first:.3g} to {worst:.3g} during the unroll"
    n0, n1 = float(tree.norm(w0)), float(tree.norm(w_end))
    if n1 > GROWTH_LIMIT * max(1.0, n0):
        return f"the parameters' norm grew from {n0:.3g} to {n1:.3g} during the unroll"
    return ""


def report_divergence(method: str, why: str, throw: bool) -> None:
    text = f"{method}: diverged: {why}; lower the inner learning rate or the number of steps"
    if throw:
        raise SolverDivergedError(text)
    warnings.warn(text, SolverWarning, stacklevel=3)


def raise_nonfinite() -> None:
    raise NonFiniteError("the unrolled hypergradient is not finite: lower the inner learning rate or the steps")


def unusable_error(names: list[str]) -> UnsupportedError:
    return UnsupportedError(
        f"hyperparameters {names} are read neither by the unrolled steps (inner loss and optimizer) nor by the "
        "outer loss, so their hypergradient would be zero. A learning-rate hyperparameter needs an optimizer "
        "that reads it: e.g. hparams.LearningRate(...).sgd() instead of functional.sgd(lr=0.1)"
    )


class _Unroll:
    """One unrolled trajectory: :meth:`forward` runs it, then :meth:`vjp` pulls one cotangent back through it."""

    def __init__(
        self,
        inner_loss: LossFn,
        params0: Tree,
        hparams: Tree,
        inner_batches: Any,
        *,
        optimizer: FunctionalOptimizer,
        steps: int,
        truncate: int | None,
        checkpoint: bool,
        opt_state: dict[str, Any] | None,
        seed: int | None,
        step_loss: LossFn | None,
    ) -> None:
        self.params0 = check_tree(params0, "params0")
        self.hparams = check_tree(hparams, "hparams")
        self.optimizer = check_optimizer(optimizer)
        self.schedule = batch_schedule(inner_batches, steps)
        self.steps = steps
        self.differentiated = _check_truncate(truncate, steps)
        self.first = steps - self.differentiated
        self.checkpoint = bool(checkpoint)
        self.opt_state = opt_state
        self.seed = _rng.fresh_seed() if seed is None else int(seed)
        self.inner_loss = inner_loss
        self.step_loss = inner_loss if step_loss is None else step_loss
        self.counter = Counter()
        self.losses: list[Tensor] = []
        self.extra: dict[str, Any] = {"truncate": truncate, "checkpoint": self.checkpoint}

    def _step(self, first: bool, w: Tree, s: dict[str, Any], h: Tree, k: int, graph: bool) -> tuple[Tree, Any, Tree]:
        """Step ``k``; a ``first`` evaluation uses the step loss and records the loss, a recomputation neither."""
        w, s, g, value = inner_step(
            self.step_loss if first else self.inner_loss, self.optimizer, w, s, h, self.schedule(k),
            create_graph=graph, counter=self.counter, step=k, seed=self.seed,
        )  # fmt: skip
        if first:
            self.losses.append(value)
        return w, s, g

    def forward(self) -> tuple[Tree, dict[str, Any]]:
        """Run the unroll; returns the final (detached) parameters and optimizer state."""
        w: Tree = tree.clone(self.params0)
        state = self.optimizer.init(w) if self.opt_state is None else detach_state(self.opt_state)
        g: Tree = {}
        for k in range(self.first):
            w, state, g = self._step(True, w, state, self.hparams, k, False)
        if self.checkpoint:
            self.start: _State = (w, state)
            for k in range(self.first, self.steps):
                w, state, g = self._step(True, w, state, self.hparams, k, False)
            self.end: _State = (w, state)
        else:
            self.h = {k: v.detach().requires_grad_(True) for k, v in self.hparams.items()}
            self.w_start = {k: v.detach().requires_grad_(self.first == 0) for k, v in w.items()}
            w = self.w_start
            for k in range(self.first, self.steps):
                w, state, g = self._step(True, w, state, self.h, k, True)
            self.w_graph = w
        self.last_grad_norm = float(tree.norm(g))
        self.final = tree.detach(w), detach_state(state)
        return self.final

    def vjp(self, cotangent: Tree) -> tuple[Tree, Tree | None, tuple[str, ...]]:
        """The cotangents on the hyperparameters and (untruncated) on the initial weights, and the names of
        the hyperparameters the differentiated steps never read."""
        tree.check_like(self.final[0], cotangent, "params", "cotangent")
        keys = list(self.hparams)
        if self.checkpoint:
            bisect = _Bisection(self)
            leaves, _, _ = _float_leaves(self.end[1])
            ct_s = [torch.zeros_like(x) if isinstance(x, torch.Tensor) else None for x in leaves]
            ct_w0, _ = bisect.reverse(self.first, self.steps, self.start, tree.detach(cotangent), ct_s)
            self.extra.update(recomputed_steps=bisect.recomputed, peak_stored_states=bisect.peak_states)
            ct_h, used = bisect.h_grad, bisect.used
        else:
            w_keys = list(self.w_graph)
            inputs = [self.h[k] for k in keys] + ([self.w_start[k] for k in w_keys] if self.first == 0 else [])
            got = raw_vjp([self.w_graph[k] for k in w_keys], inputs, [cotangent[k] for k in w_keys])
            self.w_graph = {}  # release the graph
            used = {k for k, g in zip(keys, got) if g is not None}
            ct_h = {k: torch.zeros_like(self.hparams[k]) if g is None else g for k, g in zip(keys, got)}
            ct_w0 = {k: torch.zeros_like(self.params0[k]) if g is None else g for k, g in zip(w_keys, got[len(keys) :])}
        unused = tuple(k for k in keys if k not in used)
        return tree.detach(ct_h), (tree.detach(ct_w0) if self.first == 0 else None), unused

    def info(self, outer_value: float, throw: bool) -> HypergradInfo:
        why = divergence(self.losses, self.params0, self.final[0]) if self.losses else ""
        if why:
            report_divergence("unrolled", why, throw)
        return HypergradInfo(
            method="unrolled",
            status=Status.DIVERGED if why else Status.EXACT,
            iterations=self.differentiated,
            residual=None,
            hvp_calls=0,
            grad_calls=self.counter.grads,
            outer_loss=outer_value,
            inner_grad_norm=self.last_grad_norm,
            message=why or "exact derivative of the unrolled objective",
            extra=self.extra,
        )


class _Bisection:
    """Reverse pass through steps ``[start, end)`` with logarithmic memory (see the module docstring)."""

    def __init__(self, unroll: _Unroll) -> None:
        self.u = unroll
        self.h = {k: v.detach().requires_grad_(True) for k, v in unroll.hparams.items()}
        self.h_grad = tree.zeros_like(unroll.hparams)
        self.used: set[str] = set()
        self.recomputed = 0
        self.peak_states = 0
        self._alive = 0

    def _forward(self, snap: _State, start: int, end: int) -> _State:
        w, s = snap
        for k in range(start, end):
            w, s, _ = self.u._step(False, w, s, self.u.hparams, k, False)
            self.recomputed += 1
        return w, s

    def _vjp_step(self, snap: _State, k: int, ct_w: Tree, ct_s: list[Any]) -> tuple[Tree, list[Any]]:
        w0 = {key: v.detach().requires_grad_(True) for key, v in snap[0].items()}
        leaves, spec, idx = _float_leaves(snap[1])
        leaves = list(leaves)
        for i in idx:
            leaves[i] = leaves[i].detach().requires_grad_(True)
        s0 = pytree.tree_unflatten(leaves, spec)
        w1, s1, _ = self.u._step(False, w0, s0, self.h, k, True)
        out_leaves, _, out_idx = _float_leaves(s1)
        outputs = list(w1.values()) + [out_leaves[i] for i in out_idx]
        cotangents = list(ct_w.values()) + [ct_s[i] for i in out_idx]
        live = [(o, c) for o, c in zip(outputs, cotangents) if o.requires_grad]
        inputs = list(w0.values()) + [leaves[i] for i in idx] + list(self.h.values())
        got = raw_vjp([o for o, _ in live], inputs, [c for _, c in live])
        grads_in = [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, got)]
        n_w, n_s = len(w0), len(idx)
        ct_w_prev = dict(zip(w0, grads_in[:n_w]))
        ct_s_prev: list[Any] = [None] * len(leaves)
        for i, g in zip(idx, grads_in[n_w : n_w + n_s]):
            ct_s_prev[i] = g
        for key, g, raw in zip(self.h, grads_in[n_w + n_s :], got[n_w + n_s :]):
            self.h_grad[key] = self.h_grad[key] + g
            if raw is not None:
                self.used.add(key)
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


def unrolled_vjp(
    inner_loss: LossFn,
    params0: Tree,
    hparams: Tree,
    inner_batches: Any,
    cotangent: Tree | Callable[[Tree], Tree],
    *,
    optimizer: FunctionalOptimizer,
    steps: int,
    truncate: int | None = None,
    checkpoint: bool = False,
    opt_state: dict[str, Any] | None = None,
    seed: int | None = None,
    step_loss: LossFn | None = None,
    throw: bool = False,
) -> VJPResult:
    """Pull a cotangent on the final weights of an unroll back to the hyperparameters and initial weights.

    Args:
        inner_loss: ``(params, hparams, batch) -> scalar``.
        params0: the initial inner parameters (not modified).
        hparams: the hyperparameters.
        inner_batches: one batch per step: a list, an iterator, or a callable ``k -> batch``.
        cotangent: :math:`v` on the final weights :math:`w_K`, a tree, or a callable ``w_K -> tree`` when it
            depends on where the unroll ends (the gradient of a loss at :math:`w_K`, say).
        optimizer: a differentiable optimizer from :mod:`nestopt.optim.functional`.
        steps: the number of inner steps ``K``.
        truncate: differentiate only the last ``truncate`` steps (``None``: all of them; then ``params0`` of
            the result is the cotangent on the initial weights, otherwise ``None``).
        checkpoint: trade recomputation for memory (logarithmic in the number of differentiated steps).
        opt_state: the optimizer's initial state (default ``optimizer.init(params0)``).
        seed: seeds each step's randomness (``None``: one draw from torch's global generator).
        step_loss: the loss for each step's first evaluation (default ``inner_loss``); it may have side
            effects, such as updating BatchNorm statistics, which recomputed steps never repeat.
        throw: raise :class:`~nestopt.errors.SolverDivergedError` instead of warning when the unroll diverges.

    Returns:
        A :class:`VJPResult` with ``hparams``, ``params0`` (untruncated only), the final ``params`` and
        ``opt_state``, ``unused`` (hyperparameters the steps never read), ``inner_losses`` and ``info``.

    Example:
        >>> import torch
        >>> from nestopt import hypergrad
        >>> from nestopt.optim import functional
        >>> inner = lambda p, h, b: 0.5 * ((p["w"] - h["c"]) ** 2).sum()   # w_1 = w_0 - 0.5 (w_0 - c)
        >>> res = hypergrad.unrolled_vjp(inner, {"w": torch.zeros(2)}, {"c": torch.ones(2)}, [None],
        ...                              {"w": torch.ones(2)}, optimizer=functional.sgd(lr=0.5), steps=1)
        >>> res.hparams["c"], res.params0["w"]
        (tensor([0.5000, 0.5000]), tensor([0.5000, 0.5000]))
    """
    unroll = _Unroll(
        inner_loss, params0, hparams, inner_batches, optimizer=optimizer, steps=check_steps(steps),
        truncate=truncate, checkpoint=checkpoint, opt_state=opt_state, seed=seed, step_loss=step_loss,
    )  # fmt: skip
    final_w, final_state = unroll.forward()
    ct = cotangent(final_w) if callable(cotangent) else cotangent
    ct_h, ct_w0, unused = unroll.vjp(ct)
    info = unroll.info(float("nan"), throw)
    if not tree.all_finite(ct_h) or (ct_w0 is not None and not tree.all_finite(ct_w0)):
        raise_nonfinite()
    return VJPResult(
        ct_h, info, params0=ct_w0, params=final_w, opt_state=final_state, unused=unused,
        inner_losses=[float(v) for v in unroll.losses],
    )  # fmt: skip


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
    seed: int | None = None,
    step_loss: LossFn | None = None,
    throw: bool = False,
) -> HypergradResult:
    """Reverse-mode hypergradient through ``steps`` steps of ``optimizer`` from ``params0``.

    Arguments as for :func:`unrolled_vjp`, plus ``outer_loss`` and its ``outer_batch``.

    Returns:
        A :class:`HypergradResult` with ``grads``, ``info``, the final ``params`` and ``opt_state``, and the
        ``inner_losses`` of the unrolled steps.

    Raises:
        UnsupportedError: a hyperparameter is read neither by the unrolled steps nor by the outer loss (its
            hypergradient would be a silent zero), e.g. a learning rate with an optimizer that ignores it.

    Example:
        >>> import torch
        >>> from nestopt import hypergrad
        >>> from nestopt.optim import functional
        >>> inner = lambda p, h, b: ((p["w"] - 1.0) ** 2).sum() + h["l2"] * (p["w"] ** 2).sum()
        >>> outer = lambda p, h, b: ((p["w"] - 2.0) ** 2).sum()
        >>> res = hypergrad.unrolled(inner, outer, {"w": torch.zeros(2)}, {"l2": torch.tensor(0.5)},
        ...                          [None] * 10, None, optimizer=functional.sgd(lr=0.1), steps=10)
        >>> res.grads["l2"].shape, res.info.iterations, res.info.status.value
        (torch.Size([]), 10, 'exact')
    """
    unroll = _Unroll(
        inner_loss, params0, hparams, inner_batches, optimizer=optimizer, steps=check_steps(steps),
        truncate=truncate, checkpoint=checkpoint, opt_state=opt_state, seed=seed, step_loss=step_loss,
    )  # fmt: skip
    final_w, final_state = unroll.forward()
    outer_value, g_w, g_h, outer_unused = outer_gradients(
        outer_loss, final_w, unroll.hparams, outer_batch, unroll.counter
    )
    ct_h, _, unused = unroll.vjp(g_w)
    unusable = sorted(set(unused) & set(outer_unused))
    if unusable:
        raise unusable_error(unusable)
    info = unroll.info(outer_value, throw)
    grads = tree.add(g_h, ct_h)
    if not tree.all_finite(grads):
        raise_nonfinite()
    return HypergradResult(
        grads, info, params=final_w, opt_state=final_state, inner_losses=[float(v) for v in unroll.losses]
    )


class UnrollStrategy(Strategy):
    """Shared logic of the strategies that take the inner steps themselves, with a functional optimizer."""

    differentiates = frozenset({"loss", "trajectory"})
    uses_inner_optimizer = False
    optimizer: FunctionalOptimizer
    steps: int

    def __post_init__(self) -> None:
        check_optimizer(self.optimizer)
        check_steps(self.steps)
        self._opt_state: dict[str, Any] | None = None

    @property
    def fixed_steps(self) -> int:  # type: ignore[override]
        return self.steps

    def _estimate(self, problem: Problem, batches: list[Any]) -> HypergradResult:
        raise NotImplementedError

    def inner_phase(self, problem: Problem) -> list[float]:
        return []  # the steps are taken, and differentiated, by hypergradient()

    def hypergradient(self, problem: Problem) -> HypergradResult:
        batches = [problem.next_train() for _ in range(self.steps)]
        res = self._estimate(problem, batches)
        assert res.params is not None
        problem.set_params(res.params)
        self._opt_state = res.opt_state
        return res

    def reset(self) -> None:
        self._opt_state = None

    def state_dict(self) -> dict[str, Any]:
        return {"opt_state": self._opt_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._opt_state = state.get("opt_state")


@dataclass
class Unrolled(UnrollStrategy):
    """Reverse-mode unrolling as a strategy: ``Unrolled(optimizer=sgd(lr=0.1), steps=20, truncate=5)``.

    In a training loop the strategy takes the ``steps`` inner steps itself with its differentiable
    ``optimizer`` (whose state carries over between outer steps under warm start) and differentiates them.
    Calling it directly runs :func:`unrolled` with its settings.

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
    throw: bool = False
    name = "unrolled"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_truncate(self.truncate, self.steps)

    def _estimate(self, problem: Problem, batches: list[Any]) -> HypergradResult:
        return unrolled(
            problem.inner_loss, problem.outer_loss, tree.detach(problem.params), problem.hparams, batches,
            problem.next_val(), optimizer=self.optimizer, steps=self.steps, truncate=self.truncate,
            checkpoint=self.checkpoint, opt_state=self._opt_state, seed=problem.seed, step_loss=problem.step_loss,
            throw=self.throw,
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
        return unrolled(
            inner_loss, outer_loss, params0, hparams, inner_batches, outer_batch, optimizer=self.optimizer,
            steps=self.steps, truncate=self.truncate, checkpoint=self.checkpoint, opt_state=opt_state,
            throw=self.throw,
        )  # fmt: skip
