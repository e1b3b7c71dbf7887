"""Gradient-based meta-learning on plain ``nn.Module``: MAML, first-order MAML and iMAML.

Each learner adapts a copy of the model's weights to a task's support set and scores the adapted weights on
its query set; :meth:`MetaLearner.meta_loss` averages that score over a :class:`~nestopt.meta.TaskBatch`, as a
tensor whose ``.backward()`` puts the meta-gradient into the model's ``.grad``. A training loop reads like
any torch loop:

.. code-block:: python

    maml = meta.MAML(model, F.mse_loss, inner_lr=0.01, inner_steps=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for tasks in itertools.islice(meta.Sinusoid().stream(25, seed=0), 10_000):
        opt.zero_grad()
        maml.meta_loss(tasks).backward()
        opt.step()

======================  ================================================================  ====================
learner                 meta-gradient of :math:`L_q(\\phi(\\theta))`                         memory in ``K``
======================  ================================================================  ====================
:class:`MAML`           exact, through the ``K`` unrolled steps                            grows (the graph)
:class:`FOMAML`         :math:`\\nabla L_q(\\phi_K)`: the adapted weights' gradient          flat
:class:`IMAML`          :math:`(I + H/\\lambda)^{-1} \\nabla L_q(\\phi^*)` by CG (implicit)     flat
======================  ================================================================  ====================

MAML adapts by :func:`~nestopt.hypergrad.unrolled_solution` (the unroll stays in the graph: the meta-gradient
is second order); iMAML (Rajeswaran et al., 2019) adapts to :math:`\\phi^* = \\arg\\min_\\phi L_s(\\phi) +
\\tfrac{\\lambda}{2}\\|\\phi - \\theta\\|^2` without a graph and differentiates the solution by
:func:`~nestopt.hypergrad.implicit_solution`: since :math:`\\partial^2 / \\partial\\theta\\partial\\phi =
-\\lambda I`, the implicit VJP is :math:`\\lambda (H + \\lambda I)^{-1} v = (I + H/\\lambda)^{-1} v`.

The model runs through ``torch.func.functional_call`` at the adapted weights (the module is never
modified) in train mode, on copies of its buffers: BatchNorm uses each task's batch statistics, as in MAML,
and the module's running statistics never change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from nestopt import _rng, tree
from nestopt._validate import nonnegative, positive_int
from nestopt.autodiff import DecayTerms, GaussNewtonLoss
from nestopt.errors import InvalidArgumentError
from nestopt.hypergrad import implicit_solution, unrolled_solution
from nestopt.linalg import CG, Solver
from nestopt.meta.module import BoundModule, buffers_of, parameters_of
from nestopt.meta.tasks import Task, TaskBatch
from nestopt.optim import functional
from nestopt.optim.functional import FunctionalOptimizer
from nestopt.tree import Tree

__all__ = ["FOMAML", "IMAML", "MAML", "MetaLearner"]

Criterion = Callable[[Tensor, Tensor], Tensor]


class MetaLearner:
    """Base class of the meta-learners: adaptation on a support set, a meta-loss over a task batch.

    Args:
        model: the network whose weights are meta-learned (:math:`\\theta`, its trainable parameters).
        criterion: ``criterion(outputs, targets) -> scalar``, e.g. ``torch.nn.functional.mse_loss``.
        inner_lr: the adaptation's learning rate (for the default optimizer, plain SGD).
        inner_steps: adaptation steps ``K`` during meta-training.
        inner_optimizer: any differentiable optimizer from :mod:`nestopt.optim.functional` instead of SGD.
        seed: seeds the randomness of adaptation steps (dropout masks).
    """

    name = "meta"

    def __init__(
        self,
        model: torch.nn.Module,
        criterion: Criterion,
        *,
        inner_lr: float = 0.01,
        inner_steps: int = 1,
        inner_optimizer: FunctionalOptimizer | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise InvalidArgumentError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(criterion):
            raise InvalidArgumentError(f"criterion must be a loss function such as F.mse_loss, got {criterion!r}")
        self.model, self.criterion = model, criterion
        self.inner_steps = positive_int("inner_steps", inner_steps)
        if inner_optimizer is None:
            inner_optimizer = functional.sgd(lr=nonnegative("inner_lr", inner_lr, positive=True))
        if not isinstance(inner_optimizer, FunctionalOptimizer):
            raise InvalidArgumentError(
                f"inner_optimizer must be a functional optimizer such as nestopt.optim.functional.sgd(lr=0.01), "
                f"got {inner_optimizer!r}"
            )
        self.inner_optimizer = inner_optimizer
        self.seed = int(seed)
        self._calls = 0
        self._buffers = buffers_of(model)

    # -- the losses ----------------------------------------------------------------------------------
    def parameters(self) -> Tree:
        """:math:`\\theta`: the model's trainable parameters (the live tensors)."""
        return parameters_of(self.model)

    def task_loss(self, params: Tree, hparams: Tree, batch: Any) -> Tensor:
        """The criterion of the model at ``params`` on ``batch = (x, y)`` (train mode, copied buffers)."""
        return self.criterion(self._outputs(params, batch), batch[1])

    def _outputs(self, params: Tree, batch: Any) -> Tensor:
        """The model's outputs at ``params`` on the inputs of ``batch = (x, y)`` (train mode, copied buffers)."""
        if self._buffers:  # bind() checks the keys; these are the model's own, so build the view directly
            params = {**params, **tree.clone(self._buffers)}
        return BoundModule(self.model, params, True)(batch[0])

    def adaptation_loss(self, params: Tree, hparams: Tree, batch: Any) -> Tensor:
        """The loss the adaptation minimizes (``hparams`` holds the meta-parameters :math:`\\theta`)."""
        return self.task_loss(params, hparams, batch)

    # -- adaptation ----------------------------------------------------------------------------------
    def _adapt(self, support: Any, theta: Tree, steps: int, create_graph: bool, seed: int) -> Tree:
        return unrolled_solution(
            self.adaptation_loss, theta, theta if create_graph else tree.detach(theta), [support] * steps,
            optimizer=self.inner_optimizer, steps=steps, create_graph=create_graph, seed=seed,
        )  # fmt: skip

    def adapt(self, support: Any, *, steps: int | None = None, seed: int = 0) -> Tree:
        """Weights adapted to ``support = (x, y)`` from the current meta-parameters (detached: for evaluation)."""
        steps = self.inner_steps if steps is None else positive_int("steps", steps)
        with torch.no_grad():
            theta = tree.detach(self.parameters())
        return self._adapt(support, theta, steps, False, seed)

    def _query_loss(self, task: Task, seed: int) -> Tensor:
        raise NotImplementedError

    def meta_loss(self, tasks: TaskBatch) -> Tensor:
        """The mean query loss after adaptation over ``tasks``; ``.backward()`` gives the meta-gradient.

        Every task's adaptation is kept until the backward pass (for MAML, its unrolled graph): for very
        many tasks per batch, call it on chunks and accumulate.
        """
        if not isinstance(tasks, TaskBatch):
            raise InvalidArgumentError(f"tasks must be a nestopt.meta.TaskBatch, got {type(tasks).__name__}")
        call, self._calls = self._calls, self._calls + 1
        losses = [self._query_loss(task, _rng.derive(self.seed, self.name, call, i)) for i, task in enumerate(tasks)]
        return torch.stack(losses).mean()

    def evaluate(self, tasks: TaskBatch, *, steps: int | None = None) -> dict[str, float]:
        """Mean query loss before and after adaptation (``steps``, default ``inner_steps``), without meta-gradient."""
        before, after = [], []
        for i, task in enumerate(tasks):
            adapted = self.adapt(task.support, steps=steps, seed=_rng.derive(self.seed, "evaluate", i))
            with torch.no_grad():
                before.append(float(self.task_loss(tree.detach(self.parameters()), {}, task.query)))
                after.append(float(self.task_loss(adapted, {}, task.query)))
        return {"before": sum(before) / len(before), "after": sum(after) / len(after)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(inner_steps={self.inner_steps}, optimizer={self.inner_optimizer.name})"


class MAML(MetaLearner):
    """Model-agnostic meta-learning (Finn et al., 2017), second order: differentiates through the adaptation.

    .. math::  \\phi_K = \\mathrm{Opt}^K(\\theta; \\nabla L_s), \\qquad
               \\nabla_\\theta L_q(\\phi_K) = \\Big(\\frac{\\partial \\phi_K}{\\partial \\theta}\\Big)^{\\!\\top} \\nabla L_q(\\phi_K)

    Args: as for :class:`MetaLearner`.

    Example:
        >>> import torch
        >>> from nestopt import meta
        >>> net = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        >>> maml = meta.MAML(net, torch.nn.functional.mse_loss, inner_lr=0.01, inner_steps=2)
        >>> opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        >>> for tasks in [meta.Sinusoid().sample(4, seed=s) for s in range(2)]:
        ...     opt.zero_grad()
        ...     maml.meta_loss(tasks).backward()
        ...     opt.step()
        >>> net[0].weight.grad.shape
        torch.Size([16, 1])
    """

    name = "maml"

    def _query_loss(self, task: Task, seed: int) -> Tensor:
        adapted = self._adapt(task.support, self.parameters(), self.inner_steps, True, seed)
        return self.task_loss(adapted, {}, task.query)


class FOMAML(MetaLearner):
    """First-order MAML: the query gradient at the adapted weights, applied to the meta-parameters.

    .. math::  \\nabla_\\theta \\approx \\nabla L_q(\\phi_K)

    The adaptation runs without a graph; the adapted weights enter the query loss as
    :math:`\\theta + \\mathrm{stopgrad}(\\phi_K - \\theta)`, whose gradient w.r.t. :math:`\\theta` is the identity.

    Example:
        >>> import torch
        >>> from nestopt import meta
        >>> net = torch.nn.Linear(1, 1)
        >>> loss = meta.FOMAML(net, torch.nn.functional.mse_loss, inner_steps=3).meta_loss(meta.Sinusoid().sample(2, seed=0))
        >>> loss.backward(); net.weight.grad.shape
        torch.Size([1, 1])
    """

    name = "fomaml"

    def _query_loss(self, task: Task, seed: int) -> Tensor:
        theta = self.parameters()
        adapted = self._adapt(task.support, tree.detach(theta), self.inner_steps, False, seed)
        straight = {k: theta[k] + (adapted[k] - theta[k].detach()) for k in theta}
        return self.task_loss(straight, {}, task.query)


class IMAML(MetaLearner):
    """Implicit MAML (Rajeswaran et al., 2019): proximal adaptation, meta-gradient by implicit differentiation.

    .. math::  \\phi^* = \\arg\\min_\\phi L_s(\\phi) + \\frac{\\lambda}{2}\\|\\phi - \\theta\\|^2, \\qquad
               \\nabla_\\theta L_q(\\phi^*) = \\Big(I + \\frac{1}{\\lambda}\\nabla^2 L_s(\\phi^*)\\Big)^{-1} \\nabla L_q(\\phi^*)

    The adaptation takes ``inner_steps`` steps of the inner optimizer on the proximal loss (no graph: memory
    does not grow with the steps); the linear system is solved by ``solver`` (default ``linalg.CG(steps=5)``,
    as in the paper), with Hessian-vector products of the proximal loss at the adapted weights.

    Args:
        lam: the proximal strength :math:`\\lambda > 0`.
        solver: the linear solver (a :mod:`nestopt.linalg` solver).
        other arguments: as for :class:`MetaLearner`.

    Example:
        >>> import torch
        >>> from nestopt import linalg, meta
        >>> net = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        >>> imaml = meta.IMAML(net, torch.nn.functional.mse_loss, lam=2.0, inner_lr=0.05, inner_steps=10,
        ...                    solver=linalg.CG(steps=5))
        >>> imaml.meta_loss(meta.Sinusoid().sample(4, seed=0)).backward()
        >>> net[2].weight.grad.shape
        torch.Size([1, 16])
    """

    name = "imaml"

    def __init__(
        self,
        model: torch.nn.Module,
        criterion: Criterion,
        *,
        lam: float = 1.0,
        solver: Solver | None = None,
        inner_lr: float = 0.01,
        inner_steps: int = 10,
        inner_optimizer: FunctionalOptimizer | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            model, criterion, inner_lr=inner_lr, inner_steps=inner_steps, inner_optimizer=inner_optimizer, seed=seed
        )
        self.lam = nonnegative("lam", lam, positive=True)
        self.solver = CG(steps=5) if solver is None else solver
        self._split_loss: Any = None  # built by the first meta-gradient (_implicit_loss)
        if not isinstance(self.solver, Solver):
            raise InvalidArgumentError(
                f"solver must be a nestopt.linalg solver such as linalg.CG(steps=5), got {solver!r}"
            )

    def adaptation_loss(self, params: Tree, hparams: Tree, batch: Any) -> Tensor:
        """:math:`L_s(\\phi) + \\tfrac{\\lambda}{2}\\|\\phi - \\theta\\|^2` with ``hparams`` = :math:`\\theta`."""
        return self.task_loss(params, hparams, batch) + self._proximal_terms(params, hparams, batch).total()

    def _proximal_terms(self, params: Tree, hparams: Tree, batch: Any) -> DecayTerms:
        """The proximal term as decays towards :math:`\\theta` with the constant coefficient :math:`\\lambda / 2`,
        whose Hessian :math:`\\lambda I` and mixed derivative :math:`-\\lambda I` a linearization writes out."""
        log_coefficient = next(iter(params.values())).new_tensor(math.log(0.5 * self.lam))
        total = lambda: 0.5 * self.lam * torch.stack([((params[k] - hparams[k]) ** 2).sum() for k in params]).sum()
        return DecayTerms([(log_coefficient, params[k], hparams[k]) for k in params], total=total)

    def _implicit_loss(self) -> Any:
        """The adaptation loss the implicit VJP linearizes: split into the model's outputs, the criterion and the
        proximal term (so that its curvature and mixed products take no pass through the term's graph), unless
        a subclass redefines the task or adaptation loss."""
        if self._split_loss is None:
            own = type(self).task_loss is IMAML.task_loss and type(self).adaptation_loss is IMAML.adaptation_loss
            self._split_loss = self.adaptation_loss if not own else GaussNewtonLoss(
                outputs=lambda p, h, b: self._outputs(p, b), head=lambda z, h, b: self.criterion(z, b[1]),
                rest=self._proximal_terms,
            )  # fmt: skip
        return self._split_loss

    def _query_loss(self, task: Task, seed: int) -> Tensor:
        theta = self.parameters()
        adapted = self._adapt(task.support, tree.detach(theta), self.inner_steps, False, seed)
        solution = implicit_solution(self._implicit_loss(), adapted, theta, task.support, solver=self.solver, seed=seed)
        return self.task_loss(solution, {}, task.query)

    def __repr__(self) -> str:
        return f"IMAML(lam={self.lam}, inner_steps={self.inner_steps}, solver={self.solver!r})"
