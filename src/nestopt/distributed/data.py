"""Data for data-parallel runs: each rank reads its own shard of every batch, deterministically.

:class:`ShardedLoader` splits every batch of a :class:`nestopt.data.Loader` into ``world_size`` equal,
contiguous parts and yields this rank's: the ranks' parts of batch ``b`` are, concatenated in rank order,
exactly batch ``b`` of the loader, so a run on ``R`` ranks with a global batch of ``B`` sees the same data as
one process with batches of ``B``, and the mean of the ranks' losses is the loss of the global batch. Like
the loader, it regenerates any epoch from its seed, so a resumed run continues with the same batches.

For your own ``torch.utils.data.DataLoader``, give it a ``torch.utils.data.DistributedSampler`` and wrap it
in :class:`EpochLoader`, which sets the sampler's epoch before every pass (the trainer's batch streams then
resume it exactly too)::

    sampler = torch.utils.data.DistributedSampler(dataset, shuffle=True, seed=0, drop_last=True)
    train = distributed.EpochLoader(torch.utils.data.DataLoader(dataset, batch_size=32, sampler=sampler))

A ``DistributedSampler`` deals the examples out to the ranks in turn (rank ``r`` takes every ``R``-th of a
shuffled order), so its global batches are not those of a single-process loader; both are unbiased.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import Tensor

from nestopt._validate import nonnegative_int, positive_int
from nestopt.data import Loader
from nestopt.distributed._world import world
from nestopt.errors import InvalidArgumentError

__all__ = ["EpochLoader", "ShardedLoader"]


class ShardedLoader:
    """This rank's contiguous part of every batch of ``loader`` (see the module docstring).

    Args:
        loader: a :class:`nestopt.data.Loader`; its ``batch_size`` is the global batch.
        rank: this process's rank (default: the process group's).
        world_size: the number of ranks (default: the process group's).
        even: require every batch to split into equal parts, so that the mean of the ranks' mean losses is
            the global batch's mean loss (the global batch size divisible by ``world_size``, and the last
            batch too unless the loader drops it). ``even=False`` allows unequal parts, for loaders that are
            only evaluated (evaluation adds the ranks' sums, which is exact for any split).

    Example:
        >>> from nestopt import data, distributed
        >>> d = data.synthetic_classification(n_train=8, seed=0)
        >>> full = data.Loader(d.train, batch_size=4, shuffle=False)
        >>> parts = [distributed.ShardedLoader(full, rank=r, world_size=2) for r in range(2)]
        >>> [len(x) for x, y in parts[1]]
        [2, 2]
        >>> bool((next(iter(parts[1].epoch_batches(0)))[0] == d.train.x[2:4]).all())
        True
    """

    def __init__(self, loader: Loader, *, rank: int | None = None, world_size: int | None = None, even: bool = True):
        if not isinstance(loader, Loader):
            raise InvalidArgumentError(
                f"loader must be a nestopt.data.Loader, got {type(loader).__name__}; for a torch DataLoader use a "
                "torch.utils.data.DistributedSampler and distributed.EpochLoader"
            )
        here = world()
        self.world_size = positive_int("world_size", here.world_size if world_size is None else world_size)
        self.rank = nonnegative_int("rank", here.rank if rank is None else rank)
        if self.rank >= self.world_size:
            raise InvalidArgumentError(f"rank must be below world_size={self.world_size}, got {self.rank}")
        self.loader = loader
        last = len(loader.part) % loader.batch_size
        if even and loader.batch_size % self.world_size:
            raise InvalidArgumentError(
                f"the loader's batch_size {loader.batch_size} does not split into {self.world_size} equal parts: "
                f"use a multiple of {self.world_size} (or even=False for a loader that is only evaluated)"
            )
        if even and last and not loader.drop_last and last % self.world_size:
            raise InvalidArgumentError(
                f"the last batch of each epoch has {last} examples, which do not split into {self.world_size} "
                "equal parts: pass drop_last=True to the loader, choose sizes that divide, or even=False for a "
                "loader that is only evaluated"
            )
        self._epoch = 0

    def __len__(self) -> int:
        return len(self.loader)

    def epoch_batches(self, epoch: int) -> Iterator[tuple[Tensor, ...]]:
        """This rank's parts of the batches of epoch ``epoch`` (the same every time)."""
        for batch in self.loader.epoch_batches(epoch):
            yield tuple(t.tensor_split(self.world_size)[self.rank] for t in batch)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        epoch = self._epoch
        self._epoch += 1
        return self.epoch_batches(epoch)


class EpochLoader:
    """A ``torch.utils.data.DataLoader`` whose sampler (a ``DistributedSampler``) is told each epoch.

    ``epoch_batches(e)`` calls ``sampler.set_epoch(e)`` and iterates the loader, so every epoch is reshuffled
    from ``(seed, e)`` alone and a resumed run regenerates it; iterating gives the next epoch.

    Example:
        >>> import torch
        >>> from nestopt import distributed
        >>> ds = torch.utils.data.TensorDataset(torch.arange(8.0))
        >>> sampler = torch.utils.data.DistributedSampler(ds, num_replicas=2, rank=0, shuffle=True, seed=0)
        >>> loader = distributed.EpochLoader(torch.utils.data.DataLoader(ds, batch_size=2, sampler=sampler))
        >>> [b[0].tolist() for b in loader.epoch_batches(0)] == [b[0].tolist() for b in loader.epoch_batches(0)]
        True
    """

    def __init__(self, loader: Any) -> None:
        sampler = getattr(loader, "sampler", None)
        if not callable(getattr(sampler, "set_epoch", None)):
            raise InvalidArgumentError(
                "loader must be a torch DataLoader whose sampler has set_epoch (a DistributedSampler), got "
                f"{type(loader).__name__} with sampler {type(sampler).__name__}"
            )
        self.loader: Any = loader
        self.sampler: Any = sampler
        self._epoch = 0

    def __len__(self) -> int:
        return len(self.loader)

    def epoch_batches(self, epoch: int) -> Iterator[Any]:
        """The batches of epoch ``epoch`` (the same every time)."""
        self.sampler.set_epoch(nonnegative_int("epoch", epoch))
        yield from self.loader

    def __iter__(self) -> Iterator[Any]:
        epoch = self._epoch
        self._epoch += 1
        return self.epoch_batches(epoch)
