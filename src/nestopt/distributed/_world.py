"""The process group: starting it under ``torchrun`` and asking where this process stands in it."""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass
from types import TracebackType

import torch
import torch.distributed as dist

from nestopt._validate import nonnegative, one_of
from nestopt.distributed import _failure

__all__ = ["BACKENDS", "DEFAULT_TIMEOUT", "World", "init", "world"]

BACKENDS = ("gloo", "nccl")
DEFAULT_TIMEOUT = 300.0
"""Seconds a collective waits for the other ranks before the run fails (``init``'s default)."""


@dataclass(frozen=True)
class World:
    """Where this process stands: its ``rank`` among ``world_size`` processes, its ``local_rank`` on this
    machine, the ``backend`` (``None`` without a process group) and the ``device`` its collectives use."""

    rank: int
    world_size: int
    local_rank: int
    backend: str | None
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the one that writes checkpoints and prints)."""
        return self.rank == 0


def world() -> World:
    """The current process group (``world_size`` 1 when ``torch.distributed`` is not initialized).

    Example:
        >>> from nestopt import distributed
        >>> distributed.world().world_size   # a plain python process
        1
    """
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not (dist.is_available() and dist.is_initialized()):
        return World(0, 1, local, None, torch.device("cpu"))
    backend = str(dist.get_backend())
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    return World(dist.get_rank(), dist.get_world_size(), local, backend, device)


def init(backend: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> World:
    """Start the process group that ``torchrun`` describes in the environment, and return this process's place.

    Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) nothing is started and the run has one process,
    so the same script runs with ``python`` and with ``torchrun``. An existing process group is kept.

    It also installs an exception hook: an exception that ends this process is reported to the others, whose
    next collective then fails at once with a :class:`~nestopt.errors.RankFailedError` naming this rank and
    the exception (see :func:`nestopt.distributed.guard`).

    Args:
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (GPUs, one per process: ``cuda:LOCAL_RANK`` becomes the
            current device); default ``"nccl"`` when CUDA is available, else ``"gloo"``.
        timeout: seconds a collective waits for every rank before failing (a crashed or hung rank then cannot
            hold the others forever).

    Returns:
        The :class:`World` of this process.
    """
    seconds = nonnegative("timeout", timeout, positive=True)
    if dist.is_available() and dist.is_initialized():
        return world()
    if "WORLD_SIZE" not in os.environ:
        return world()
    name = one_of("backend", backend or ("nccl" if torch.cuda.is_available() else "gloo"), BACKENDS)
    if name == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(name, timeout=datetime.timedelta(seconds=seconds))
    _install_excepthook()
    return world()


def _install_excepthook() -> None:
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        _failure.report(value)
        previous(kind, value, tb)

    sys.excepthook = hook
