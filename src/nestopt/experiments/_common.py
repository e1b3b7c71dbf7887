"""Shared pieces of the experiments of the IFT paper: the classifier, plain training, evaluation, quiet solvers.

Private: the experiment modules use these so that "trained the same way" means the same code.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from nestopt import tree
from nestopt.bilevel import BatchStream
from nestopt.data import Loader, Split, Splits
from nestopt.errors import SolverWarning
from nestopt.hparams import Objective
from nestopt.nets import mlp
from nestopt.tree import Tree

__all__ = [
    "IFT_PAPER",
    "classifier",
    "count",
    "evaluate",
    "quiet_solvers",
    "solver_statuses",
    "train_plain",
]

IFT_PAPER = "Optimizing Millions of Hyperparameters by Implicit Differentiation (Lorraine et al., AISTATS 2020)"
CE = torch.nn.functional.cross_entropy


@contextmanager
def quiet_solvers() -> Iterator[None]:
    """Silence :class:`~nestopt.errors.SolverWarning` (the experiments count solver statuses instead)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SolverWarning)
        yield


def solver_statuses(statuses: Sequence[str]) -> dict[str, int]:
    """How many hypergradient solves ended in each status."""
    out: dict[str, int] = {}
    for s in statuses:
        out[s] = out.get(s, 0) + 1
    return out


def classifier(d: Splits, hidden: Sequence[int], seed: int) -> torch.nn.Sequential:
    """The ReLU MLP ``inputs -> hidden... -> classes`` of a data set, initialized from ``seed``."""
    return mlp([d.input_shape[0], *hidden, d.num_classes], "relu", generator=seed)


def count(t: Tree) -> int:
    """The number of scalars in a tree."""
    return sum(v.numel() for v in t.values())


@torch.no_grad()
def evaluate(objective: Objective, params: Tree, part: Split) -> dict[str, float]:
    """Mean loss and accuracy of ``params`` on a whole split (one batch)."""
    out = objective.predict(tree.detach(params), part.x)
    loss = float(objective.criterion(out, part.y))
    if not math.isfinite(loss):
        return {"loss": loss, "accuracy": float("nan")}
    return {"loss": loss, "accuracy": float((out.argmax(-1) == part.y).float().mean())}


def train_plain(
    objective: Objective,
    hparams: Tree,
    train: Loader,
    *,
    steps: int,
    optimizer: Callable[[list[Tensor]], torch.optim.Optimizer],
    eval_every: int = 0,
    parts: Mapping[str, Split] | None = None,
    callback: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Train the objective's model in place on its inner loss with fixed hyperparameters, as the inner phase
    of :class:`nestopt.BilevelTrainer` does (same loss, same batch stream, same optimizer factory).

    Every ``eval_every`` steps (and at the end) each split in ``parts`` is evaluated; returns those records
    ``{"step", "<part>_loss", "<part>_accuracy"}``.
    """
    params = objective.params()
    h = tree.detach(hparams)
    opt = optimizer(list(params.values()))
    stream = BatchStream(train, "train")
    records: list[dict[str, Any]] = []
    for step in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)  # before the forward pass, as the trainer's inner step does
        loss = objective.inner_loss(params, h, stream.next())
        loss.backward()
        opt.step()
        if callback is not None:
            callback(step)
        if parts and ((eval_every and step % eval_every == 0) or step == steps):
            record: dict[str, Any] = {"step": step}
            for name, part in parts.items():
                record.update({f"{name}_{k}": v for k, v in evaluate(objective, params, part).items()})
            records.append(record)
    return records
