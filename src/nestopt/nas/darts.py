"""DARTS (Liu et al., 2019) as a bilevel problem: architecture logits are the hyperparameters.

.. math::  \\min_\\alpha L_{val}\\big(w^*(\\alpha), \\alpha\\big) \\quad \\text{s.t.} \\quad
           w^*(\\alpha) = \\arg\\min_w L_{train}(w, \\alpha),

where both losses are those of the :class:`~nestopt.nas.Supernet`'s continuous relaxation at logits
:math:`\\alpha` (:class:`ArchitectureWeights`, a hyperparameter family). The architecture hypergradient is
any of nestopt's strategies, run by :class:`~nestopt.BilevelTrainer` (one weight step per outer step, as in
DARTS):

``order="second"``
    DARTS's second-order gradient, exactly: :class:`~nestopt.hypergrad.Unrolled` through the one weight step
    :math:`w' = w - \\xi \\nabla_w L_{train}(w, \\alpha)` (momentum SGD, :math:`\\xi` the weights' learning
    rate, as DARTS sets it), :math:`\\nabla_\\alpha L_{val}(w'(\\alpha), \\alpha)` with an exact
    Hessian-vector product where DARTS uses finite differences.
``order="first"``
    :math:`\\nabla_\\alpha L_{val}(w, \\alpha)` at the current weights (:class:`FirstOrder`: DARTS with
    :math:`\\xi = 0`).
``order="implicit"``
    :class:`~nestopt.hypergrad.Implicit`: the IFT hypergradient, CG on the Gauss-Newton matrix.

The derived architecture keeps, for every node, the strongest (previous node, activation) pair
(:meth:`ArchitectureWeights.derive`).

Example:
    >>> from nestopt import data, nas
    >>> space = nas.CellSpace(nodes=3, ops=("tanh", "relu"))
    >>> splits = data.synthetic_classification(n_train=64, n_val=64, n_test=32, seed=0)
    >>> res = nas.darts(space, splits, nas.DartsConfig(steps=3, batch_size=32, width=8), seed=0)
    >>> res.architecture in list(space.enumerate()), res.cost["gradient_evaluations"]
    (True, 12)
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from nestopt import _rng, data, hypergrad, linalg
from nestopt._validate import nonnegative, one_of, positive_int
from nestopt.autodiff import Counter, grad
from nestopt.bilevel import BilevelTrainer
from nestopt.data import Splits
from nestopt.errors import InvalidArgumentError
from nestopt.hparams.base import Family
from nestopt.hypergrad import HypergradInfo, HypergradResult, Problem, Strategy
from nestopt.linalg import Status
from nestopt.nas.networks import Supernet, node_key
from nestopt.nas.space import Architecture, CellSpace
from nestopt.optim import functional
from nestopt.tree import Tree

__all__ = ["ArchitectureWeights", "DartsConfig", "DartsResult", "FirstOrder", "darts"]

Order = Literal["first", "second", "implicit"]


class ArchitectureWeights(Family):
    """DARTS's architecture logits as a hyperparameter family: ``node0`` of shape ``(|ops|,)`` and ``node<i>``
    of shape ``(i, |ops|)`` (previous node, activation), read by a :class:`~nestopt.nas.Supernet` whose
    ``prefix`` is this family's name.

    Args:
        space: the search space.
        init_scale: the logits start as ``init_scale`` times standard normal draws (DARTS: 1e-3).
        seed: seeds those draws.
        name: the key prefix (the supernet's ``prefix``).
    """

    enters = frozenset({"loss"})

    def __init__(
        self, space: CellSpace, *, init_scale: float = 1e-3, seed: int = 0, name: str = "architecture"
    ) -> None:
        self.space, self.name = space, name
        self.init_scale = nonnegative("init_scale", init_scale)
        self.seed = int(seed)

    def init(self) -> Tree:
        gen = torch.Generator().manual_seed(self.seed)
        n_ops = len(self.space.ops)
        shapes = [(n_ops,)] + [(i, n_ops) for i in range(1, self.space.nodes)]
        return {f"node{i}": self.init_scale * torch.randn(shape, generator=gen) for i, shape in enumerate(shapes)}

    def _logits(self, hparams: Mapping[str, Tensor], i: int) -> Tensor:
        for key in (node_key(self.name, i), f"node{i}"):
            if key in hparams:
                return hparams[key].detach()
        raise InvalidArgumentError(
            f"no architecture logits for node {i}: expected the key {node_key(self.name, i)!r}, got {sorted(hparams)}"
        )

    def probabilities(self, hparams: Mapping[str, Tensor]) -> list[Tensor]:
        """Each node's softmax over its choices (from the full hyperparameter tree or the family's own)."""
        logits = [self._logits(hparams, i) for i in range(self.space.nodes)]
        return [torch.softmax(z.reshape(-1), 0).reshape(z.shape) for z in logits]

    def derive(self, hparams: Mapping[str, Tensor]) -> Architecture:
        """The discrete cell: each node's strongest (previous node, activation) pair."""
        n_ops = len(self.space.ops)
        ops, prev = [self.space.ops[int(self._logits(hparams, 0).argmax())]], []
        for i in range(1, self.space.nodes):
            j, op = divmod(int(self._logits(hparams, i).reshape(-1).argmax()), n_ops)
            prev.append(j)
            ops.append(self.space.ops[op])
        return self.space.make(ops, prev)


class FirstOrder(Strategy):
    """The first-order hypergradient :math:`\\partial L_{val}(w, \\lambda) / \\partial \\lambda` at the current
    weights, ignoring how they depend on the hyperparameters (first-order DARTS).

    Example:
        >>> FirstOrder().name, FirstOrder.uses_inner_optimizer
        ('first-order', True)
    """

    name = "first-order"

    def hypergradient(self, problem: Problem) -> HypergradResult:
        counter = Counter()
        swapped = lambda h, w, batch: problem.outer_loss(w, h, batch)
        value, grads = grad(swapped, problem.hparams, problem.params, problem.next_val(), counter=counter,
                            name="outer_loss")  # fmt: skip
        info = HypergradInfo(method=self.name, status=Status.MAX_ITERATIONS, iterations=0, residual=None, hvp_calls=0,
                             grad_calls=counter.grads, outer_loss=float(value),
                             message="direct term only: the weights' response is ignored")  # fmt: skip
        return HypergradResult(grads, info)


@dataclass(frozen=True)
class DartsConfig:
    """A DARTS search: ``steps`` outer steps, each one weight step and one architecture step.

    Attributes:
        order: ``"second"``, ``"first"`` or ``"implicit"`` (module docstring).
        steps: outer steps.
        batch_size: training and validation minibatch size.
        weight_lr, momentum: the weights' SGD (and :math:`\\xi = ` ``weight_lr`` for the unrolled step).
        arch_lr, arch_weight_decay: Adam (betas 0.5, 0.999) on the logits, as in DARTS.
        init_scale: the logits' initial scale.
        width: the supernet's node width.
        cg_steps, damping: CG on the Gauss-Newton matrix for ``order="implicit"``.
    """

    order: Order = "second"
    steps: int = 500
    batch_size: int = 128
    weight_lr: float = 0.05
    momentum: float = 0.9
    arch_lr: float = 3e-3
    arch_weight_decay: float = 1e-3
    init_scale: float = 1e-3
    width: int = 32
    cg_steps: int = 10
    damping: float = 0.1

    def __post_init__(self) -> None:
        one_of("order", self.order, ("first", "second", "implicit"))
        for name in ("steps", "batch_size", "width", "cg_steps"):
            positive_int(name, getattr(self, name))
        for name in ("weight_lr", "arch_lr"):
            nonnegative(name, getattr(self, name), positive=True)
        for name in ("momentum", "arch_weight_decay", "init_scale", "damping"):
            nonnegative(name, getattr(self, name))

    @property
    def passes_per_step(self) -> int:
        """Gradient evaluations per outer step, counting a Hessian-vector product (or a backward pass through
        a gradient) as two: first order 2 (weight step, validation gradient); second order 4 (the step, the
        validation gradient, the backward through the step); implicit ``4 + 2 * cg_steps``."""
        return {"first": 2, "second": 4, "implicit": 4 + 2 * self.cg_steps}[self.order]


@dataclass
class DartsResult:
    """A DARTS search's outcome: the derived ``architecture``, each node's final ``probabilities``, the
    trainer (weights, logits, ``history``), its ``cost`` and wall-clock ``seconds``."""

    architecture: Architecture
    probabilities: list[list[Any]]
    trainer: BilevelTrainer
    family: ArchitectureWeights
    cost: dict[str, int]
    seconds: float


def _strategy(cfg: DartsConfig) -> tuple[Strategy, dict[str, Any]]:
    sgd = functools.partial(torch.optim.SGD, lr=cfg.weight_lr, momentum=cfg.momentum)
    if cfg.order == "second":
        return hypergrad.Unrolled(optimizer=functional.sgd(lr=cfg.weight_lr, momentum=cfg.momentum), steps=1), {}
    if cfg.order == "first":
        return FirstOrder(), {"inner_optimizer": sgd, "inner_steps_per_outer": 1}
    solver = linalg.CG(steps=cfg.cg_steps, damping=cfg.damping)
    return hypergrad.Implicit(solver=solver, curvature="gauss-newton"), {
        "inner_optimizer": sgd,
        "inner_steps_per_outer": 1,
    }


def darts(space: CellSpace, splits: Splits, config: DartsConfig | None = None, *, seed: int = 0) -> DartsResult:
    """Search ``space`` with DARTS on ``splits`` (train: weights; val: architecture); see the module docstring."""
    cfg = DartsConfig() if config is None else config
    start = time.perf_counter()
    family = ArchitectureWeights(space, init_scale=cfg.init_scale, seed=_rng.derive(seed, "darts-logits"))
    with _rng.fork(_rng.derive(seed, "supernet")):
        net = Supernet(space, splits.train.x.shape[1], splits.num_classes, cfg.width, prefix=family.name)
    net.to(device=splits.train.x.device, dtype=splits.train.x.dtype)
    strategy, inner = _strategy(cfg)
    outer = functools.partial(torch.optim.Adam, lr=cfg.arch_lr, betas=(0.5, 0.999), weight_decay=cfg.arch_weight_decay)
    trainer = BilevelTrainer(net, torch.nn.functional.cross_entropy, [family], hypergrad=strategy,
                             outer_optimizer=outer, seed=seed, **inner)  # fmt: skip
    train = data.Loader(splits.train, cfg.batch_size, seed=_rng.derive(seed, "darts-train") % 2**31, drop_last=True)
    val = data.Loader(splits.val, cfg.batch_size, seed=_rng.derive(seed, "darts-val") % 2**31, drop_last=True)
    trainer.fit(train, val, outer_steps=cfg.steps, eval_every=cfg.steps, progress=False)
    probs = [p.tolist() for p in family.probabilities(trainer.hparams)]
    cost = {"outer_steps": cfg.steps, "gradient_evaluations": cfg.steps * cfg.passes_per_step}
    return DartsResult(family.derive(trainer.hparams), probs, trainer, family, cost, time.perf_counter() - start)
