"""Search with weight sharing: random search (Li & Talwalkar, 2019) and ENAS (Pham et al., 2018).

Both train one :class:`~nestopt.nas.Supernet` for ``epochs`` epochs of ``steps_per_epoch`` Adam steps, each
step on one training minibatch through one sampled child, and finally sample ``candidates`` architectures,
score each by its validation accuracy with the shared weights, and return the best (best-of-``candidates``).
They differ only in where the architectures come from:

* :func:`random_search`: uniformly from the space, throughout;
* :func:`enas`: from a :class:`~nestopt.nas.Controller`, which each epoch also takes ``controller_steps``
  REINFORCE steps (:func:`~nestopt.nas.reinforce_loss`, moving-average baseline, entropy bonus), each on
  ``controller_batch`` sampled children rewarded with their accuracy on one validation minibatch. With
  ``memory=True`` the controller also keeps a :class:`~nestopt.nas.MemoryBuffer` (Adam & Lorraine, 2019):
  from epoch ``buffer_start`` (counted from 1) it stores ``store_per_epoch`` sampled architectures at the end
  of each epoch, and from epoch ``supervised_start`` every controller step adds the supervised loss on a
  sample of the buffer.

So at equal ``SharedTraining`` the two spend the same shared-weight steps and candidate evaluations; ENAS
spends, in addition, the controller's reward evaluations (counted in :attr:`SearchResult.counts`).

Example:
    >>> from nestopt import data, nas
    >>> space = nas.CellSpace(nodes=3, ops=("tanh", "relu"))
    >>> splits = data.synthetic_classification(n_train=128, n_val=64, n_test=32, seed=0)
    >>> training = nas.SharedTraining(epochs=2, steps_per_epoch=5, batch_size=32, candidates=8, width=8)
    >>> res = nas.random_search(space, splits, training, seed=0)
    >>> res.method, len(res.candidates), res.counts["shared_steps"]
    ('random', 8, 10)
    >>> res = nas.enas(space, splits, training, nas.ENASConfig(controller_steps=2, controller_batch=4, hidden=8), seed=0)
    >>> res.counts["reward_evaluations"], res.best in res.candidates
    (16, True)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from nestopt import _rng
from nestopt._validate import nonnegative, positive_int
from nestopt.data import Split, Splits
from nestopt.errors import InvalidArgumentError
from nestopt.nas.buffer import MemoryBuffer
from nestopt.nas.controller import Controller
from nestopt.nas.networks import Supernet
from nestopt.nas.reinforce import MovingAverage, reinforce_loss, supervised_loss
from nestopt.nas.space import Architecture, CellSpace

__all__ = ["ENASConfig", "SearchResult", "SharedTraining", "enas", "random_search", "shared_accuracy"]


@dataclass(frozen=True)
class SharedTraining:
    """The shared-weight budget of a search: ``epochs`` x ``steps_per_epoch`` Adam steps (``lr``) on
    minibatches of ``batch_size``, a supernet of node ``width``, and the final best-of-``candidates``."""

    epochs: int = 20
    steps_per_epoch: int = 100
    batch_size: int = 128
    lr: float = 3e-3
    candidates: int = 100
    width: int = 32

    def __post_init__(self) -> None:
        for name in ("epochs", "steps_per_epoch", "batch_size", "candidates", "width"):
            positive_int(name, getattr(self, name))
        nonnegative("lr", self.lr, positive=True)


@dataclass(frozen=True)
class ENASConfig:
    """The controller of :func:`enas` and its training (ENAS's defaults where they carry over).

    Attributes:
        controller_steps: REINFORCE steps per epoch.
        controller_batch: children sampled (and rewarded) per REINFORCE step.
        reward_batch: validation examples per reward evaluation.
        lr: the controller's Adam learning rate.
        entropy_weight: the entropy bonus :math:`\\beta`.
        baseline_decay: the moving-average baseline's decay.
        hidden: the LSTM's width.
        temperature, tanh_constant, init_range: as for :class:`Controller`.
        memory: keep a memory buffer and add the supervised reconstruction loss.
        buffer_start: the first epoch (from 1) at whose end sampled architectures are stored.
        supervised_start: the first epoch whose controller steps add the supervised loss.
        store_per_epoch, capacity, replace, sample_size: as for :class:`MemoryBuffer` (the paper: 1,000,
            10,000, 100, 100).
        supervised_weight: the weight of the supervised loss (the paper: 1).
    """

    controller_steps: int = 20
    controller_batch: int = 10
    reward_batch: int = 256
    lr: float = 3.5e-3
    entropy_weight: float = 1e-4
    baseline_decay: float = 0.95
    hidden: int = 64
    temperature: float = 5.0
    tanh_constant: float | None = 2.5
    init_range: float = 0.1
    memory: bool = False
    buffer_start: int = 5
    supervised_start: int = 10
    store_per_epoch: int = 1000
    capacity: int = 10_000
    replace: int = 100
    sample_size: int = 100
    supervised_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("controller_steps", "controller_batch", "reward_batch", "hidden", "buffer_start",
                     "supervised_start", "store_per_epoch"):  # fmt: skip
            positive_int(name, getattr(self, name))
        nonnegative("lr", self.lr, positive=True)
        nonnegative("supervised_weight", self.supervised_weight)
        if self.memory and self.supervised_start <= self.buffer_start:
            raise InvalidArgumentError(
                f"supervised_start={self.supervised_start} must come after buffer_start={self.buffer_start}: the "
                "supervised loss needs stored architectures"
            )
        if self.memory:  # checks capacity >= sample_size now rather than mid-search
            MemoryBuffer(self.capacity, self.sample_size, self.replace)


@dataclass
class SearchResult:
    """What a weight-sharing search returns.

    Attributes:
        method: ``"random"`` or ``"enas"``.
        best: the candidate with the highest shared-weight validation accuracy.
        candidates: the final sample of architectures.
        candidate_accuracy: their shared-weight validation accuracies.
        history: one record per epoch (mean training loss; for ENAS mean reward, baseline, entropy, buffer
            size and supervised loss).
        counts: ``shared_steps``, ``reward_evaluations`` (children scored on a validation minibatch for the
            controller) and ``candidate_evaluations`` (children scored on the whole validation split).
        supernet: the trained shared weights.
        controller: the trained controller (ENAS), else ``None``.
        buffer: the memory buffer (ENAS with ``memory=True``), else ``None``.
        seconds: wall-clock time of the search.
        config: the settings of the search (plain values).
    """

    method: str
    best: Architecture
    candidates: list[Architecture]
    candidate_accuracy: list[float]
    history: list[dict[str, Any]]
    counts: dict[str, int]
    supernet: Supernet
    controller: Controller | None = None
    buffer: MemoryBuffer | None = None
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)


def shared_accuracy(supernet: Supernet, arch: Architecture, split: Split | tuple[torch.Tensor, torch.Tensor]) -> float:
    """The accuracy of the child ``arch`` with the supernet's shared weights on ``split`` (no gradient)."""
    x, y = (split.x, split.y) if isinstance(split, Split) else split
    with torch.no_grad():
        return float((supernet(x, arch).argmax(-1) == y).to(torch.float64).mean())


class _Shared:
    """The shared weights, their optimizer and the data streams of one search."""

    def __init__(self, space: CellSpace, splits: Splits, training: SharedTraining, seed: int) -> None:
        self.splits, self.training = splits, training
        with _rng.fork(_rng.derive(seed, "supernet")):
            self.net = Supernet(space, splits.train.x.shape[1], splits.num_classes, training.width)
        self.net.to(device=splits.train.x.device, dtype=splits.train.x.dtype)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=training.lr)
        self.batches = torch.Generator().manual_seed(_rng.derive(seed, "batches"))
        self.counts = {"shared_steps": 0, "reward_evaluations": 0, "candidate_evaluations": 0}

    def minibatch(self, split: Split, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(split), (size,), generator=self.batches)
        return split.x[idx], split.y[idx]

    def train_epoch(self, archs: list[Architecture]) -> float:
        total = 0.0
        for arch in archs:
            x, y = self.minibatch(self.splits.train, self.training.batch_size)
            loss = torch.nn.functional.cross_entropy(self.net(x, arch), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += float(loss.detach())
        self.counts["shared_steps"] += len(archs)
        return total / len(archs)

    def select(self, method: str, candidates: list[Architecture], history: list[dict[str, Any]], start: float,
               **extra: Any) -> SearchResult:  # fmt: skip
        scores = [shared_accuracy(self.net, a, self.splits.val) for a in candidates]
        self.counts["candidate_evaluations"] += len(candidates)
        best = max(range(len(candidates)), key=lambda k: scores[k])
        return SearchResult(method, candidates[best], candidates, scores, history, dict(self.counts), self.net,
                            seconds=time.perf_counter() - start, **extra)  # fmt: skip


def random_search(
    space: CellSpace, splits: Splits, training: SharedTraining | None = None, *, seed: int = 0
) -> SearchResult:
    """Random search with weight sharing: train the supernet on uniformly sampled children, then return the
    best of ``training.candidates`` uniform samples by shared-weight validation accuracy."""
    training = SharedTraining() if training is None else training
    start = time.perf_counter()
    shared = _Shared(space, splits, training, seed)
    gen = torch.Generator().manual_seed(_rng.derive(seed, "random-archs"))
    history = []
    for epoch in range(training.epochs):
        loss = shared.train_epoch(space.sample(training.steps_per_epoch, gen))
        history.append({"epoch": epoch + 1, "train_loss": loss})
    return shared.select("random", space.sample(training.candidates, gen), history, start,
                         config={"training": asdict(training)})  # fmt: skip


def enas(
    space: CellSpace,
    splits: Splits,
    training: SharedTraining | None = None,
    config: ENASConfig | None = None,
    *,
    seed: int = 0,
    callback: Callable[[int, Controller], None] | None = None,
) -> SearchResult:
    """ENAS with weight sharing (see the module docstring); ``callback(epoch, controller)`` runs after every
    epoch (e.g. to record hidden states as the controller trains)."""
    training = SharedTraining() if training is None else training
    cfg = ENASConfig() if config is None else config
    start = time.perf_counter()
    shared = _Shared(space, splits, training, seed)
    controller = Controller(
        space, cfg.hidden, temperature=cfg.temperature, tanh_constant=cfg.tanh_constant, init_range=cfg.init_range,
        generator=torch.Generator().manual_seed(_rng.derive(seed, "controller")),
    ).to(device=splits.train.x.device, dtype=splits.train.x.dtype)  # fmt: skip
    opt = torch.optim.Adam(controller.parameters(), lr=cfg.lr)
    baseline = MovingAverage(cfg.baseline_decay)
    gen = torch.Generator().manual_seed(_rng.derive(seed, "controller-samples"))
    buffer = (
        MemoryBuffer(cfg.capacity, cfg.sample_size, cfg.replace, seed=_rng.derive(seed, "buffer"))
        if cfg.memory
        else None
    )
    history = []
    for epoch in range(1, training.epochs + 1):
        with torch.no_grad():
            archs = controller.architectures(controller.sample(training.steps_per_epoch, gen))
        record: dict[str, Any] = {"epoch": epoch, "train_loss": shared.train_epoch(archs)}
        rewards_seen, entropies, sup_losses = [], [], []
        supervise = buffer is not None and epoch >= cfg.supervised_start
        for _ in range(cfg.controller_steps):
            rollout = controller.sample(cfg.controller_batch, gen)
            batch = shared.minibatch(splits.val, cfg.reward_batch)
            rewards = torch.tensor([shared_accuracy(shared.net, a, batch) for a in controller.architectures(rollout)],
                                   dtype=rollout.log_prob.dtype)  # fmt: skip
            shared.counts["reward_evaluations"] += len(rewards)
            loss = reinforce_loss(rollout, rewards, baseline.advance(rewards), cfg.entropy_weight)
            if supervise:
                assert buffer is not None
                sup = supervised_loss(controller, buffer.sample())
                loss = loss + cfg.supervised_weight * sup
                sup_losses.append(float(sup.detach()))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            rewards_seen.append(float(rewards.mean()))
            entropies.append(float(rollout.entropy.detach().mean()))
        if buffer is not None and epoch >= cfg.buffer_start:
            with torch.no_grad():
                buffer.add(controller.sample(cfg.store_per_epoch, gen).tokens)
        record.update(reward=sum(rewards_seen) / len(rewards_seen), baseline=baseline.value,
                      entropy=sum(entropies) / len(entropies), buffer=len(buffer) if buffer is not None else 0,
                      supervised_loss=sum(sup_losses) / len(sup_losses) if sup_losses else None)  # fmt: skip
        history.append(record)
        if callback is not None:
            callback(epoch, controller)
    with torch.no_grad():
        candidates = controller.architectures(controller.sample(training.candidates, gen))
    return shared.select("enas", candidates, history, start, controller=controller, buffer=buffer,
                         config={"training": asdict(training), "enas": asdict(cfg)})  # fmt: skip
