"""The problems the data-parallel tests run on 2 ranks (``worker.py``) and in one process (the references)."""

from __future__ import annotations

import cmath
import functools
import math
from collections.abc import Callable
from typing import Any

import torch

import nestopt
from nestopt import data, distributed, hparams, hypergrad, linalg, optim, tree
from nestopt.hparams import Objective

DTYPE = torch.float64
WORLD = 2
GLOBAL_BATCH = 16


def task() -> data.Splits:
    return data.synthetic_classification(n_train=32, n_val=16, n_test=16, dim=4, num_classes=3, seed=0, dtype=DTYPE)


def shards(batch: tuple[torch.Tensor, ...], world: int = WORLD) -> list[tuple[torch.Tensor, ...]]:
    """The ranks' parts of a global batch, as :class:`nestopt.distributed.ShardedLoader` cuts them."""
    return [tuple(t.tensor_split(world)[r] for t in batch) for r in range(world)]


# -- hypergradients ---------------------------------------------------------------------------------------
FAMILIES = ("weight_decay", "reweighting", "distilled")
SOLVERS: dict[str, Callable[[], linalg.Solver]] = {
    "cg": lambda: linalg.CG(steps=40, tol=1e-13),
    "neumann": lambda: linalg.Neumann(steps=30, alpha=0.1),
}


def linear_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 3).to(DTYPE)


def family_objective(name: str) -> tuple[Objective, dict[str, torch.Tensor]]:
    """A logistic regression with the family ``name`` (plus a fixed-size L2 term where the family has none),
    and hyperparameters moved away from their initial values by seeded noise."""
    net = linear_model()
    d = task()
    if name == "weight_decay":
        fams: list[hparams.Family] = [hparams.WeightDecay(net, per="parameter", init=1e-2)]
    elif name == "reweighting":
        fams = [hparams.LossReweighting(per="example", size=len(d.train)), hparams.WeightDecay(net, "global", 1e-2)]
    elif name == "distilled":
        fams = [hparams.DistilledData(2, (4,), 3, init_scale=1.0), hparams.WeightDecay(net, "global", 1e-2)]
    else:
        raise ValueError(name)
    obj = Objective(net, torch.nn.functional.cross_entropy, fams)
    h = obj.init_hparams()
    gen = torch.Generator().manual_seed(1)
    h = {k: v + 0.3 * torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in h.items()}
    return obj, h


def global_inner_loss(obj: Objective, name: str) -> Callable[..., torch.Tensor]:
    """The global inner loss on the concatenated batch: the mean of the ranks' losses.

    For weight decay and distilled data that is the objective's own loss on the whole batch. Loss reweighting
    normalizes by the batch's total weight, so the mean of the ranks' normalized losses (what a data-parallel
    run optimizes, as DDP does) is written out here: one process, the concatenated batch cut into the shards.
    """
    if name != "reweighting":
        return obj.inner_loss
    return lambda p, h, b: torch.stack([obj.inner_loss(p, h, s) for s in shards(b)]).mean()


def inner_solution(obj: Objective, name: str, h: dict[str, torch.Tensor], batch: Any) -> dict[str, torch.Tensor]:
    """An (approximate) minimizer of the global inner loss, by L-BFGS in one process."""
    loss_fn = global_inner_loss(obj, name)
    w = {k: v.detach().clone().requires_grad_(True) for k, v in obj.params().items()}
    opt = torch.optim.LBFGS(list(w.values()), max_iter=200, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn(w, tree.detach(h), batch)
        loss.backward()
        return loss

    opt.step(closure)
    return tree.detach(w)


def full_batches() -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    d = task()
    idx = torch.arange(len(d.train))
    return (d.train.x, d.train.y, idx), d.val.as_tuple()


# -- the trainer ------------------------------------------------------------------------------------------
def mlp(seed: int = 0, *, batch_norm: bool = False) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = [torch.nn.Linear(4, 8)]
    if batch_norm:
        layers.append(torch.nn.BatchNorm1d(8))
    layers += [torch.nn.Tanh(), torch.nn.Linear(8, 3)]
    return torch.nn.Sequential(*layers).to(DTYPE)


def loaders(world: int | None) -> tuple[Any, Any, Any]:
    """Train, validation and evaluation loaders: global batches of 16, cut into shards when ``world``."""
    d = task()
    train = data.Loader(d.train, GLOBAL_BATCH, seed=3)
    val = data.Loader(d.val, GLOBAL_BATCH, seed=4)
    evaluation = data.Loader(d.val, 6, shuffle=False)  # 6, 6, 4 examples: uneven shards, summed exactly
    if world is None:
        return train, val, evaluation
    return (distributed.ShardedLoader(train), distributed.ShardedLoader(val),
            distributed.ShardedLoader(evaluation, even=False))  # fmt: skip


def trainer(
    *, wrap: bool = False, parallel: distributed.DataParallel | None = None, batch_norm: bool = False
) -> nestopt.BilevelTrainer:
    net = mlp(batch_norm=batch_norm)
    model: torch.nn.Module = torch.nn.parallel.DistributedDataParallel(net) if wrap else net
    return nestopt.BilevelTrainer(
        model, torch.nn.functional.cross_entropy, [hparams.WeightDecay(net, per="parameter", init=1e-2)],
        hypergrad=hypergrad.Implicit(solver=linalg.CG(steps=5, damping=0.1), curvature="gauss-newton"),
        inner_optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9), inner_steps_per_outer=2,
        seed=5, parallel=parallel,
    )  # fmt: skip


def state(t: nestopt.BilevelTrainer) -> dict[str, Any]:
    return {
        "params": tree.clone(t.params),
        "buffers": tree.clone(t.buffers),
        "hparams": tree.clone(tree.detach(t.hparams)),
        "val_loss": [r["val_loss"] for r in t.history.records if "val_loss" in r],
        "outer_steps": t.outer_step,
    }


# -- the game optimizers ----------------------------------------------------------------------------------
OPTIMIZERS: dict[str, Callable[[list[torch.Tensor]], torch.optim.Optimizer]] = {
    "ComplexMomentum": lambda p: optim.ComplexMomentum(p, lr=0.05, beta=cmath.rect(0.8, math.pi / 8)),
    "ComplexAdam": lambda p: optim.ComplexAdam(p, lr=0.01),
    "OptimisticSGD": lambda p: optim.OptimisticSGD(p, lr=0.05),
    "OptimisticAdam": lambda p: optim.OptimisticAdam(p, lr=0.01),
    "HeavyBall": lambda p: optim.HeavyBall(p, lr=0.05, momentum=-0.3),
    "ExtraGradient": lambda p: optim.ExtraGradient(torch.optim.SGD(p, lr=0.05)),
}
OPTIMIZER_STEPS = 12


def optimizer_run(name: str, model: torch.nn.Module, batches: list[tuple[torch.Tensor, ...]]) -> dict[str, Any]:
    """``OPTIMIZER_STEPS`` steps of optimizer ``name`` on the cross-entropy of ``model`` (DDP or not)."""
    opt = OPTIMIZERS[name](list(model.parameters()))
    for x, y in batches:

        def closure(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        opt.step(closure)
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    moments = [v.detach().clone() for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
    return {"params": {k: v.detach().clone() for k, v in inner.named_parameters()}, "state": moments}


def optimizer_batches() -> list[tuple[torch.Tensor, ...]]:
    loader = data.Loader(task().train, GLOBAL_BATCH, seed=7)
    return [b for e in range(2) for b in loader.epoch_batches(e)][:OPTIMIZER_STEPS]
