"""Collectives on trees: the mean over ranks, a broadcast from one rank, a bitwise agreement check.

Each call packs the tree into one flat buffer per dtype (one buffer for the usual tree of one dtype) and runs
one collective on it, so that a tree of many small tensors costs one latency, not one per tensor. Every
collective is counted (:func:`stats`), and one that fails because another rank failed raises a
:class:`~nestopt.errors.RankFailedError` naming that rank (see :func:`nestopt.distributed.guard`).

With the NCCL backend, CPU tensors are moved to the current GPU for the collective and back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from nestopt._validate import nonnegative_int
from nestopt.distributed._failure import diagnose
from nestopt.errors import InvalidArgumentError
from nestopt.tree import Tree

__all__ = ["CommStats", "all_reduce_mean", "barrier", "broadcast_", "in_sync", "stats"]


@dataclass(frozen=True)
class CommStats:
    """Collectives run by this process so far, the bytes of the buffers they carried, and the seconds spent in
    them.

    ``bytes`` is the payload (the buffer each rank hands in); a ring all-reduce moves about
    ``2 (R - 1) / R`` times that over each rank's link. ``seconds`` includes the time spent waiting for the
    slowest rank to arrive (with NCCL, only the time to enqueue the collective).
    """

    collectives: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def __add__(self, other: CommStats) -> CommStats:
        return CommStats(self.collectives + other.collectives, self.bytes + other.bytes, self.seconds + other.seconds)

    def __sub__(self, other: CommStats) -> CommStats:
        return CommStats(self.collectives - other.collectives, self.bytes - other.bytes, self.seconds - other.seconds)


_totals: dict[str, float] = {"collectives": 0, "bytes": 0, "seconds": 0.0}


def stats() -> CommStats:
    """The collectives this process ran through :mod:`nestopt.distributed` so far (subtract two to get a span).

    Example:
        >>> from nestopt import distributed
        >>> before = distributed.stats()
        >>> (distributed.stats() - before).collectives
        0
    """
    return CommStats(int(_totals["collectives"]), int(_totals["bytes"]), _totals["seconds"])


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _comm_device(t: Tensor) -> torch.device:
    if dist.get_backend() == "nccl" and t.device.type == "cpu":
        return torch.device("cuda", torch.cuda.current_device())
    return t.device


def _run(kind: str, buf: Tensor, op: Callable[[Tensor], object]) -> Tensor:
    """Run ``op`` on ``buf`` (moved to the backend's device and back), counting it and naming a failed peer."""
    n = int(_totals["collectives"]) + 1
    what = f"{kind} #{n} ({buf.numel()} {str(buf.dtype).removeprefix('torch.')} values)"
    device = _comm_device(buf)
    start = time.perf_counter()
    work = buf if buf.device == device else buf.to(device)
    try:
        op(work)
    except Exception as err:
        explained = diagnose(err, what)
        if explained is not None:
            raise explained from err
        raise
    _totals["collectives"] = n
    _totals["bytes"] += buf.numel() * buf.element_size()
    _totals["seconds"] += time.perf_counter() - start
    return work if work.device == buf.device else work.to(buf.device)


def _groups(values: Mapping[str, Tensor], name: str, *, floating: bool) -> list[list[str]]:
    """The keys of ``values`` grouped by (dtype, device), each group packed into one buffer."""
    groups: dict[tuple[torch.dtype, torch.device], list[str]] = {}
    for k, t in values.items():
        if not isinstance(t, Tensor):
            raise InvalidArgumentError(f"{name} must be a dict of tensors, but {k!r} is a {type(t).__name__}")
        if floating and not (t.is_floating_point() or t.is_complex()):
            raise InvalidArgumentError(f"{name}[{k!r}] has dtype {t.dtype}: only floating tensors can be averaged")
        groups.setdefault((t.dtype, t.device), []).append(k)
    return list(groups.values())


def _pack(values: Mapping[str, Tensor], keys: list[str]) -> Tensor:
    flat = torch.cat([values[k].detach().reshape(-1) for k in keys])
    return torch.view_as_real(flat).reshape(-1) if flat.is_complex() else flat


def _unpack(buf: Tensor, values: Mapping[str, Tensor], keys: list[str]) -> Tree:
    first = values[keys[0]]
    flat = torch.view_as_complex(buf.reshape(-1, 2)) if first.is_complex() else buf
    parts = torch.split(flat, [values[k].numel() for k in keys])
    return {k: p.reshape(values[k].shape) for k, p in zip(keys, parts)}


_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: Tensor) -> Tensor:
    """``t``'s bits as integers (so that NaN equals NaN and -0.0 differs from 0.0)."""
    return t.view(_INT_OF_SIZE[t.element_size()]) if t.is_floating_point() else t


def all_reduce_mean(value: Tree) -> Tree:
    """The mean of ``value`` over the ranks of the default process group (``value`` itself in one process).

    Every rank must call it with a tree of the same keys, shapes and dtypes; every rank gets the same bits.
    This is the ``reduce`` of an exact data-parallel hypergradient:
    ``hypergrad.implicit(..., reduce=nestopt.distributed.all_reduce_mean)``.

    Example:
        >>> import torch
        >>> from nestopt import distributed
        >>> distributed.all_reduce_mean({"w": torch.ones(2)})["w"]   # one process: unchanged
        tensor([1., 1.])
    """
    groups = _groups(value, "the reduced tree", floating=True)
    world = _world_size()
    if world == 1:
        return value
    out: Tree = {}
    for keys in groups:
        buf = _run("all_reduce", _pack(value, keys), lambda b: dist.all_reduce(b))
        out.update(_unpack(buf.div_(world), value, keys))
    return {k: out[k] for k in value}


def broadcast_(value: Tree, src: int = 0) -> Tree:
    """Overwrite ``value``'s tensors in place with rank ``src``'s (nothing in one process); returns ``value``.

    Example:
        >>> import torch
        >>> from nestopt import distributed
        >>> distributed.broadcast_({"w": torch.ones(2)})["w"]
        tensor([1., 1.])
    """
    src = nonnegative_int("src", src)
    world = _world_size()
    if world == 1 or not value:
        return value
    if src >= world:
        raise InvalidArgumentError(f"src must be a rank below the world size {world}, got {src}")
    for keys in _groups(value, "the broadcast tree", floating=False):
        buf = _run("broadcast", _pack(value, keys), lambda b: dist.broadcast(b, src))
        with torch.no_grad():
            for k, t in _unpack(buf, value, keys).items():
                value[k].copy_(t)
    return value


def in_sync(value: Tree) -> bool:
    """Whether every rank holds bit-identical tensors in ``value`` (the same answer on every rank).

    Example:
        >>> import torch
        >>> from nestopt import distributed
        >>> distributed.in_sync({"w": torch.ones(2)})
        True
    """
    if _world_size() == 1 or not value:
        return True
    same = True
    for keys in _groups(value, "the checked tree", floating=False):
        mine = _pack(value, keys)
        theirs = _run("broadcast", mine.clone(), lambda b: dist.broadcast(b, 0))
        same = same and torch.equal(_bits(mine), _bits(theirs))
    flag = _run("all_reduce", torch.tensor([0.0 if same else 1.0], dtype=torch.float64), lambda b: dist.all_reduce(b))
    return bool(flag.item() == 0.0)


def barrier() -> None:
    """Wait until every rank gets here (nothing in one process); a failed rank is named as for any collective."""
    if _world_size() > 1:
        _run("barrier", torch.zeros(1), lambda b: dist.all_reduce(b))
