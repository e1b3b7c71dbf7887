"""``BilevelTrainer``: train a model and tune its hyperparameters by hypergradients, jointly.

Each outer step runs an inner phase on the training loss, then one hypergradient step on the validation loss:

.. math::  w \\leftarrow \\mathrm{InnerOpt}^{K}(w; \\nabla_w L_{train}(w, \\lambda)), \\qquad
           \\lambda \\leftarrow \\mathrm{OuterOpt}(\\lambda; \\tfrac{d}{d\\lambda} L_{val}(w^*(\\lambda)))

How the hypergradient is computed is a strategy (:class:`nestopt.hypergrad.Strategy`): ``Implicit(solver=...)``
evaluates it at the weights the inner optimizer reached; ``Unrolled(...)``/``Forward(...)`` take the inner
steps themselves and differentiate them; a user-written strategy plugs in the same way. The trainer calls
only the protocol.

Solution concepts
-----------------
``warm_start=True`` keeps the weights across outer steps (Lorraine et al., 2020): the inner problem is never
solved from scratch, and when it has many solutions the weights reached depend on the whole history of the
hyperparameters (a *warm-start* solution). ``warm_start=False`` re-initializes the weights (and buffers, and
the inner optimizer) before every outer step and retrains (cold start; Vicol et al., 2022): the weights are
then a function of the current hyperparameters only (a *cold-start* solution).
What each reaches when a level is overparameterized, and which to choose, is measured in
``docs/warm-or-cold.md``.

Modes, buffers and randomness
-----------------------------
Inner steps run the model in train mode and are the only computations that update its buffers (BatchNorm
running statistics), once per step; Hessian-vector products, mixed terms and recomputed steps never do. The
validation loss of the hypergradient runs in eval mode by default (``outer_mode``), as do :meth:`evaluate`
and every reported metric, under ``no_grad`` and without drawing random numbers. Each outer step's
randomness (dropout masks) is seeded from ``(seed, outer step)``, so a run's trajectory depends only on its
seed: not on ``eval_every``, logging or evaluation, and a run resumed from a checkpoint continues
bit for bit. See ``docs/user-guide.md``.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nestopt import _rng, tree
from nestopt._progress import progress
from nestopt._validate import nonnegative_int, positive_int
from nestopt.bilevel import checkpoint as ckpt
from nestopt.bilevel.callbacks import Callback, as_callbacks
from nestopt.bilevel.history import History
from nestopt.bilevel.parallel import Parallel, resolve
from nestopt.bilevel.retrain import retrain as _retrain
from nestopt.bilevel.streams import BatchStream, one_pass
from nestopt.bilevel.warnings_summary import WarningTally
from nestopt.errors import InvalidArgumentError, NonFiniteError, UnsupportedError
from nestopt.hparams.base import Family
from nestopt.hparams.objective import Mode, Objective
from nestopt.hypergrad import Implicit, Problem, Strategy
from nestopt.hypergrad.result import HypergradResult
from nestopt.tree import Tree

__all__ = ["BilevelTrainer"]

OptimizerFactory = Callable[[list[Tensor]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]

_KIND = "nestopt.BilevelTrainer"
_RECORDED_HPARAM_SIZE = 8  # families with at most this many hyperparameters are recorded every outer step
_FOR_CHANNEL = {
    "loss": "hypergrad.Implicit(...) or hypergrad.Unrolled(...)",
    "trajectory": "hypergrad.Unrolled(...) or hypergrad.Forward(...) with an optimizer that reads them",
    "sampling": "a best-response strategy (hypergrad.BestResponse)",
}


def _default_inner(params: list[Tensor]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def _default_outer(hparams: list[Tensor]) -> torch.optim.Optimizer:
    return torch.optim.Adam(hparams, lr=0.01)


def _check_factory(name: str, value: Any, example: str) -> Any:
    if value is None:
        return None
    if isinstance(value, torch.optim.Optimizer | torch.optim.lr_scheduler.LRScheduler):
        raise InvalidArgumentError(
            f"{name} must be a factory that builds it, not an instance (the trainer builds it over tensors it "
            f"creates, and rebuilds it on cold starts): pass e.g. {name}={example}"
        )
    if not callable(value):
        raise InvalidArgumentError(f"{name} must be a callable such as {example}, got {value!r}")
    return value


def _check_channels(families: Sequence[Family], strategy: Strategy) -> None:
    for f in families:
        missing = sorted(set(f.enters) - set(strategy.differentiates))
        if missing:
            raise UnsupportedError(
                f"{f!r} acts through {missing}, which the {strategy.name} strategy cannot differentiate (it "
                f"differentiates {sorted(strategy.differentiates)}): use {_FOR_CHANNEL.get(missing[0], 'another')}"
            )


class BilevelTrainer:
    """Joint training of a model's weights and its hyperparameters.

    Args:
        model: the network; its parameters (and buffers) are trained in place.
        criterion: the task loss ``criterion(outputs, targets)``: a function such as
            ``torch.nn.functional.cross_entropy`` or a module such as ``torch.nn.CrossEntropyLoss()``; the
            validation loss is this criterion on clean data.
        families: hyperparameter families (:mod:`nestopt.hparams`), or one family.
        hypergrad: a :class:`~nestopt.hypergrad.Strategy`: ``Implicit(...)``, ``Unrolled(...)``,
            ``Forward(...)``, or your own. Default: ``Implicit(curvature="gauss-newton")``, 20 iterations of CG
            with damping 0.1 on the Gauss-Newton matrix, which is positive semi-definite, so the solve never
            meets the negative curvature that the Hessians of networks away from a minimum have.
        inner_optimizer: ``params -> torch.optim.Optimizer`` for the weights (default SGD, lr 0.1, momentum
            0.9), e.g. ``functools.partial(torch.optim.Adam, lr=1e-3)``; with a strategy that takes the
            inner steps itself (``Unrolled``/``Forward``) leave it ``None``.
        outer_optimizer: ``hparams -> torch.optim.Optimizer`` for the hyperparameters (default Adam, lr 0.01).
        inner_scheduler: ``optimizer -> LR scheduler`` for the inner optimizer, stepped after every inner step
            (e.g. ``functools.partial(torch.optim.lr_scheduler.StepLR, step_size=100)``).
        outer_scheduler: ``optimizer -> LR scheduler`` for the outer optimizer, stepped after every outer step.
        inner_steps_per_outer: inner steps before each hypergradient (a strategy that fixes them, such as
            ``Unrolled``, sets them).
        warm_start: keep the weights across outer steps (``True``) or re-initialize them every outer step
            (see the module docstring: warm-start and cold-start solutions).
        init: the initialization for cold start: ``None`` (the model's weights when the trainer is built),
            a parameter tree, or ``outer_step -> tree``.
        seed: seeds every random choice of the run (dropout masks, each outer step's randomness).
        outer_mode: ``"eval"`` (default) or ``"train"``: the model's mode for the validation loss of the
            hypergradient. Reported metrics are always computed in eval mode.
        callbacks: :class:`~nestopt.bilevel.Callback` objects or functions ``(trainer, record)``, called at
            every :meth:`fit` (e.g. :class:`~nestopt.bilevel.TensorBoardLogger`).
        track_distances: record at every outer step how far the weights are from their initialization
            (``distance_from_init``; for cold start, from that step's re-initialization) and from the weights
            after the previous outer step (``distance_from_previous``). Costs two copies of the weights.
        parallel: how the run spans several processes: ``None`` for one, or
            :class:`nestopt.distributed.DataParallel` under ``torchrun`` (the model may be wrapped in
            ``DistributedDataParallel``; see ``docs/distributed.md``).

    Example:
        >>> import functools, torch, nestopt
        >>> from nestopt import data, hparams, hypergrad, linalg
        >>> d = data.synthetic_classification(n_train=64, n_val=32, n_test=32, seed=0)
        >>> net = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
        >>> trainer = nestopt.BilevelTrainer(
        ...     net, torch.nn.CrossEntropyLoss(), [hparams.WeightDecay(net, per="parameter")],
        ...     hypergrad=hypergrad.Implicit(solver=linalg.Neumann(steps=5, alpha=0.1)),
        ...     inner_optimizer=functools.partial(torch.optim.SGD, lr=0.1), inner_steps_per_outer=5)
        >>> history = trainer.fit(data.Loader(d.train, 32), data.Loader(d.val, 32), outer_steps=3, progress=False)
        >>> len(history), sorted(trainer.hparams)[:1]
        (3, ['weight_decay/0.bias'])
    """

    def __init__(
        self,
        model: torch.nn.Module,
        criterion: Callable[..., Tensor],
        families: Family | Sequence[Family] = (),
        *,
        hypergrad: Strategy | None = None,
        inner_optimizer: OptimizerFactory | None = None,
        outer_optimizer: OptimizerFactory | None = None,
        inner_scheduler: SchedulerFactory | None = None,
        outer_scheduler: SchedulerFactory | None = None,
        inner_steps_per_outer: int | None = None,
        warm_start: bool = True,
        init: Tree | Callable[[int], Tree] | None = None,
        seed: int = 0,
        outer_mode: Mode = "eval",
        callbacks: Iterable[Any] = (),
        track_distances: bool = False,
        parallel: Parallel | None = None,
    ) -> None:
        fams = [families] if isinstance(families, Family) else list(families)
        self.objective = Objective(model, criterion, fams, outer_mode=outer_mode)
        self.model = model
        if hypergrad is not None and not isinstance(hypergrad, Strategy):
            raise InvalidArgumentError(
                "hypergrad must be a hypergradient strategy (hypergrad.Implicit(...), Unrolled(...), Forward(...) "
                f"or a subclass of hypergrad.Strategy), got {hypergrad!r}"
            )
        # a strategy value may serve several trainers: each works on its own shallow copy of it, with fresh state
        self.strategy: Strategy = copy.copy(Implicit(curvature="gauss-newton") if hypergrad is None else hypergrad)
        self.strategy.reset()
        _check_channels(fams, self.strategy)
        self.inner_factory = (
            _check_factory("inner_optimizer", inner_optimizer, "functools.partial(torch.optim.SGD, lr=0.1)")
            or _default_inner
        )
        self.outer_factory = (
            _check_factory("outer_optimizer", outer_optimizer, "functools.partial(torch.optim.Adam, lr=0.01)")
            or _default_outer
        )
        example = "functools.partial(torch.optim.lr_scheduler.StepLR, step_size=100)"
        self.inner_scheduler_factory = _check_factory("inner_scheduler", inner_scheduler, example)
        self.outer_scheduler_factory = _check_factory("outer_scheduler", outer_scheduler, example)
        uses_inner = self.strategy.uses_inner_optimizer
        if not uses_inner and (inner_optimizer is not None or inner_scheduler is not None):
            raise InvalidArgumentError(
                f"the {self.strategy.name} strategy takes the inner steps itself with its own differentiable "
                "optimizer (its `optimizer` argument, which carries its own schedule): leave inner_optimizer and "
                "inner_scheduler None"
            )
        fixed = self.strategy.fixed_steps
        if fixed is not None and inner_steps_per_outer not in (None, fixed):
            raise InvalidArgumentError(
                f"inner_steps_per_outer={inner_steps_per_outer} but the {self.strategy.name} strategy takes "
                f"steps={fixed}: they must agree"
            )
        k = fixed if fixed is not None else (10 if inner_steps_per_outer is None else inner_steps_per_outer)
        self.inner_steps_per_outer = nonnegative_int("inner_steps_per_outer", k)
        self.warm_start = bool(warm_start)
        self.seed = nonnegative_int("seed", seed)
        self.params: Tree = self.objective.params()
        self.buffers: Tree = self.objective.buffers
        # copies of the initial weights only where cold start will need them (they cost one model's memory)
        self._init: Tree | Callable[[int], Tree] | None = init
        if init is None and not self.warm_start:
            self._init = tree.clone(self.params)
        if isinstance(self._init, dict):
            tree.check_like(self.params, self._init, "model parameters", "init")
        self._init_buffers = tree.clone(self.buffers) if not self.warm_start else None
        self.hparams: Tree = {k: v.requires_grad_(True) for k, v in self.objective.init_hparams().items()}
        for key, value in self.strategy.extra_hparams(tree.detach(self.hparams)).items():
            self.hparams[f"{self.strategy.name}/{key}"] = value.detach().clone().requires_grad_(True)
        sizes: dict[str, int] = {}
        for key, h in self.hparams.items():
            sizes[key.split("/")[0]] = sizes.get(key.split("/")[0], 0) + h.numel()
        self._recorded = [key for key in self.hparams if sizes[key.split("/")[0]] <= _RECORDED_HPARAM_SIZE]
        if not self.hparams:
            raise InvalidArgumentError(
                "there is nothing to tune: families is empty; pass at least one hyperparameter family, "
                "e.g. [nestopt.hparams.WeightDecay(model)]"
            )
        self.inner_opt: torch.optim.Optimizer | None = None
        self.inner_sched: Any = None
        self._build_inner_optimizer()
        self.outer_opt = self.outer_factory(list(self.hparams.values()))
        self.outer_sched = (
            None if self.outer_scheduler_factory is None else self.outer_scheduler_factory(self.outer_opt)
        )
        self.callbacks: list[Callback] = as_callbacks(callbacks)
        self._inner_loss = self.objective.inner_loss
        self._outer_loss = self.objective.outer_loss
        wrapped = self.objective.module is not model  # DistributedDataParallel: its forward syncs the gradients
        self._step_loss = self.objective.step_loss if self.buffers or wrapped else self._inner_loss
        self.outer_step = 0
        self.inner_step = 0
        self.history = History()
        self._streams: dict[str, BatchStream] = {}
        self._stream_states: dict[str, dict[str, int]] = {}
        self._written: set[Path] = set()
        self._phase_start = 0
        self.track_distances = bool(track_distances)
        self._distance_refs: dict[str, Tree] = {}
        if self.track_distances:
            self._distance_refs = {"init": tree.clone(self.params), "previous": tree.clone(self.params)}
        self.parallel = resolve(parallel)
        self.parallel.setup(self)

    # -- losses ------------------------------------------------------------------------------------
    @property
    def inner_loss(self) -> Callable[[Tree, Tree, Any], Tensor]:
        return self._inner_loss

    @property
    def outer_loss(self) -> Callable[[Tree, Tree, Any], Tensor]:
        return self._outer_loss

    # -- the loop ----------------------------------------------------------------------------------
    def _build_inner_optimizer(self) -> None:
        if not self.strategy.uses_inner_optimizer:
            return
        self.inner_opt = self.inner_factory(list(self.params.values()))
        if self.inner_scheduler_factory is not None:
            self.inner_sched = self.inner_scheduler_factory(self.inner_opt)

    def _reinitialize(self) -> None:
        if self._init is None:  # built with warm_start=True and switched to cold start since
            raise InvalidArgumentError(
                "cold start needs the initial weights: build the trainer with warm_start=False or pass init="
            )
        with _rng.fork(_rng.derive(self.seed, "init", self.outer_step)):
            init = self._init(self.outer_step) if callable(self._init) else self._init
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(init[k])
            for k, b in self.buffers.items():
                if self._init_buffers is not None:
                    b.copy_(self._init_buffers[k])
        if self.track_distances:
            self._distance_refs["init"] = tree.clone(self.params)
        self._build_inner_optimizer()
        self.strategy.reset()

    def _take_inner_step(self, batch: Any, hparams: Tree) -> float:
        """One step of the inner optimizer on the step loss (train mode, buffers updated); the loss before it."""
        assert self.inner_opt is not None
        self.inner_opt.zero_grad(set_to_none=True)  # before the forward pass: the last step's gradients are freed
        loss = self._step_loss(self.params, hparams, batch)
        if not bool(torch.isfinite(loss.detach())):
            raise NonFiniteError(
                f"the training loss became {float(loss.detach())} at outer step {self.outer_step}, inner step "
                f"{self.inner_step - self._phase_start} (step {self.inner_step} of the run)"
            )
        loss.backward()
        self.parallel.sync_step(self.params, self.buffers)
        self.inner_opt.step()
        if self.inner_sched is not None:
            self.inner_sched.step()
        self.inner_step += 1
        return float(loss.detach())

    def _problem(self, streams: dict[str, BatchStream]) -> Problem:
        return Problem(
            inner_loss=self._inner_loss,
            outer_loss=self._outer_loss,
            step_loss=self._step_loss,
            params=self.params,
            hparams=self.hparams,
            next_train=streams["train"].next,
            next_val=streams["val"].next,
            inner_step=self._take_inner_step,
            steps=self.inner_steps_per_outer,
            outer_step=self.outer_step,
            seed=_rng.derive(self.seed, "hypergrad", self.outer_step),
            families=tuple(self.objective.families),
            reduce=self.parallel.hypergrad_reduce,
        )

    def _one_outer_step(self, streams: dict[str, BatchStream]) -> tuple[HypergradResult, list[float]]:
        if not self.warm_start:
            self._reinitialize()
        problem = self._problem(streams)
        self._phase_start = self.inner_step
        with _rng.fork(_rng.derive(self.seed, "outer", self.outer_step)):
            losses = list(self.strategy.inner_phase(problem))
            if self.inner_opt is not None:  # the weights' gradients are not needed until the next inner phase
                self.inner_opt.zero_grad(set_to_none=True)
            try:
                res = self.strategy.hypergradient(problem)
            except NonFiniteError as err:
                raise NonFiniteError(f"at outer step {self.outer_step}: {err}") from err
        res = self.parallel.finish(res)
        if res.inner_losses:
            losses += res.inner_losses
            if not self.strategy.uses_inner_optimizer:
                self.inner_step += len(res.inner_losses)
        self.outer_opt.zero_grad(set_to_none=True)
        for k, h in self.hparams.items():
            if k not in res.grads:
                raise InvalidArgumentError(f"the {self.strategy.name} strategy returned no hypergradient for {k!r}")
            h.grad = res.grads[k].to(h.dtype)
        self.outer_opt.step()
        self.outer_opt.zero_grad(set_to_none=True)  # free the hypergradient until the next outer step
        if self.outer_sched is not None:
            self.outer_sched.step()
        if not tree.all_finite(tree.detach(self.hparams)):
            raise NonFiniteError(f"a hyperparameter became non-finite at outer step {self.outer_step}")
        return res, losses

    def evaluate(self, loader: Iterable[Any]) -> dict[str, float]:
        """Mean loss (and accuracy, for class targets) of the current weights over a whole loader.

        The model runs in eval mode under ``no_grad``; no buffer changes and no random number is drawn.
        """
        return self.objective.evaluate(self.params, self.hparams, loader, reduce=self.parallel.eval_reduce)

    def fit(
        self,
        train: Iterable[Any],
        val: Iterable[Any],
        *,
        outer_steps: int,
        test: Iterable[Any] | None = None,
        eval_every: int = 1,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 10,
        resume: bool = False,
        progress: bool | None = None,
        callback: Callable[[BilevelTrainer, dict[str, Any]], None] | None = None,
        callbacks: Iterable[Any] = (),
    ) -> History:
        """Run outer steps until ``outer_steps`` have been taken in all (a resumed trainer continues).

        Args:
            train: the training batches (inner loss), e.g. a :class:`nestopt.data.Loader`; reused epoch after epoch.
            val: the validation batches (outer loss).
            outer_steps: the total number of outer steps.
            test: batches for reporting only (never used for training).
            eval_every: evaluate on the whole ``val`` (and ``test``) loader every this many outer steps (it
                never changes the training trajectory).
            checkpoint: a file to save the trainer's whole state to, atomically, every ``checkpoint_every``
                outer steps and at the end. A run that fails keeps the last good checkpoint.
            checkpoint_every: see ``checkpoint``.
            resume: if ``checkpoint`` exists, continue from it (otherwise start afresh). Without it, a file that
                this trainer did not write is an error rather than silently overwritten.
            progress: show a progress bar (``None``: when stderr is a terminal).
            callback: a function ``(trainer, record)`` called after every outer step.
            callbacks: more callbacks for this call (see :mod:`nestopt.bilevel.callbacks`).

        Returns:
            The :class:`History` of all outer steps so far.
        """
        nonnegative_int("outer_steps", outer_steps)
        positive_int("eval_every", eval_every)
        positive_int("checkpoint_every", checkpoint_every)
        if checkpoint is not None and Path(checkpoint).exists():
            if resume:
                self.load_checkpoint(checkpoint)
            elif Path(checkpoint).resolve() not in self._written:
                raise InvalidArgumentError(
                    f"checkpoint {str(checkpoint)!r} already exists: pass resume=True to continue from it, or "
                    "remove it (or choose another path) to start afresh"
                )
        streams = {"train": BatchStream(train, "train"), "val": BatchStream(val, "val")}
        for name, stream in streams.items():
            if name in self._stream_states:
                stream.load_state_dict(self._stream_states[name])
        self._streams = streams
        cbs = [*self.callbacks, *as_callbacks([*callbacks, *([callback] if callback is not None else [])])]
        tally = WarningTally()
        start = time.perf_counter() - (self.history.records[-1]["seconds"] if self.history.records else 0.0)
        bar = progress_bar(range(self.outer_step, outer_steps), progress)
        try:
            self.parallel.start(self)
            for cb in cbs:
                getattr(cb, "on_fit_start", lambda t: None)(self)
            for _ in bar:
                with tally.record():
                    res, losses = self._one_outer_step(streams)
                self.outer_step += 1
                record = self._record(res, losses, start)
                del res  # the hypergradient is spent: free it before the next outer step's peak
                if self.outer_step % eval_every == 0 or self.outer_step == outer_steps:
                    record.update({f"val_{k}": v for k, v in self.evaluate(one_pass(val)).items()})
                    if test is not None:
                        record.update({f"test_{k}": v for k, v in self.evaluate(one_pass(test)).items()})
                self.history.append(record)
                bar.set_postfix(f"val loss {record['outer_loss']:.4g}")
                for cb in cbs:
                    getattr(cb, "on_outer_step", lambda t, r: None)(self, record)
                due = self.outer_step % checkpoint_every == 0 or self.outer_step == outer_steps
                if checkpoint is not None and due:
                    self.save_checkpoint(checkpoint)
        except BaseException as err:
            self.parallel.failed(err)  # raises an error naming the rank that failed first, if another did
            raise
        finally:
            tally.emit()
            for cb in cbs:
                getattr(cb, "on_fit_end", lambda t: None)(self)
        return self.history

    def _record(self, res: HypergradResult, losses: list[float], start: float) -> dict[str, Any]:
        info = res.info
        record: dict[str, Any] = {
            "outer_step": self.outer_step,
            "inner_steps": self.inner_step,
            "train_loss": sum(losses) / len(losses) if losses else math.nan,
            "outer_loss": info.outer_loss,
            "hypergrad_norm": float(tree.norm(res.grads)),
            "inner_grad_norm": info.inner_grad_norm,
            "status": info.status.value,
            "residual": info.residual,
            "hvp_calls": info.hvp_calls,
            "seconds": time.perf_counter() - start,
        }
        if self.track_distances:
            w = tree.detach(self.params)
            record["distance_from_init"] = float(tree.norm(tree.sub(w, self._distance_refs["init"])))
            record["distance_from_previous"] = float(tree.norm(tree.sub(w, self._distance_refs["previous"])))
            self._distance_refs["previous"] = tree.clone(w)
        for k in self._recorded:  # the hyperparameters of small families: their schedule over the run
            value = self.hparams[k].detach().cpu()
            record[f"hparams/{k}"] = float(value) if value.numel() == 1 else value.reshape(-1).tolist()
        return record

    def retrain(
        self,
        train: Iterable[Any],
        *,
        steps: int | None = None,
        val: Iterable[Any] | None = None,
        test: Iterable[Any] | None = None,
        init: Tree | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Retrain a fresh copy of the model from scratch on the current hyperparameters, held fixed.

        The copy is re-initialized (every submodule's ``reset_parameters`` from a seed of this run, or
        ``init``), trained for ``steps`` inner steps (default: as many as this run has taken) with the run's
        inner optimizer and scheduler (or, for a strategy that takes its steps itself, its differentiable
        optimizer), and evaluated. The result is appended to ``history.retrains`` and returned; the run itself
        (weights, buffers, hyperparameters, random streams) is untouched. Comparing it with the run's own
        weights tells what a warm-start solution owes to its trajectory rather than to its hyperparameters
        (Vicol et al., 2022; see :mod:`nestopt.bilevel.retrain`).

        Returns:
            ``{"steps", "seed", "outer_step", "train_loss", "distance_from_init", "val_loss", "val_accuracy",
            "test_loss", "test_accuracy"}`` (the evaluations that were asked for).
        """
        result = _retrain(self, train, steps=steps, val=val, test=test, init=init, seed=seed)
        self.history.retrains.append(result)
        return result

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run exactly: weights, buffers, hyperparameters, optimizer and
        scheduler states, the strategy's state, RNG states, data positions, counters and history (tensors and
        plain values only)."""
        families = {f.name: f.state_dict() for f in self.objective.families}
        streams = {k: s.state_dict() for k, s in self._streams.items()} or dict(self._stream_states)
        return {
            "kind": _KIND,
            "params": tree.clone(self.params),
            "buffers": tree.clone(self.buffers),
            "hparams": tree.clone(self.hparams),
            "inner_opt": None if self.inner_opt is None else self.inner_opt.state_dict(),
            "inner_sched": None if self.inner_sched is None else self.inner_sched.state_dict(),
            "outer_opt": self.outer_opt.state_dict(),
            "outer_sched": None if self.outer_sched is None else self.outer_sched.state_dict(),
            "strategy": self.strategy.state_dict(),
            "rng": {
                "cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            "streams": streams,
            "families": families,
            "seed": self.seed,
            "outer_step": self.outer_step,
            "inner_step": self.inner_step,
            "history": self.history.records,
            "retrains": self.history.retrains,
            "distance_refs": {k: tree.clone(v) for k, v in self._distance_refs.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; the next :meth:`fit` continues from there."""
        tree.check_like(self.params, state["params"], "model parameters", "checkpoint params")
        tree.check_like(self.buffers, state["buffers"], "model buffers", "checkpoint buffers")
        tree.check_like(self.hparams, state["hparams"], "hyperparameters", "checkpoint hparams")
        with torch.no_grad():
            for group, saved in ((self.params, "params"), (self.buffers, "buffers"), (self.hparams, "hparams")):
                for k, t in group.items():
                    t.copy_(state[saved][k])
        if self.inner_opt is not None and state["inner_opt"] is not None:
            self.inner_opt.load_state_dict(state["inner_opt"])
        if self.inner_sched is not None and state["inner_sched"] is not None:
            self.inner_sched.load_state_dict(state["inner_sched"])
        self.outer_opt.load_state_dict(state["outer_opt"])
        if self.outer_sched is not None and state["outer_sched"] is not None:
            self.outer_sched.load_state_dict(state["outer_sched"])
        self.strategy.load_state_dict(state["strategy"])
        torch.set_rng_state(state["rng"]["cpu"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self._stream_states = dict(state["streams"])
        self._streams = {}
        for f in self.objective.families:
            if f.name in state["families"]:
                f.load_state_dict(state["families"][f.name])
        self.seed = int(state["seed"])
        self.outer_step, self.inner_step = int(state["outer_step"]), int(state["inner_step"])
        self.history = History(list(state["history"]), list(state["retrains"]))
        self._distance_refs = {k: tree.clone(v) for k, v in state["distance_refs"].items()}

    def save_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`state_dict` to ``path`` atomically (a failed write never corrupts the last checkpoint).

        In a data-parallel run only rank 0 writes (every rank holds the same state), and every rank waits for it.
        """
        if self.parallel.is_writer:
            ckpt.save(path, self.state_dict())
        self.parallel.barrier()
        self._written.add(Path(path).resolve())

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint`.

        The file is read with ``torch.load(weights_only=True)``: a file carrying anything but tensors and plain
        values is refused with :class:`~nestopt.errors.CheckpointError`, and nothing in it is run.
        """
        self.load_state_dict(ckpt.load(path, kind=_KIND))


def progress_bar(steps: range, enabled: bool | None) -> progress[int]:
    return progress(steps, desc="outer steps", enabled=enabled)
