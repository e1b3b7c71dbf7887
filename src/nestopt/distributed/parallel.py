"""Data-parallel hypergradients and bilevel training: the ``"exact"`` and ``"local"`` modes.

Each of ``R`` ranks holds a shard of every training and validation batch, and the global losses are the means
of the ranks' losses. The two modes differ in what they average:

``"exact"``
    the global hypergradient. The outer gradient in the weights, every curvature product of the linear
    solve and the result (direct plus mixed term) are averaged over the ranks, so every rank solves the
    global system with the same iterations: ``K + 1`` all-reduces of the weights' size and one of the
    hyperparameters' per ``K``-product solve.
``"local"`` (biased)
    each rank computes the hypergradient of its own shard, and only the results are averaged (one
    all-reduce of the hyperparameters' size), as Betty does. The mean of the ranks'
    :math:`\\partial_{\\lambda w} L_i H_i^{-1} \\nabla_w L^{out}_i` is not the global
    :math:`\\partial_{\\lambda w} L\\, H^{-1} \\nabla_w L^{out}`: the estimate is biased, and its error does not
    shrink with more steps. Cheap, and labelled ``"biased": True`` in the diagnostics.

Results carry ``info.extra["distributed"] = {"mode", "biased", "world_size", "collectives", "bytes",
"seconds"}``: the collectives this hypergradient ran, the bytes of their buffers and the seconds spent in them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch

from nestopt import hypergrad
from nestopt._validate import one_of
from nestopt.bilevel.parallel import Parallel
from nestopt.distributed._failure import raise_if_peer_failed
from nestopt.distributed._world import world
from nestopt.distributed.collectives import CommStats, all_reduce_mean, barrier, broadcast_, stats
from nestopt.errors import InvalidArgumentError, UnsupportedError
from nestopt.hypergrad.result import HypergradResult
from nestopt.tree import Tree

if TYPE_CHECKING:
    from nestopt.autodiff import LossFn
    from nestopt.bilevel.trainer import BilevelTrainer

__all__ = ["MODES", "DataParallel", "Mode", "implicit"]

Mode = Literal["exact", "local"]
MODES = ("exact", "local")


class _Spent:
    """``all_reduce_mean`` that adds up the collectives it ran, for one hypergradient's diagnostics."""

    __name__ = "all_reduce_mean"

    def __init__(self) -> None:
        self.spent = CommStats()

    def __call__(self, value: Tree) -> Tree:
        before = stats()
        out = all_reduce_mean(value)
        self.spent = self.spent + (stats() - before)
        return out

    def take(self) -> CommStats:
        spent, self.spent = self.spent, CommStats()
        return spent


def _finish(result: HypergradResult, mode: str, reducer: _Spent) -> HypergradResult:
    """Average a local result's hypergradient (``"local"``) and label the diagnostics of either mode."""
    if mode == "local":
        result.grads = reducer(result.grads)
    spent = reducer.take()
    result.info.extra["distributed"] = {
        "mode": mode,
        "biased": mode == "local",
        "world_size": world().world_size,
        "collectives": spent.collectives,
        "bytes": spent.bytes,
        "seconds": spent.seconds,
    }
    return result


def implicit(
    inner_loss: LossFn,
    outer_loss: LossFn,
    params: Tree,
    hparams: Tree,
    inner_batch: Any,
    outer_batch: Any,
    *,
    mode: Mode = "exact",
    **options: Any,
) -> HypergradResult:
    """The data-parallel IFT hypergradient: :func:`nestopt.hypergrad.implicit` on this rank's shards.

    ``params`` and ``hparams`` must be the same on every rank; ``inner_batch`` and ``outer_batch`` are this
    rank's shards. ``mode="exact"`` returns the hypergradient of the mean of the ranks' losses (the same
    bits on every rank); ``mode="local"`` the mean of the ranks' own hypergradients, a **biased** estimate
    (see the module docstring). ``options`` are those of :func:`~nestopt.hypergrad.implicit` (``solver``,
    ``curvature``, ...). In one process both modes are :func:`~nestopt.hypergrad.implicit`.

    Example:
        >>> import torch
        >>> from nestopt import distributed, linalg
        >>> inner = lambda p, h, b: 0.5 * ((p["w"] - b) ** 2).sum() + 0.5 * h["l2"] * (p["w"] ** 2).sum()
        >>> outer = lambda p, h, b: 0.5 * ((p["w"] - b) ** 2).sum()
        >>> b = torch.tensor([1.0, 2.0], dtype=torch.float64)
        >>> res = distributed.implicit(inner, outer, {"w": b / 2}, {"l2": torch.tensor(1.0, dtype=torch.float64)},
        ...                            b, b, mode="exact", solver=linalg.CG(steps=5))
        >>> round(float(res.grads["l2"]), 6), res.info.extra["distributed"]["mode"]
        (0.625, 'exact')
    """
    one_of("mode", mode, MODES)
    if "reduce" in options:
        raise InvalidArgumentError("distributed.implicit sets reduce itself from mode: drop reduce=")
    reducer = _Spent()
    res = hypergrad.implicit(
        inner_loss, outer_loss, params, hparams, inner_batch, outer_batch,
        reduce=reducer if mode == "exact" else None, **options,
    )  # fmt: skip
    return _finish(res, mode, reducer)


class DataParallel(Parallel):
    """Run a :class:`~nestopt.BilevelTrainer` on every rank of a ``torchrun`` job, as one data-parallel run.

    Pass it as ``BilevelTrainer(..., parallel=DataParallel())`` on every rank, with loaders that give each rank
    its shard (:class:`~nestopt.distributed.ShardedLoader`). The trainer then

    * starts every ``fit`` from rank 0's weights, buffers and hyperparameters (broadcast);
    * averages the inner gradients over the ranks: a model wrapped in ``DistributedDataParallel`` does it
      in its ``backward`` (the trainer runs the wrapper's forward for inner steps); for an unwrapped model
      this object all-reduces them, in one buffer, before each optimizer step;
    * averages floating buffers (BatchNorm running statistics) after each inner step, so they stay identical
      (the running means are then those of the global batches);
    * computes the hypergradient in ``mode`` (``"exact"``, or the biased ``"local"``: see the module
      docstring), the same bits on every rank, so the hyperparameters stay bit-identical;
    * reduces evaluations over the ranks' shards; writes checkpoints from rank 0 only (every rank resumes
      from the file, which must be visible to all); and, when a rank raises, ends the others with a
      :class:`~nestopt.errors.RankFailedError` naming it (within the process group's timeout at worst).

    Strategies: ``"exact"`` needs one that applies the loop's reduction (``exact_data_parallel``:
    :class:`~nestopt.hypergrad.Implicit`); ``"local"`` takes any strategy that uses the loop's inner
    optimizer. Strategies that take the inner steps themselves (``Unrolled``, ``Forward``) are refused: their
    inner gradients would have to be all-reduced inside the differentiated graph.

    Args:
        mode: ``"exact"`` (default) or ``"local"``.

    Example:
        >>> from nestopt import distributed
        >>> dp = distributed.DataParallel()   # in a plain python process: one rank
        >>> dp.mode, dp.world_size, dp.is_writer
        ('exact', 1, True)
    """

    def __init__(self, mode: Mode = "exact") -> None:
        self.mode: Mode = one_of("mode", mode, MODES)
        here = world()
        self.rank, self.world_size, self.is_writer = here.rank, here.world_size, here.is_main
        self.eval_reduce = all_reduce_mean
        self._reducer = _Spent()
        self._wrapped = False
        self._trainer: BilevelTrainer | None = None

    def __repr__(self) -> str:
        return f"DataParallel(mode={self.mode!r}, rank={self.rank}, world_size={self.world_size})"

    def setup(self, trainer: BilevelTrainer) -> None:
        strategy = trainer.strategy
        if not strategy.uses_inner_optimizer:
            raise UnsupportedError(
                f"the {strategy.name} strategy takes the inner steps itself and differentiates them; a data-parallel "
                "run would need its inner gradients all-reduced inside the differentiated graph (a differentiable "
                "all-reduce in the unroll), which nestopt does not provide: use hypergrad.Implicit(...)"
            )
        if self.mode == "exact" and not strategy.exact_data_parallel:
            raise UnsupportedError(
                f"the {strategy.name} strategy does not declare exact_data_parallel (it would not average its "
                "curvature products over the ranks): use hypergrad.Implicit(...), or DataParallel(mode='local') "
                "for the biased average of the ranks' own hypergradients"
            )
        self._wrapped = isinstance(trainer.model, torch.nn.parallel.DistributedDataParallel)
        self._trainer = trainer
        self._reducer = _Spent()  # this trainer's (the trainer works on its own copy of this object)
        self.hypergrad_reduce = self._reducer if self.mode == "exact" else None

    def start(self, trainer: BilevelTrainer) -> None:
        if self.world_size == 1:
            return
        self._check_same_layout(trainer)
        state = {f"params/{k}": v for k, v in trainer.params.items()}
        state.update({f"buffers/{k}": v for k, v in trainer.buffers.items()})
        state.update({f"hparams/{k}": v for k, v in trainer.hparams.items()})
        broadcast_(state)

    def _check_same_layout(self, trainer: BilevelTrainer) -> None:
        mine = [
            (name, k, tuple(v.shape), str(v.dtype))
            for name, group in (("params", trainer.params), ("buffers", trainer.buffers), ("hparams", trainer.hparams))
            for k, v in group.items()
        ]
        layout = (self.mode, trainer.strategy.name, trainer.outer_step, mine)
        every: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(every, layout)
        differ = [r for r, other in enumerate(every) if other != every[0]]
        if differ:
            raise InvalidArgumentError(
                f"ranks {differ} differ from rank 0 in their mode, strategy, outer step or the keys, shapes and "
                "dtypes of their weights, buffers or hyperparameters: every rank must build the same trainer "
                "(and resume from the same checkpoint)"
            )

    def sync_step(self, params: Tree, buffers: Tree) -> None:
        if self.world_size == 1:
            return
        state: Tree = {}
        if not self._wrapped:  # DistributedDataParallel averaged them in backward
            state.update({f"grad/{k}": p.grad for k, p in params.items() if p.grad is not None})
        state.update({f"buffer/{k}": b for k, b in buffers.items() if b.is_floating_point()})
        if not state:
            return
        mean = all_reduce_mean(state)
        with torch.no_grad():
            for key, value in mean.items():
                kind, k = key.split("/", 1)
                (params[k].grad if kind == "grad" else buffers[k]).copy_(value)  # type: ignore[union-attr]

    def finish(self, result: HypergradResult) -> HypergradResult:
        return _finish(result, self.mode, self._reducer)

    def barrier(self) -> None:
        barrier()

    def failed(self, error: BaseException) -> None:
        step = "" if self._trainer is None else f" at outer step {self._trainer.outer_step}"
        raise_if_peer_failed(error, f"BilevelTrainer.fit{step}")
