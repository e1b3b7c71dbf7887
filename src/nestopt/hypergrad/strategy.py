"""The strategy protocol: what a bilevel training loop needs from any way of computing hypergradients.

A training loop (:class:`nestopt.BilevelTrainer`, or your own) owns the model, the data, the optimizers and
the checkpoints. Each outer step it hands the strategy a :class:`Problem` and calls, in order:

.. code-block:: text

    strategy.inner_phase(problem)     -> train losses   (inner steps on the weights)
    strategy.hypergradient(problem)   -> HypergradResult (d val_loss / d hparams, with diagnostics)
    ... the loop steps the hyperparameters with result.grads ...

and, around them, :meth:`Strategy.reset` after a cold-start re-initialization of the weights,
:meth:`Strategy.state_dict` / :meth:`Strategy.load_state_dict` for checkpoints, and
:meth:`Strategy.extra_hparams` once, for outer variables the strategy adds (perturbation scales, say).

The loop checks a strategy's declared abilities instead of its type:

``differentiates``
    the ways a hyperparameter can enter the problem that the strategy can differentiate: ``"loss"`` (the
    inner loss: a penalty, the batch, example weights), ``"trajectory"`` (only the optimization trajectory:
    an optimizer setting such as a learning rate), ``"sampling"`` (only random sampling: dropout rates,
    discrete augmentation, which have no gradient through the loss). Each hyperparameter family declares
    the channels it ``enters`` through; a family whose channels the strategy cannot differentiate is refused.
``uses_inner_optimizer``
    whether the loop's ``torch.optim`` inner optimizer takes the inner steps (:meth:`Problem.inner_step`),
    or the strategy takes them itself (unrolling, with its own differentiable optimizer).
``fixed_steps``
    the number of inner steps per outer step the strategy fixes (an unroll's length), or ``None``.
``exact_data_parallel``
    whether the strategy applies :attr:`Problem.reduce` wherever it reads local data, so that in a
    data-parallel run (:class:`nestopt.distributed.DataParallel`) it returns the exact global hypergradient.

Example: a user-written strategy, the one-step greedy hypergradient (identity inverse Hessian), plugs into
the trainer like the built-in ones:

    >>> import functools, torch, nestopt
    >>> from nestopt import data, hparams, hypergrad, linalg, tree
    >>> class Greedy(hypergrad.Strategy):
    ...     name = "greedy"
    ...     def hypergradient(self, problem):
    ...         return hypergrad.implicit(problem.inner_loss, problem.outer_loss, tree.detach(problem.params),
    ...                                   problem.hparams, problem.next_train(), problem.next_val(),
    ...                                   solver=linalg.Identity(alpha=0.1), seed=problem.seed)
    >>> d = data.synthetic_classification(n_train=64, n_val=32, n_test=32, seed=0)
    >>> net = torch.nn.Linear(10, 3)
    >>> trainer = nestopt.BilevelTrainer(net, torch.nn.functional.cross_entropy, [hparams.WeightDecay(net)],
    ...                                  hypergrad=Greedy(), inner_steps_per_outer=2)
    >>> len(trainer.fit(data.Loader(d.train, 32), data.Loader(d.val, 32), outer_steps=2, progress=False))
    2
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from nestopt import tree
from nestopt.autodiff import LossFn
from nestopt.hypergrad.result import HypergradResult
from nestopt.tree import Tree

__all__ = ["CHANNELS", "Problem", "Strategy"]

CHANNELS = ("loss", "trajectory", "sampling")
"""The ways a hyperparameter can enter a bilevel problem (see the module docstring)."""


@dataclass
class Problem:
    """One outer step of a bilevel problem, as a training loop hands it to a :class:`Strategy`.

    Attributes:
        inner_loss: ``(params, hparams, batch) -> scalar``: the training loss, free of side effects (train
            mode; it never updates BatchNorm statistics), for hypergradient products.
        outer_loss: ``(params, hparams, batch) -> scalar``: the validation loss (eval mode by default).
        step_loss: the training loss as an inner *step* evaluates it: like ``inner_loss``, but it updates the
            model's buffers (BatchNorm running statistics). A strategy that takes inner steps itself evaluates
            it once per step, never for recomputations or products.
        params: the live inner parameters (the loop's tensors, updated in place).
        hparams: the live hyperparameters (leaves that require grad).
        next_train: the next training batch.
        next_val: the next validation batch.
        inner_step: ``(batch, hparams) -> loss``: one step of the loop's inner optimizer on ``step_loss`` at
            the given (detached) hyperparameters; returns the loss before the step.
        steps: inner steps per outer step.
        outer_step: the index of this outer step (0-based).
        seed: a seed for this outer step's randomness (dropout masks of products, unrolled steps): a pure
            function of the loop's seed and ``outer_step``, so that a resumed run replays it.
        reduce: in a data-parallel run whose losses are means over ranks, ``tree -> tree`` averaging over the
            ranks (see :func:`nestopt.hypergrad.implicit`); ``None`` in one process.
    """

    inner_loss: LossFn
    outer_loss: LossFn
    step_loss: LossFn
    params: Tree
    hparams: Tree
    next_train: Callable[[], Any]
    next_val: Callable[[], Any]
    inner_step: Callable[[Any, Tree], float]
    steps: int
    outer_step: int
    seed: int
    reduce: Callable[[Tree], Tree] | None = None

    def set_params(self, values: Tree) -> None:
        """Copy ``values`` into the live parameters (after a strategy took the inner steps itself)."""
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(values[k])


class Strategy:
    """Base class of the ways of computing hypergradients in a training loop (see the module docstring).

    Subclasses implement :meth:`hypergradient`; the default :meth:`inner_phase` takes ``problem.steps``
    steps of the loop's inner optimizer at the current hyperparameters. A strategy may keep state between
    outer steps (a previous solution, an optimizer state); it must create it in :meth:`reset`, because a
    trainer works on a shallow copy of the strategy it is given and calls :meth:`reset` on it first, so that
    one strategy value can configure several runs.
    """

    name: str = "strategy"
    differentiates: frozenset[str] = frozenset({"loss"})
    uses_inner_optimizer: bool = True
    fixed_steps: int | None = None
    exact_data_parallel: bool = False

    def extra_hparams(self, hparams: Tree) -> Tree:
        """Outer variables this strategy adds to the hyperparameters (keys without prefix), given the
        initial hyperparameters; the loop optimizes and checkpoints them with the others. Default: none."""
        return {}

    def inner_phase(self, problem: Problem) -> list[float]:
        """The inner steps of one outer step; returns their training losses."""
        h = tree.detach(problem.hparams)
        return [problem.inner_step(problem.next_train(), h) for _ in range(problem.steps)]

    def hypergradient(self, problem: Problem) -> HypergradResult:
        """The hypergradient of the validation loss at the current weights and hyperparameters."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget state tied to the current weights (called after a cold-start re-initialization)."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep of this strategy (tensors and plain values only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
