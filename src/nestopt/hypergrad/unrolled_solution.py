"""The weights after an unrolled inner optimization, inside torch's autograd graph.

:func:`unrolled_solution` runs ``K`` steps of a functional optimizer and returns :math:`w_K` as an ordinary
function of :math:`w_0` and of the hyperparameters: every step's gradient is taken with ``create_graph``, so
anything computed from :math:`w_K` can be differentiated by ``.backward()``, ``torch.autograd.grad`` or a
nestopt estimator, and *differentiated again*: an unrolled solution may sit inside the loss of a higher
level (MAML's meta-loss, the middle level of a three-level problem), whose Hessian-vector products then run
through the unroll. It is the graph-keeping twin of :func:`~nestopt.hypergrad.implicit_solution`, which is
differentiable once; its memory grows with ``K`` (use :func:`~nestopt.hypergrad.unrolled_vjp` with
``checkpoint=True`` when only a first-order VJP is needed and memory matters).
"""

from __future__ import annotations

from typing import Any

from nestopt import _rng, tree
from nestopt.autodiff import Counter, LossFn, check_tree
from nestopt.hypergrad._unroll import batch_schedule, check_steps, inner_step
from nestopt.hypergrad.result import HypergradInfo
from nestopt.hypergrad.unrolled import check_optimizer, detach_state, divergence, report_divergence
from nestopt.linalg import Status
from nestopt.optim.functional import FunctionalOptimizer
from nestopt.tree import Tree

__all__ = ["unrolled_solution"]


def unrolled_solution(
    inner_loss: LossFn,
    params0: Tree,
    hparams: Tree,
    inner_batches: Any,
    *,
    optimizer: FunctionalOptimizer,
    steps: int,
    create_graph: bool = True,
    opt_state: dict[str, Any] | None = None,
    seed: int | None = None,
    step_loss: LossFn | None = None,
    throw: bool = False,
) -> Tree:
    """The weights :math:`w_K` after ``steps`` steps of ``optimizer`` on ``inner_loss`` from ``params0``.

    .. math::  w_{k+1} = \\Phi(w_k, s_k, \\nabla_w L_{in}(w_k, \\lambda, B_k), \\lambda), \\qquad k < K

    With ``create_graph=True`` (default) the result stays connected to ``params0`` and ``hparams`` (those of
    their tensors that require grad) through every step, to any order of differentiation. With
    ``create_graph=False`` the steps run without a graph and the result is detached: the same trajectory,
    at the cost of training (first-order meta-learning, evaluation).

    Args:
        inner_loss: ``(params, hparams, batch) -> scalar``.
        params0: the initial weights; leaves that require grad (a model's parameters) receive gradients.
        hparams: the hyperparameters the loss and the optimizer read.
        inner_batches: one batch per step: a list, an iterator, or a callable ``k -> batch``.
        optimizer: a differentiable optimizer from :mod:`nestopt.optim.functional`.
        steps: the number of steps ``K``.
        create_graph: keep the graph of every step (see above).
        opt_state: the optimizer's initial state (default ``optimizer.init(params0)``).
        seed: seeds each step's randomness (dropout masks), as for :func:`~nestopt.hypergrad.unrolled_vjp`.
        step_loss: the loss each step evaluates (default ``inner_loss``), e.g. one that updates buffers.
        throw: raise :class:`~nestopt.errors.SolverDivergedError` instead of warning when the unroll diverges.

    Returns:
        The final weights, a tree with the keys of ``params0``. The run's diagnostics (status, gradient
        count, the inner loss of every step in ``extra["inner_losses"]``) are in
        ``unrolled_solution.last_info``.

    Example:
        >>> import torch
        >>> from nestopt import hypergrad
        >>> from nestopt.optim import functional
        >>> inner = lambda p, h, b: 0.5 * ((p["w"] - h["c"]) ** 2).sum()   # w_1 = w_0 - 0.5 (w_0 - c)
        >>> c = torch.ones(2, requires_grad=True)
        >>> w = hypergrad.unrolled_solution(inner, {"w": torch.zeros(2)}, {"c": c}, [None],
        ...                                 optimizer=functional.sgd(lr=0.5), steps=1)
        >>> w["w"].sum().backward()
        >>> c.grad
        tensor([0.5000, 0.5000])
    """
    w = check_tree(params0, "params0")
    h = check_tree(hparams, "hparams") if hparams else {}
    optimizer = check_optimizer(optimizer)
    schedule = batch_schedule(inner_batches, check_steps(steps))
    seed = _rng.fresh_seed() if seed is None else int(seed)
    counter = Counter()
    start = tree.detach(w)
    state = optimizer.init(start) if opt_state is None else opt_state
    if not create_graph:
        w, state = start, detach_state(state)
    losses = []
    g: Tree = {}
    for k in range(steps):
        w, state, g, value = inner_step(
            inner_loss if step_loss is None else step_loss, optimizer, w, state, h, schedule(k),
            create_graph=create_graph, counter=counter, step=k, seed=seed,
        )  # fmt: skip
        losses.append(value)
    why = divergence(losses, start, tree.detach(w))
    if why:
        report_divergence("unrolled_solution", why, throw)
    unrolled_solution.last_info = HypergradInfo(  # type: ignore[attr-defined]
        method="unrolled",
        status=Status.DIVERGED if why else Status.EXACT,
        iterations=steps,
        residual=None,
        hvp_calls=0,
        grad_calls=counter.grads,
        outer_loss=float("nan"),
        inner_grad_norm=float(tree.norm(g)),
        message=why or "the exact unrolled trajectory",
        extra={"inner_losses": [float(v) for v in losses], "create_graph": bool(create_graph)},
    )
    return w


unrolled_solution.last_info = None  # type: ignore[attr-defined]
