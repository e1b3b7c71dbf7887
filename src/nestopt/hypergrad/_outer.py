"""The outer loss's gradients, shared by every estimator."""

from __future__ import annotations

from typing import Any

import torch

from nestopt import tree
from nestopt.autodiff import Counter, LossFn, evaluate_loss, raw_vjp
from nestopt.hypergrad._reduce import Reduce
from nestopt.tree import Tree

__all__ = ["outer_gradients"]


def outer_gradients(
    outer_loss: LossFn,
    params: Tree,
    hparams: Tree,
    batch: Any,
    counter: Counter,
    *,
    drop_unused: bool = False,
    reduce_params: Reduce | None = None,
) -> tuple[float, Tree, Tree, tuple[str, ...]]:
    """The outer loss, its gradients w.r.t. ``params`` and ``hparams`` (the direct term), and the names of the
    hyperparameters it does not use.

    With ``drop_unused`` the direct term has no entry for the unused hyperparameters instead of a tensor of
    zeros: with one hyperparameter per parameter that saves a parameter-sized buffer for the whole solve.
    ``reduce_params`` (data-parallel runs) averages the gradient w.r.t. ``params`` over the ranks; the direct
    term is left to the caller, which reduces it together with the rest of the hypergradient.
    """
    w = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    h = {k: v.detach().requires_grad_(True) for k, v in hparams.items()}
    with torch.enable_grad():
        value = evaluate_loss(outer_loss, w, h, batch, "outer_loss")
        got = raw_vjp([value], list(w.values()) + list(h.values()))
    counter.grads += 1
    gw = {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(w.items(), got[: len(w)])}
    if drop_unused:
        gh = {k: g for k, g in zip(h, got[len(w) :]) if g is not None}
    else:
        gh = {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(h.items(), got[len(w) :])}
    unused = tuple(k for k, g in zip(h, got[len(w) :]) if g is None)
    if reduce_params is not None:
        gw = reduce_params(gw)
    tree.check_finite(gw, "gradient of outer_loss w.r.t. params")
    tree.check_finite(gh, "gradient of outer_loss w.r.t. hparams")
    return float(value.detach()), gw, gh, unused
