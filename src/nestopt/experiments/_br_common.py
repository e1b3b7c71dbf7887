"""Shared pieces of the best-response experiments: papers, a ridge problem with its closed form, networks with
dropout, plain training at fixed or scheduled hyperparameters, and CPU clocks.

Private: the experiment modules use these so that "trained the same way" means the same code.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nestopt import bestresponse, data, hypergrad, tree
from nestopt.bilevel import BatchStream, BilevelTrainer
from nestopt.data import Split
from nestopt.hparams import Dropout, Family, Objective
from nestopt.tree import Tree

HYPERNET_PAPER = "Stochastic Hyperparameter Optimization through Hypernetworks (Lorraine & Duvenaud, 2017)"
STN_PAPER = "Self-Tuning Networks (MacKay, Vicol, Lorraine, Duvenaud, Grosse, ICLR 2019)"
DELTA_PAPER = "Delta-STN: Efficient Bilevel Optimization for Neural Networks (Bae & Grosse, NeurIPS 2020)"
CE = torch.nn.functional.cross_entropy


def mse(out: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """The squared error of a one-output regression (``reduction`` as torch's losses)."""
    return torch.nn.functional.mse_loss(out.squeeze(-1), y, reduction=reduction)


@dataclass(frozen=True)
class Ridge:
    """Ridge regression with a closed-form best response :math:`w^*(\\lambda) = (G + e^\\lambda I)^{-1} b`,
    :math:`G = X^T X / n`, :math:`b = X^T y / n` (the minimizer of ``mse + e^lambda |w|^2``)."""

    train: Split
    val: Split

    @functools.cached_property
    def _eig(self) -> tuple[Tensor, Tensor, Tensor]:
        x, y = self.train.x, self.train.y
        n = x.shape[0]
        s, v = torch.linalg.eigh(x.T @ x / n)
        return s, v, v.T @ (x.T @ y / n)

    def w_star(self, lam: Tensor) -> Tensor:
        """The best responses at the log-decays ``lam`` (any shape ``S``): shape ``(*S, d)``."""
        s, v, vb = self._eig
        return (vb / (s + lam.unsqueeze(-1).exp())) @ v.T

    def val_loss(self, lam: Tensor) -> Tensor:
        w = self.w_star(lam)
        return ((w @ self.val.x.T - self.val.y) ** 2).mean(-1)

    def slope(self, lam: float) -> Tensor:
        """:math:`dw^*/d\\lambda = -(G + e^\\lambda I)^{-1} e^\\lambda w^*`."""
        s, v, vb = self._eig
        c = math.exp(lam)
        return -((c * vb / (s + c) ** 2) @ v.T)

    def grid_optimum(self, low: float, high: float, points: int) -> tuple[float, float]:
        """``(lambda, validation loss)`` at the best of ``points`` log-decays in ``[low, high]``."""
        grid = torch.linspace(low, high, points, dtype=self.train.x.dtype)
        vals = self.val_loss(grid)
        i = int(vals.argmin())
        return float(grid[i]), float(vals[i])


def ridge(seed: int, *, n_train: int, n_val: int, dim: int, noise: float) -> Ridge:
    """A float64 ridge problem: Gaussian inputs, a true weight of norm sqrt(dim), Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=g, dtype=torch.float64)
    w = w / w.norm() * math.sqrt(dim)
    x = torch.randn(n_train + n_val, dim, generator=g, dtype=torch.float64)
    y = x @ w + noise * torch.randn(n_train + n_val, generator=g, dtype=torch.float64)
    return Ridge(Split(x[:n_train], y[:n_train]), Split(x[n_train:], y[n_train:]))


def mlp(sizes: Sequence[int], seed: int, *, dropout: float | None = None) -> torch.nn.Sequential:
    """``Linear, ReLU, ..., Linear`` initialized from ``seed``; with ``dropout`` a ``torch.nn.Dropout`` of that
    rate before every linear layer (on the inputs and on each hidden layer)."""
    gen = torch.Generator().manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        lin = torch.nn.Linear(a, b)
        with torch.no_grad():
            bound = 1.0 / math.sqrt(a)
            lin.weight.uniform_(-bound, bound, generator=gen)
            lin.bias.uniform_(-bound, bound, generator=gen)
        layers += [lin] if dropout is None else [torch.nn.Dropout(dropout), lin]
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def set_dropout(net: torch.nn.Module, rates: Mapping[str, float]) -> None:
    """Set the rate of each named ``torch.nn.Dropout`` layer."""
    modules = dict(net.named_modules())
    for name, p in rates.items():
        modules[name].p = float(p)


def train_fixed(
    net: torch.nn.Module,
    families: Sequence[Family],
    values: Callable[[int], tuple[Mapping[str, float], Tree]],
    train: Any,
    *,
    steps: int,
    optimizer: Callable[[list[Tensor]], torch.optim.Optimizer],
    steps_per_value: int = 1,
    callback: Callable[[int], None] | None = None,
) -> None:
    """Train a plain network in place with hyperparameters held fixed, or following a schedule.

    ``values(i) -> (dropout rates by layer, the other families' tree)`` gives the hyperparameters of the
    ``i``-th block of ``steps_per_value`` steps (a constant function: fixed values). ``families`` are the
    families other than dropout (augmentation), applied to the training batches.
    """
    objective = Objective(net, CE, families)
    params = objective.params()
    opt = optimizer(list(params.values()))
    stream = BatchStream(train, "train")
    for step in range(steps):
        rates, h = values(step // steps_per_value)
        set_dropout(net, rates)
        loss = objective.step_loss(params, tree.detach(h), stream.next())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if callback is not None:
            callback(step + 1)


@torch.no_grad()
def evaluate(net: torch.nn.Module, part: Split, hparams: Tree | None = None) -> dict[str, float]:
    """Loss and accuracy of a network (or a best-response model at ``hparams``) on a whole split, eval mode."""
    was = net.training
    net.eval()
    out = net(part.x) if hparams is None else net(part.x, hparams)
    net.train(was)
    return {"loss": float(CE(out, part.y)), "accuracy": float((out.argmax(-1) == part.y).float().mean())}


class Clock:
    """CPU seconds of this process since it was started (other programs on the machine do not count)."""

    def __init__(self) -> None:
        self.start = time.process_time()

    def __call__(self) -> float:
        return time.process_time() - self.start


def loaders(d: data.Splits, batch_size: int, seed: int) -> tuple[data.Loader, data.Loader]:
    return data.Loader(d.train, batch_size, seed=seed + 1), data.Loader(d.val, batch_size, seed=seed + 2)


@dataclass
class STNRun:
    """What :func:`stn_run` returns: the trainer (model, hyperparameters, history), the dropout family, the
    rates every training step used (the schedule), CPU seconds, and ``(outer step, seconds, val loss)``."""

    trainer: BilevelTrainer
    dropout: Family
    schedule: list[dict[str, float]]
    seconds: float
    evals: list[tuple[int, float, float]]


class _OutOfBudget(Exception):
    pass


def stn_run(
    cfg: Mapping[str, Any],
    d: data.Splits,
    seed: int,
    *,
    delta: bool = False,
    extra: Sequence[Family] = (),
    eval_every: int = 0,
    progress: bool | None = None,
    budget: float = math.inf,
) -> STNRun:
    """An STN (or Delta-STN) of an MLP with a dropout rate on its inputs and on each of its two hidden layers,
    trained on MNIST-1D by ``hypergrad.BestResponse`` with the settings in ``cfg`` (``hidden``, ``init_rate``,
    ``max_rate``, ``train_steps``, ``val_steps``, ``warmup``, ``scale``, ``entropy_weight``, ``lr``,
    ``outer_lr``, ``batch_size``, and ``steps``: training steps in all). ``extra`` families (augmentation)
    are tuned too. Every ``eval_every`` outer steps the validation loss at the current hyperparameters is
    recorded; the run stops once ``budget`` CPU seconds are spent."""
    net = mlp([40, cfg["hidden"], cfg["hidden"], 10], seed=seed, dropout=0.0)
    rates = Dropout(net, init=cfg["init_rate"], max_rate=cfg["max_rate"])
    model = bestresponse.stn(net, [rates, *extra], delta=delta, seed=seed)
    strategy = hypergrad.BestResponse(
        scale=cfg["scale"], entropy_weight=cfg["entropy_weight"], train_steps=cfg["train_steps"],
        val_steps=cfg["val_steps"], warmup=cfg["warmup"], delta=delta,
    )  # fmt: skip
    trainer = BilevelTrainer(
        model, CE, model.families, hypergrad=strategy, seed=seed,
        inner_optimizer=functools.partial(torch.optim.Adam, lr=cfg["lr"], foreach=True),
        outer_optimizer=functools.partial(torch.optim.Adam, lr=cfg["outer_lr"], foreach=True),
    )  # fmt: skip
    fam = model.families[0]
    clock = Clock()
    per_step = 2 if delta else 1  # a Delta-STN training step is a base step and a response step
    state: dict[str, Any] = {"inner": 0, "rates": fam.project(tree.detach(trainer.hparams))}
    schedule: list[dict[str, float]] = []
    evals: list[tuple[int, float, float]] = []

    def callback(t: BilevelTrainer, record: dict[str, Any]) -> None:
        trained = (record["inner_steps"] - state["inner"]) // per_step  # at the rates before this outer step
        schedule.extend([{k: float(v) for k, v in state["rates"].items()}] * trained)
        h = {k: v.detach() for k, v in t.hparams.items()}
        state.update(inner=record["inner_steps"], rates=fam.project(h))
        if eval_every and t.outer_step % eval_every == 0:
            evals.append((t.outer_step, clock(), evaluate(t.model, d.val, h)["loss"]))
        if clock() > budget:
            raise _OutOfBudget

    outer = max(1, (cfg["steps"] - cfg["warmup"]) // cfg["train_steps"]) * cfg["val_steps"]
    with contextlib.suppress(_OutOfBudget):
        trainer.fit(*loaders(d, cfg["batch_size"], seed), outer_steps=outer, eval_every=10**9, progress=progress,
                    callbacks=[callback])  # fmt: skip
    return STNRun(trainer, fam, schedule, clock(), evals)
