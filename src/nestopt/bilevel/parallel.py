"""How a :class:`~nestopt.BilevelTrainer` runs over several processes: the seam for data parallelism.

The trainer calls these hooks at fixed points of its loop; this base class is the single-process run, where
each of them does nothing. :class:`nestopt.distributed.DataParallel` implements them with
``torch.distributed`` (hyperparameters broadcast and averaged gradients, reduced evaluations, checkpoints
written by rank 0, failures that name the rank).

========================  ===============================================================================
hook                      called
========================  ===============================================================================
:meth:`setup`             once, when the trainer is built: refuse what cannot run data-parallel
:meth:`start`             at the start of every ``fit`` (after a resume): every rank takes rank 0's state
:meth:`sync_step`         in every inner step, after ``backward`` and before the optimizer's step
:attr:`hypergrad_reduce`  handed to the strategy as :attr:`nestopt.hypergrad.Problem.reduce`
:meth:`finish`            on every hypergradient, before the outer optimizer's step
:attr:`eval_reduce`       combines the evaluation sums of the ranks
:attr:`is_writer`         whether this process writes checkpoints; :meth:`barrier` after each write
:meth:`failed`            when ``fit`` raises: name the rank that failed, or report this one
========================  ===============================================================================
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from nestopt.errors import InvalidArgumentError, NestoptWarning
from nestopt.hypergrad.result import HypergradResult
from nestopt.tree import Tree

if TYPE_CHECKING:
    from nestopt.bilevel.trainer import BilevelTrainer

__all__ = ["Parallel", "resolve"]


class Parallel:
    """One process: every hook does nothing (the base of :class:`nestopt.distributed.DataParallel`)."""

    world_size: int = 1
    is_writer: bool = True
    hypergrad_reduce: Callable[[Tree], Tree] | None = None
    eval_reduce: Callable[[Tree], Tree] | None = None

    def setup(self, trainer: BilevelTrainer) -> None:
        """Check, when the trainer is built, that its strategy and model can run this way."""

    def start(self, trainer: BilevelTrainer) -> None:
        """Make the trainer's weights, buffers and hyperparameters the same on every process."""

    def sync_step(self, params: Tree, buffers: Tree) -> None:
        """After an inner step's ``backward``: make the gradients (and buffers) the same on every process."""

    def finish(self, result: HypergradResult) -> HypergradResult:
        """The hypergradient the outer optimizer steps with."""
        return result

    def barrier(self) -> None:
        """Wait for every process (after rank 0 wrote a checkpoint)."""

    def failed(self, error: BaseException) -> None:
        """``fit`` raised ``error``: raise a clearer error naming the process that failed first, or return."""


def resolve(parallel: Parallel | None) -> Parallel:
    """A copy of ``parallel`` for one trainer (its :meth:`~Parallel.setup` keeps state about it), or the
    single-process default; warns when ``torch.distributed`` runs several processes and none was given (each
    would then train on its own)."""
    if parallel is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            warnings.warn(
                f"torch.distributed runs {dist.get_world_size()} processes but the trainer has no parallel=: each "
                "process trains on its own; pass parallel=nestopt.distributed.DataParallel()",
                NestoptWarning,
                stacklevel=3,
            )
        return Parallel()
    if not isinstance(parallel, Parallel):
        raise InvalidArgumentError(
            f"parallel must be a nestopt.bilevel.Parallel such as nestopt.distributed.DataParallel(), got {parallel!r}"
        )
    return copy.copy(parallel)
