"""Shared machinery of the unrolled estimators: the batch schedule and one differentiable inner step."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from nestopt import _rng
from nestopt._validate import positive_int
from nestopt.autodiff import Counter, LossFn, evaluate_loss, vjp
from nestopt.errors import InvalidArgumentError
from nestopt.optim.functional import FunctionalOptimizer
from nestopt.tree import Tree

__all__ = ["batch_schedule", "check_steps", "inner_step"]


def check_steps(steps: Any) -> int:
    """Raise unless ``steps`` is a positive integer."""
    return positive_int("steps", steps)


def batch_schedule(inner_batches: Any, steps: int) -> Callable[[int], Any]:
    """Turn ``inner_batches`` into ``k -> batch`` for ``k in range(steps)``, replayable (for checkpointing).

    Accepted: a callable ``k -> batch``; a list (or tuple of non-tensors) of at least ``steps`` batches; or
    an iterator/iterable, from which ``steps`` batches are drawn once and kept.
    """
    check_steps(steps)
    if callable(inner_batches) and not isinstance(inner_batches, Sequence):
        return inner_batches
    if isinstance(inner_batches, tuple) and inner_batches and all(isinstance(t, Tensor) for t in inner_batches):
        raise InvalidArgumentError(
            "inner_batches looks like a single batch (a tuple of tensors); pass one batch per step: "
            "[batch] * steps, or a callable k -> batch"
        )
    if isinstance(inner_batches, Sequence):
        if len(inner_batches) < steps:
            raise InvalidArgumentError(f"inner_batches has {len(inner_batches)} batches but steps={steps}")
        seq = inner_batches
    elif isinstance(inner_batches, Iterable):
        it = iter(inner_batches)
        seq = []
        for _ in range(steps):
            try:
                seq.append(next(it))
            except StopIteration:
                raise InvalidArgumentError(
                    f"inner_batches ran out after {len(seq)} batches but steps={steps}"
                ) from None
    else:
        raise InvalidArgumentError(
            f"inner_batches must be a list of batches, an iterator or a callable k -> batch, got {type(inner_batches).__name__}"
        )
    return lambda k: seq[k]


def inner_step(
    inner_loss: LossFn,
    optimizer: FunctionalOptimizer,
    params: Tree,
    state: dict[str, Any],
    hparams: Tree,
    batch: Any,
    *,
    create_graph: bool,
    counter: Counter,
    step: int,
    seed: int,
) -> tuple[Tree, dict[str, Any], Tree, Tensor]:
    """One optimizer step on the inner loss; with ``create_graph`` the step stays differentiable.

    The loss is evaluated with torch's global generators seeded from ``(seed, step)``, so that recomputing a
    step (checkpointing) draws the same dropout masks. Returns the new parameters, the new optimizer state,
    the (detached) inner gradient and the (detached) loss. Without ``create_graph`` everything is detached.
    """
    with torch.enable_grad(), _rng.fork(_rng.derive(seed, step)):
        if create_graph:
            w = {k: v if v.requires_grad else v.detach().requires_grad_(True) for k, v in params.items()}
            h = hparams
        else:
            w = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            h = {k: v.detach() for k, v in hparams.items()}
        value = evaluate_loss(inner_loss, w, h, batch, f"inner_loss at inner step {step}")
        got = vjp([value], list(w.values()), create_graph=create_graph)
    counter.grads += 1
    grads = dict(zip(w, got))
    if create_graph:
        with torch.enable_grad():
            new_w, new_state = optimizer.update(grads, state, w, h)
        return new_w, new_state, {k: g.detach() for k, g in grads.items()}, value.detach()
    with torch.no_grad():
        new_w, new_state = optimizer.update(grads, state, {k: v.detach() for k, v in w.items()}, h)
    return new_w, new_state, grads, value.detach()
