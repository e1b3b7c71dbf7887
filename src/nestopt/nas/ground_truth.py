"""The ground truth of a search space: the test accuracy of architectures trained from scratch.

No NAS benchmark table can be fetched here, so the ground truth is computed: :func:`train_from_scratch` trains
the :class:`~nestopt.nas.CellNetwork` of an architecture with Adam on fixed-size minibatches and reports its
validation and test accuracy. The architecture's seed (initialization and batch order) is
``derive(seed, "ground-truth", space.index(arch))``, so an architecture's score does not depend on which other
architectures are scored, or in which order.

:class:`GroundTruth` memoizes the scores and keeps them in a JSON cache file together with everything that
decides them (space, data sizes, training budget, seed): a cache written under another configuration is
ignored, so a stale table is never read.

Example:
    >>> from nestopt import data, nas
    >>> space = nas.CellSpace(nodes=2, ops=("tanh", "relu"))
    >>> splits = data.synthetic_classification(n_train=64, n_val=32, n_test=32, seed=0)
    >>> truth = nas.GroundTruth(space, splits, nas.TrainBudget(steps=20, batch_size=16, width=8), seed=0)
    >>> score = truth.score(space.parse("relu, 0>tanh"))
    >>> 0.0 <= score.test_accuracy <= 1.0, len(truth)
    (True, 1)
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from nestopt import _rng
from nestopt._validate import nonnegative, positive_int
from nestopt.data import Split, Splits
from nestopt.errors import InvalidArgumentError
from nestopt.nas.networks import CellNetwork
from nestopt.nas.space import Architecture, CellSpace

__all__ = ["GroundTruth", "Score", "TrainBudget", "accuracy", "train_from_scratch"]


@dataclass(frozen=True)
class TrainBudget:
    """How an architecture is trained from scratch: ``steps`` Adam steps of ``lr`` (cosine-decayed to zero)
    on minibatches of ``batch_size``, with nodes of ``width`` units."""

    steps: int = 1000
    batch_size: int = 128
    lr: float = 3e-3
    width: int = 32

    def __post_init__(self) -> None:
        positive_int("steps", self.steps)
        positive_int("batch_size", self.batch_size)
        nonnegative("lr", self.lr, positive=True)
        positive_int("width", self.width)


@dataclass(frozen=True)
class Score:
    """An architecture's ground truth: accuracies after training from scratch, and how it was obtained (its
    seed, the wall-clock and the CPU seconds of its training)."""

    arch: str
    test_accuracy: float
    val_accuracy: float
    train_loss: float
    seed: int
    seconds: float
    cpu_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def accuracy(net: torch.nn.Module, split: Split) -> float:
    """The fraction of ``split`` that ``net`` classifies correctly (eval mode, no gradient)."""
    with torch.no_grad():
        return float((net(split.x).argmax(-1) == split.y).to(torch.float64).mean())


def train_from_scratch(
    space: CellSpace, arch: Architecture, splits: Splits, budget: TrainBudget, seed: int
) -> tuple[CellNetwork, float]:
    """Initialize the network of ``arch`` from ``seed`` and train it; returns it and its last training loss."""
    train = splits.train
    with _rng.fork(seed):
        net = CellNetwork(space, arch, train.x.shape[1], splits.num_classes, budget.width)
    net.to(device=train.x.device, dtype=train.x.dtype)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=budget.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=budget.steps)
    loss = torch.tensor(float("nan"))
    for _ in range(budget.steps):
        idx = torch.randint(len(train), (budget.batch_size,), generator=gen)
        loss = torch.nn.functional.cross_entropy(net(train.x[idx]), train.y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval(), float(loss.detach())


class GroundTruth:
    """Memoized ground-truth scores of a space's architectures, optionally kept in a JSON cache file.

    Args:
        space: the search space.
        splits: the data (trained on ``train``; scored on ``val`` and ``test``).
        budget: the training of every architecture.
        seed: the base seed (each architecture's seed is derived from it and the architecture's index).
        cache: a JSON file to read scores from (when its configuration matches) and to write them to.
    """

    def __init__(
        self,
        space: CellSpace,
        splits: Splits,
        budget: TrainBudget | None = None,
        *,
        seed: int = 0,
        cache: str | os.PathLike[str] | None = None,
    ) -> None:
        if splits.num_classes < 2:
            raise InvalidArgumentError(
                f"the ground truth needs a classification data set, got {splits.num_classes} classes"
            )
        self.space, self.splits = space, splits
        self.budget = TrainBudget() if budget is None else budget
        self.seed = int(seed)
        self.cache = None if cache is None else Path(cache)
        self.config = {
            "format": 1,
            "nodes": space.nodes,
            "ops": list(space.ops),
            "sizes": [len(splits.train), len(splits.val), len(splits.test)],
            "data": hashlib.sha1(splits.train.x.detach().cpu().numpy().tobytes()).hexdigest()[:16],
            "budget": asdict(self.budget),
            "seed": self.seed,
        }
        self._scores: dict[str, Score] = {}
        self.cache_hits = 0
        if self.cache is not None and self.cache.exists():
            stored = json.loads(self.cache.read_text())
            if stored.get("config") == self.config:
                self._scores = {s["arch"]: Score(**s) for s in stored["scores"]}

    def __len__(self) -> int:
        return len(self._scores)

    def __contains__(self, arch: Architecture) -> bool:
        return str(arch) in self._scores

    def seed_of(self, arch: Architecture) -> int:
        """The seed that ``arch`` is trained from."""
        return _rng.derive(self.seed, "ground-truth", self.space.index(arch))

    def score(self, arch: Architecture) -> Score:
        """The ground truth of ``arch``: from the memo or the cache, else trained now (and cached)."""
        key = str(self.space.check(arch))
        if key in self._scores:
            self.cache_hits += 1
            return self._scores[key]
        seed = self.seed_of(arch)
        start, cpu = time.perf_counter(), time.process_time()
        net, loss = train_from_scratch(self.space, arch, self.splits, self.budget, seed)
        self._scores[key] = Score(
            key,
            accuracy(net, self.splits.test),
            accuracy(net, self.splits.val),
            loss,
            seed,
            time.perf_counter() - start,
            time.process_time() - cpu,
        )
        self._save()
        return self._scores[key]

    def scores(self, archs: Iterable[Architecture]) -> list[Score]:
        """The ground truth of each architecture, in order."""
        return [self.score(a) for a in archs]

    def table(self) -> list[dict[str, Any]]:
        """Every score known so far, in the order they were first computed."""
        return [s.as_dict() for s in self._scores.values()]

    def _save(self) -> None:
        if self.cache is None:
            return
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"config": self.config, "scores": self.table()}, indent=1) + "\n")
        tmp.replace(self.cache)
