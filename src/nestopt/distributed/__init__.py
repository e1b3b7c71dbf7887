"""Data parallelism on ``torch.distributed``: exact hypergradients and bilevel training under ``torchrun``.

The inner and outer losses of a data-parallel run are means over the ranks, each of which holds a shard of
every batch. An exact hypergradient then averages every quantity computed from local data: the outer
gradient in the weights, every Hessian-vector product of the linear solve, and the result (``K + 1``
all-reduces of the weights' size and one of the hyperparameters' per ``K``-product solve); the cheap
``"local"`` mode averages only the ranks' own hypergradients, a biased estimate (:mod:`.parallel`).

===================================  ==========================================================================
:func:`init`, :func:`world`          start the process group ``torchrun`` describes (gloo on CPU, NCCL on GPUs)
:func:`all_reduce_mean`              the mean of a tree over the ranks: ``hypergrad.implicit(..., reduce=...)``
:func:`broadcast_`, :func:`in_sync`  rank 0's values everywhere; whether every rank holds the same bits
:func:`barrier`, :func:`stats`       wait for every rank; collectives run, bytes carried, seconds spent
:func:`implicit`                     the data-parallel hypergradient in ``mode="exact"`` or ``"local"``
:class:`DataParallel`                ``BilevelTrainer(..., parallel=DataParallel())``: the whole training loop
:class:`ShardedLoader`               this rank's part of every batch of a :class:`nestopt.data.Loader`
:class:`EpochLoader`                 a ``DataLoader`` with a ``DistributedSampler``, resumable by epoch
:func:`guard`                        a failing rank ends the others with an error that names it
===================================  ==========================================================================

In a plain ``python`` process everything here is the single-process identity, so one script runs both ways.
See ``docs/distributed.md`` and ``examples/distributed_bilevel.py``.

Example:
    >>> from nestopt import distributed
    >>> distributed.init().world_size   # without torchrun: one process, nothing started
    1
"""

from nestopt.distributed._failure import guard
from nestopt.distributed._world import DEFAULT_TIMEOUT, World, init, world
from nestopt.distributed.collectives import CommStats, all_reduce_mean, barrier, broadcast_, in_sync, stats
from nestopt.distributed.data import EpochLoader, ShardedLoader
from nestopt.distributed.parallel import MODES, DataParallel, Mode, implicit

__all__ = [
    "DEFAULT_TIMEOUT",
    "MODES",
    "CommStats",
    "DataParallel",
    "EpochLoader",
    "Mode",
    "ShardedLoader",
    "World",
    "all_reduce_mean",
    "barrier",
    "broadcast_",
    "guard",
    "implicit",
    "in_sync",
    "init",
    "stats",
    "world",
]
