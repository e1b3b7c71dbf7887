"""Retrain from scratch on fixed hyperparameters: what the hyperparameters are worth on their own.

A warm-start bilevel run ends with weights that were trained *while* the hyperparameters moved, and when the
inner problem has many solutions those weights can carry information about the outer objective that the
final hyperparameters alone do not (Vicol et al., 2022: distilled images that train a network to 90% while a
fresh network trained on them reaches 13%). :func:`retrain` measures that: a fresh copy of the model,
re-initialized, is trained on the final (frozen) hyperparameters with the run's inner optimizer and then
evaluated. Nothing of the run is changed.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch

from nestopt import _rng, tree
from nestopt._validate import nonnegative_int
from nestopt.autodiff import vjp
from nestopt.bilevel.streams import BatchStream, one_pass
from nestopt.errors import InvalidArgumentError, NonFiniteError
from nestopt.hparams.objective import Objective
from nestopt.optim.functional import FunctionalOptimizer
from nestopt.tree import Tree

if TYPE_CHECKING:
    from collections.abc import Iterable

    from nestopt.bilevel.trainer import BilevelTrainer

__all__ = ["fresh_initialization", "retrain"]


def fresh_initialization(model: torch.nn.Module, seed: int) -> None:
    """Re-initialize ``model`` in place: every submodule's ``reset_parameters`` (torch's default
    initialization; BatchNorm statistics reset too), drawn from ``seed``."""
    with _rng.fork(seed), torch.no_grad():
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
            reset_stats = getattr(module, "reset_running_stats", None)
            if callable(reset_stats):
                reset_stats()


def retrain(
    trainer: BilevelTrainer,
    train: Iterable[Any],
    *,
    steps: int | None = None,
    val: Iterable[Any] | None = None,
    test: Iterable[Any] | None = None,
    init: Tree | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Train a freshly initialized copy of the trainer's model on its current hyperparameters, frozen.

    See :meth:`nestopt.BilevelTrainer.retrain` (which calls this and records the result).
    """
    steps = trainer.inner_step if steps is None else nonnegative_int("steps", steps)
    if steps == 0:
        raise InvalidArgumentError("retrain needs steps >= 1 (the run has taken no inner step yet; pass steps=)")
    seed = _rng.derive(trainer.seed, "retrain", len(trainer.history.retrains)) if seed is None else int(seed)
    model = copy.deepcopy(trainer.objective.module)  # a DistributedDataParallel model's inner module
    families = trainer.objective.families
    saved = {f.name: f.state_dict() for f in families}  # their generators advance while retraining
    objective = Objective(model, trainer.objective.criterion, families, outer_mode=trainer.objective.outer_mode)
    params = objective.params()
    if init is None:
        fresh_initialization(model, _rng.derive(seed, "init"))
    else:
        tree.check_like(params, init, "model parameters", "init")
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(init[k])
    start = tree.clone(params)
    h = tree.detach(trainer.hparams)
    functional = getattr(trainer.strategy, "optimizer", None)
    stream = BatchStream(train, "train")
    losses: list[float] = []
    try:
        if isinstance(functional, FunctionalOptimizer):  # the strategy's own (unrolled) optimizer
            state = functional.init(tree.detach(params))
            for step in range(steps):
                with _rng.fork(_rng.derive(seed, step)):
                    w = {n: p.detach().requires_grad_(True) for n, p in params.items()}
                    loss = objective.step_loss(w, h, stream.next())
                    grads = dict(zip(w, vjp([loss], list(w.values()))))
                with torch.no_grad():
                    new, state = functional.update(grads, state, tree.detach(params), h)
                    for n, p in params.items():
                        p.copy_(new[n])
                losses.append(float(loss.detach()))
        else:
            opt = trainer.inner_factory(list(params.values()))
            sched = None if trainer.inner_scheduler_factory is None else trainer.inner_scheduler_factory(opt)
            for step in range(steps):
                with _rng.fork(_rng.derive(seed, step)):
                    loss = objective.step_loss(params, h, stream.next())
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                if sched is not None:
                    sched.step()
                losses.append(float(loss.detach()))
        if not all(torch.isfinite(torch.tensor(losses))):
            raise NonFiniteError(f"retraining from scratch diverged: the training loss became {losses[-1]}")
    finally:
        for f in families:
            f.load_state_dict(saved[f.name])
    tail = losses[-max(1, steps // 10) :]
    result: dict[str, Any] = {
        "steps": steps,
        "seed": seed,
        "outer_step": trainer.outer_step,
        "train_loss": sum(tail) / len(tail),
        "distance_from_init": float(tree.norm(tree.sub(tree.detach(params), start))),
    }
    for name, loader in (("val", val), ("test", test)):
        if loader is not None:
            result.update({f"{name}_{k}": v for k, v in objective.evaluate(params, h, one_pass(loader)).items()})
    return result
