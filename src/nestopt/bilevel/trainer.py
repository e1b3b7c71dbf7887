"""``BilevelTrainer``: train a model and tune its hyperparameters by hypergradients, jointly.

Each outer step runs ``inner_steps_per_outer`` optimizer steps on the training loss, then one
hypergradient step on the validation loss:

.. math::  w \\leftarrow \\mathrm{InnerOpt}^{K}(w; \\nabla_w L_{train}(w, \\lambda)), \\qquad
           \\lambda \\leftarrow \\mathrm{OuterOpt}(\\lambda; \\tfrac{d}{d\\lambda} L_{val}(w^*(\\lambda)))

``warm_start=True`` keeps the weights across outer steps (Lorraine et al., 2020); ``warm_start=False``
re-initializes them before every outer step and retrains from scratch (cold start; Vicol et al., 2022).
The hypergradient is a strategy value: ``Implicit(solver=...)`` evaluates it at the weights the inner
optimizer reached, ``Unrolled(...)``/``Forward(...)`` differentiate the inner steps themselves (which then
use the strategy's differentiable optimizer).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nestopt import tree
from nestopt._progress import progress
from nestopt.bilevel.history import History
from nestopt.bilevel.streams import BatchStream
from nestopt.errors import InvalidArgumentError, NonFiniteError, UnsupportedError
from nestopt.hparams.base import Family, Objective
from nestopt.hypergrad import Forward, Implicit, Unrolled
from nestopt.hypergrad.result import HypergradResult
from nestopt.tree import Tree

__all__ = ["BilevelTrainer"]

OptimizerFactory = Callable[[list[Tensor]], torch.optim.Optimizer]


def _default_inner(params: list[Tensor]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def _default_outer(hparams: list[Tensor]) -> torch.optim.Optimizer:
    return torch.optim.Adam(hparams, lr=0.01)


class BilevelTrainer:
    """Joint training of a model's weights and its hyperparameters.

    Args:
        model: the network; its parameters are trained in place.
        criterion: the task loss ``criterion(outputs, targets, reduction="mean"|"none")``, e.g.
            ``torch.nn.functional.cross_entropy``; the validation loss is this criterion on clean data.
        families: hyperparameter families (:mod:`nestopt.hparams`), or one family.
        hypergrad: ``Implicit(solver=...)`` (default ``Implicit(linalg.CG(steps=20))``), ``Unrolled(...)`` or
            ``Forward(...)``.
        inner_optimizer: ``params -> torch.optim.Optimizer`` for the weights (default SGD, lr 0.1, momentum
            0.9); with ``Unrolled``/``Forward`` leave it ``None``: the strategy's optimizer takes the steps.
        outer_optimizer: ``hparams -> torch.optim.Optimizer`` for the hyperparameters (default Adam, lr 0.01).
        inner_steps_per_outer: inner steps before each hypergradient (with ``Unrolled``/``Forward``, their
            ``steps``).
        warm_start: keep the weights across outer steps (``True``) or re-initialize them every outer step.
        init: the initialization for cold start: ``None`` (the model's weights when the trainer is built),
            a parameter tree, or ``outer_step -> tree``.
        seed: seeds torch's global generator at the start of :meth:`fit` (dropout, init callables).

    Example:
        >>> import functools, torch, nestopt
        >>> from nestopt import data, hparams, hypergrad, linalg
        >>> d = data.synthetic_classification(n_train=64, n_val=32, n_test=32, seed=0)
        >>> net = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
        >>> trainer = nestopt.BilevelTrainer(
        ...     net, torch.nn.functional.cross_entropy, [hparams.WeightDecay(net, per="parameter")],
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
        hypergrad: Implicit | Unrolled | Forward | None = None,
        inner_optimizer: OptimizerFactory | None = None,
        outer_optimizer: OptimizerFactory | None = None,
        inner_steps_per_outer: int | None = None,
        warm_start: bool = True,
        init: Tree | Callable[[int], Tree] | None = None,
        seed: int = 0,
    ) -> None:
        self.objective = Objective(model, criterion, [families] if isinstance(families, Family) else families)
        self.model = model
        self.strategy = Implicit() if hypergrad is None else hypergrad
        if not isinstance(self.strategy, Implicit | Unrolled | Forward):
            raise InvalidArgumentError(
                f"hypergrad must be hypergrad.Implicit(...), Unrolled(...) or Forward(...), got {hypergrad!r}"
            )
        self.unrolls = not isinstance(self.strategy, Implicit)
        only = self.objective.unroll_only
        if only and not self.unrolls:
            raise UnsupportedError(
                f"{only} act only through the optimization trajectory, which the implicit function theorem "
                "cannot differentiate: use hypergrad=Unrolled(...) or Forward(...) with an optimizer that reads them"
            )
        if self.unrolls:
            assert isinstance(self.strategy, Unrolled | Forward)
            if inner_optimizer is not None:
                raise InvalidArgumentError(
                    "with an Unrolled or Forward hypergradient the inner steps are the strategy's differentiable "
                    "optimizer (its `optimizer` argument): leave inner_optimizer=None"
                )
            if inner_steps_per_outer not in (None, self.strategy.steps):
                raise InvalidArgumentError(
                    f"inner_steps_per_outer={inner_steps_per_outer} but the {type(self.strategy).__name__} "
                    f"strategy unrolls steps={self.strategy.steps}: they must agree"
                )
            inner_steps_per_outer = self.strategy.steps
        k = 10 if inner_steps_per_outer is None else inner_steps_per_outer
        if not isinstance(k, int) or isinstance(k, bool) or k < 0 or (k == 0 and self.unrolls):
            raise InvalidArgumentError(f"inner_steps_per_outer must be a non-negative integer, got {k!r}")
        self.inner_steps_per_outer = k
        self.inner_factory = inner_optimizer or _default_inner
        self.outer_factory = outer_optimizer or _default_outer
        self.warm_start = bool(warm_start)
        self.seed = seed
        self.params: Tree = self.objective.params()
        # a copy of the initial weights only where cold start will need it (it costs one model's memory)
        self._init: Tree | Callable[[int], Tree] | None = init
        if init is None and not self.warm_start:
            self._init = tree.clone(self.params)
        if isinstance(self._init, dict):
            tree.check_like(self.params, self._init, "model parameters", "init")
        self.hparams: Tree = {k: v.requires_grad_(True) for k, v in self.objective.init_hparams().items()}
        self.inner_opt = None if self.unrolls else self.inner_factory(list(self.params.values()))
        self.outer_opt = self.outer_factory(list(self.hparams.values()))
        self.fn_opt_state: dict[str, Any] | None = None
        self.outer_step = 0
        self.inner_step = 0
        self.history = History()
        self._streams: dict[str, BatchStream] = {}
        self._stream_states: dict[str, dict[str, int]] = {}
        self._rng_state: Tensor | None = None

    # -- losses ------------------------------------------------------------------------------------
    @property
    def inner_loss(self) -> Callable[[Tree, Tree, Any], Tensor]:
        return self.objective.inner_loss

    @property
    def outer_loss(self) -> Callable[[Tree, Tree, Any], Tensor]:
        return self.objective.outer_loss

    # -- the loop ----------------------------------------------------------------------------------
    def _reinitialize(self) -> None:
        if self._init is None:  # built with warm_start=True and switched to cold start since
            raise InvalidArgumentError(
                "cold start needs the initial weights: build the trainer with warm_start=False or pass init="
            )
        init = self._init(self.outer_step) if callable(self._init) else self._init
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(init[k])
        if self.inner_opt is not None:
            self.inner_opt = self.inner_factory(list(self.params.values()))
        self.fn_opt_state = None

    def _inner_phase(self, train: BatchStream) -> list[float]:
        assert self.inner_opt is not None
        h = tree.detach(self.hparams)
        losses = []
        for j in range(self.inner_steps_per_outer):
            batch = train.next()
            loss = self.inner_loss(self.params, h, batch)
            if not bool(torch.isfinite(loss.detach())):
                raise NonFiniteError(
                    f"the training loss became {float(loss.detach())} at outer step {self.outer_step}, inner step {j}"
                )
            self.inner_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.inner_opt.step()
            self.inner_step += 1
            losses.append(float(loss.detach()))
        # the weights' gradients are not needed until the next inner phase: free them for the hypergradient
        self.inner_opt.zero_grad(set_to_none=True)
        return losses

    def _hypergradient(self, train: BatchStream, val: BatchStream) -> tuple[HypergradResult, list[float]]:
        val_batch = val.next()
        if isinstance(self.strategy, Implicit):
            losses = self._inner_phase(train)
            res = self.strategy(
                self.inner_loss, self.outer_loss, tree.detach(self.params), self.hparams, train.next(), val_batch
            )
            return res, losses
        batches = [train.next() for _ in range(self.inner_steps_per_outer)]
        try:
            res = self.strategy(
                self.inner_loss, self.outer_loss, tree.detach(self.params), self.hparams, batches, val_batch,
                opt_state=self.fn_opt_state,
            )  # fmt: skip
        except NonFiniteError as err:
            raise NonFiniteError(f"at outer step {self.outer_step}: {err}") from err
        assert res.params is not None
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(res.params[k])
        self.fn_opt_state = res.opt_state
        self.inner_step += self.inner_steps_per_outer
        return res, []

    @torch.no_grad()
    def evaluate(self, loader: Iterable[Any]) -> dict[str, float]:
        """Mean loss (and accuracy, for class targets) of the current weights over a whole loader."""
        total, correct, count, classes = 0.0, 0, 0, True
        for batch in loader:
            x, y = batch[0], batch[1]
            out = self.objective.predict(self.params, x)
            total += float(self.objective.criterion(out, y, reduction="sum"))
            classes = classes and out.dim() == 2 and not y.is_floating_point()
            if classes:
                correct += int((out.argmax(-1) == y).sum())
            count += int(y.shape[0])
        if count == 0:
            raise InvalidArgumentError("cannot evaluate on an empty loader")
        result = {"loss": total / count}
        if classes:
            result["accuracy"] = correct / count
        return result

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
        progress: bool | None = None,
        callback: Callable[[BilevelTrainer, dict[str, Any]], None] | None = None,
    ) -> History:
        """Run outer steps until ``outer_steps`` have been taken in all (a resumed trainer continues).

        Args:
            train: the training batches (inner loss), e.g. a :class:`nestopt.data.Loader`; reused epoch after epoch.
            val: the validation batches (outer loss).
            outer_steps: the total number of outer steps.
            test: batches for reporting only (never used for training).
            eval_every: evaluate on the whole ``val`` (and ``test``) loader every this many outer steps.
            checkpoint: a file to save the trainer's whole state to, atomically, every ``checkpoint_every``
                outer steps and at the end. A run that fails keeps the last good checkpoint.
            progress: show a progress bar (``None``: when stderr is a terminal).
            callback: called after every outer step with the trainer and that step's record.

        Returns:
            The :class:`History` of all outer steps so far.
        """
        if not isinstance(outer_steps, int) or outer_steps < 0:
            raise InvalidArgumentError(f"outer_steps must be a non-negative integer, got {outer_steps!r}")
        if eval_every < 1 or checkpoint_every < 1:
            raise InvalidArgumentError("eval_every and checkpoint_every must be positive integers")
        streams = {"train": BatchStream(train, "train"), "val": BatchStream(val, "val")}
        for name, stream in streams.items():
            if name in self._stream_states:
                stream.load_state_dict(self._stream_states[name])
        self._streams = streams
        if self._rng_state is not None:
            torch.set_rng_state(self._rng_state)
        elif self.outer_step == 0:
            torch.manual_seed(self.seed)
        start = time.perf_counter() - (self.history.records[-1]["seconds"] if self.history.records else 0.0)
        bar = _progress_bar(range(self.outer_step, outer_steps), progress)
        for _ in bar:
            if not self.warm_start:
                self._reinitialize()
            res, losses = self._hypergradient(streams["train"], streams["val"])
            self.outer_opt.zero_grad(set_to_none=True)
            for k, h in self.hparams.items():
                h.grad = res.grads[k].to(h.dtype)
            self.outer_opt.step()
            self.outer_opt.zero_grad(set_to_none=True)  # free the hypergradient until the next outer step
            if not tree.all_finite(tree.detach(self.hparams)):
                raise NonFiniteError(f"a hyperparameter became non-finite at outer step {self.outer_step}")
            self.outer_step += 1
            record = self._record(res, losses, start)
            if self.outer_step % eval_every == 0 or self.outer_step == outer_steps:
                record.update({f"val_{k}": v for k, v in self.evaluate(_whole(val)).items()})
                if test is not None:
                    record.update({f"test_{k}": v for k, v in self.evaluate(_whole(test)).items()})
            self.history.append(record)
            bar.set_postfix(f"val loss {record['outer_loss']:.4g}")
            if callback is not None:
                callback(self, record)
            if checkpoint is not None and (self.outer_step % checkpoint_every == 0 or self.outer_step == outer_steps):
                self.save_checkpoint(checkpoint)
        return self.history

    def _record(self, res: HypergradResult, losses: list[float], start: float) -> dict[str, Any]:
        info = res.info
        return {
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

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run exactly: weights, hyperparameters, optimizer states, RNG
        states, data positions, counters and history."""
        families = {f.name: f.state_dict() for f in self.objective.families if hasattr(f, "state_dict")}
        return {
            "params": tree.clone(self.params),
            "hparams": tree.clone(self.hparams),
            "inner_opt": None if self.inner_opt is None else self.inner_opt.state_dict(),
            "outer_opt": self.outer_opt.state_dict(),
            "fn_opt_state": self.fn_opt_state,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "streams": {k: s.state_dict() for k, s in self._streams.items()},
            "families": families,
            "outer_step": self.outer_step,
            "inner_step": self.inner_step,
            "history": self.history.records,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; the next :meth:`fit` continues from there."""
        tree.check_like(self.params, state["params"], "model parameters", "checkpoint params")
        tree.check_like(self.hparams, state["hparams"], "hyperparameters", "checkpoint hparams")
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(state["params"][k])
            for k, h in self.hparams.items():
                h.copy_(state["hparams"][k])
        if self.inner_opt is not None and state["inner_opt"] is not None:
            self.inner_opt.load_state_dict(state["inner_opt"])
        self.outer_opt.load_state_dict(state["outer_opt"])
        self.fn_opt_state = state["fn_opt_state"]
        self._rng_state = state["rng"]
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self._stream_states = state["streams"]
        for f in self.objective.families:
            if f.name in state["families"] and hasattr(f, "load_state_dict"):
                f.load_state_dict(state["families"][f.name])
        self.outer_step, self.inner_step = state["outer_step"], state["inner_step"]
        self.history = History(list(state["history"]))

    def save_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`state_dict` to ``path`` atomically (a failed write never corrupts the last checkpoint)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint`."""
        self.load_state_dict(torch.load(path, weights_only=False))


def _whole(loader: Iterable[Any]) -> Iterable[Any]:
    """One pass over a loader for evaluation, without disturbing a :class:`nestopt.data.Loader`'s epochs."""
    epoch_batches = getattr(loader, "epoch_batches", None)
    return epoch_batches(0) if callable(epoch_batches) else loader


def _progress_bar(steps: range, enabled: bool | None) -> progress[int]:
    return progress(steps, desc="outer steps", enabled=enabled)
