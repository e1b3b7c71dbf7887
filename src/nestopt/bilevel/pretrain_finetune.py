"""``PretrainFinetuneTrainer``: pre-train a model while tuning pre-training hyperparameters for fine-tuning.

The algorithm of "Meta-Learning to Improve Pre-Training" (Raghu et al., 2021), on your modules and losses.
Every outer step:

1. ``pretrain_steps`` steps of the pre-training optimizer on the pre-training loss at the current
   hyperparameters :math:`\\lambda` (task weights, an augmentation network, ...), each followed by
   ``head_steps`` steps of the head's optimizer on the fine-tuning loss (encoder fixed), so that the head
   follows the encoder;
2. the two-stage hypergradient (:class:`nestopt.hypergrad.TwoStage`): ``K`` fine-tuning steps of the head
   (and optionally the model) are unrolled from the current weights, the validation loss of the result is
   pulled back through them and through pre-training by the implicit function theorem; the head continues
   from the fine-tuned one;
3. one step of the outer optimizer (Adam in the paper) on :math:`\\lambda`.

The paper's defaults are one unrolled fine-tuning step and a one-term Neumann series with the pre-training
learning rate as its step (``linalg.Neumann(steps=1, alpha=lr, on_growth="continue")``); pass another
:class:`~nestopt.hypergrad.TwoStage` as ``hypergrad`` for any other solver or fine-tuning optimizer.

Losses are written against the modules, bound to the tensors being differentiated (:func:`nestopt.meta.bind`),
so they read like torch code::

    def pretrain_loss(model, weights, batch):           # weights: the hyperparameter module, bound
        x, y = batch
        per_task = F.binary_cross_entropy_with_logits(model(x), y, reduction="none").mean(0)
        return (weights() * per_task).sum()

    def finetune_loss(model, head, batch):
        x, y = batch
        return F.cross_entropy(head(model.encoder(x)), y)

Modes: pre-training runs the model in train mode; fine-tuning runs the head in train mode and the model in
eval mode (train mode when fine-tuning updates it too, ``finetune="all"``); the validation loss runs both in
eval mode. Only pre-training steps update the model's buffers, and only head steps the head's.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor

from nestopt import _rng, tree
from nestopt._progress import progress
from nestopt._validate import nonnegative_int, positive_int
from nestopt.bilevel.history import History
from nestopt.bilevel.streams import BatchStream
from nestopt.errors import InvalidArgumentError, NonFiniteError
from nestopt.hypergrad import TwoStage, TwoStageProblem
from nestopt.hypergrad.result import HypergradResult
from nestopt.linalg import Neumann
from nestopt.meta.module import BoundModule, bind, parameters_of
from nestopt.optim import functional
from nestopt.tree import Tree

__all__ = ["PretrainFinetuneTrainer"]

OptimizerFactory = Callable[[list[Tensor]], torch.optim.Optimizer]
PretrainLoss = Callable[[BoundModule, Any, Any], Tensor]
FinetuneLoss = Callable[[BoundModule, BoundModule, Any], Tensor]

_MODEL, _HEAD, _HP = "model/", "head/", "hparams/"


def _prefixed(prefix: str, t: Tree) -> Tree:
    return {prefix + k: v for k, v in t.items()}


def _strip(prefix: str, t: Tree) -> Tree:
    return {k[len(prefix) :]: v for k, v in t.items() if k.startswith(prefix)}


def _factory(name: str, value: Any, default: OptimizerFactory) -> OptimizerFactory:
    if value is None:
        return default
    if isinstance(value, torch.optim.Optimizer) or not callable(value):
        raise InvalidArgumentError(
            f"{name} must be a factory params -> torch.optim.Optimizer such as "
            f"functools.partial(torch.optim.Adam, lr=1e-3), got {value!r}"
        )
    return value


class PretrainFinetuneTrainer:
    """Pre-training with hyperparameters meta-learned for the validation loss after fine-tuning.

    Args:
        model: the pre-trained network (an encoder and its pre-training heads); trained in place.
        head: the fine-tuning head (a new module on the model's features); trained in place.
        pretrain_loss: ``pretrain_loss(model, hparams, batch) -> scalar``, where ``model`` is the model bound to
            the weights being differentiated and ``hparams`` the hyperparameter module, bound likewise (or the
            hyperparameter tree, when ``hparams`` is a dict).
        finetune_loss: ``finetune_loss(model, head, batch) -> scalar``.
        hparams: the hyperparameters: a module whose parameters they are (a task-weight module, an
            augmentation network), or a dict of tensors.
        val_loss: the validation loss ``(model, head, batch) -> scalar`` (default ``finetune_loss``).
        hypergrad: a :class:`~nestopt.hypergrad.TwoStage` strategy (default: the paper's, see the module
            docstring, with plain SGD at ``finetune_lr`` as the unrolled fine-tuning optimizer).
        pretrain_optimizer: ``params -> torch.optim.Optimizer`` (default Adam, lr 1e-3).
        head_optimizer: ``params -> torch.optim.Optimizer`` for the head steps (default Adam, lr 1e-3).
        outer_optimizer: ``params -> torch.optim.Optimizer`` for the hyperparameters (default Adam, lr 1e-2).
        pretrain_steps: pre-training steps per outer step (the paper: 10).
        head_steps: head steps after each pre-training step (0: none).
        finetune_lr: the learning rate of the default unrolled fine-tuning optimizer.
        seed: seeds every random choice of the run.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> from nestopt import bilevel
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> head = torch.nn.Linear(8, 2)
        >>> def pretrain_loss(net, h, batch):   # three regression tasks with learned weights
        ...     x, y = batch
        ...     return (h["logits"].softmax(0) * ((net(x) - y) ** 2).mean(0)).sum() * 3
        >>> def finetune_loss(net, head, batch):
        ...     x, y = batch
        ...     return F.cross_entropy(head(net[1](net[0](x))), y)
        >>> trainer = bilevel.PretrainFinetuneTrainer(model, head, pretrain_loss, finetune_loss,
        ...                                           {"logits": torch.zeros(3)}, pretrain_steps=2)
        >>> x = torch.randn(16, 4)
        >>> pt, ft = [(x, torch.randn(16, 3))], [(x, (x[:, 0] > 0).long())]
        >>> history = trainer.fit(pt, ft, ft, outer_steps=3, progress=False)
        >>> len(history), len(history[-1]["hparams/logits"]), history[-1]["stage1"]["iterations"]
        (3, 3, 1)
    """

    def __init__(
        self,
        model: torch.nn.Module,
        head: torch.nn.Module,
        pretrain_loss: PretrainLoss,
        finetune_loss: FinetuneLoss,
        hparams: torch.nn.Module | Tree,
        *,
        val_loss: FinetuneLoss | None = None,
        hypergrad: TwoStage | None = None,
        pretrain_optimizer: OptimizerFactory | None = None,
        head_optimizer: OptimizerFactory | None = None,
        outer_optimizer: OptimizerFactory | None = None,
        pretrain_steps: int = 10,
        head_steps: int = 1,
        finetune_lr: float = 1e-3,
        seed: int = 0,
    ) -> None:
        for name, m in (("model", model), ("head", head)):
            if not isinstance(m, torch.nn.Module):
                raise InvalidArgumentError(f"{name} must be a torch.nn.Module, got {type(m).__name__}")
        for name, fn in (("pretrain_loss", pretrain_loss), ("finetune_loss", finetune_loss), ("val_loss", val_loss)):
            if fn is not None and not callable(fn):
                raise InvalidArgumentError(f"{name} must be a function, got {fn!r}")
        self.model, self.head = model, head
        self.hparams_module = hparams if isinstance(hparams, torch.nn.Module) else None
        if self.hparams_module is not None:
            h = parameters_of(self.hparams_module)
        elif isinstance(hparams, dict) and hparams and all(isinstance(v, Tensor) for v in hparams.values()):
            h = {k: v.detach().clone() for k, v in hparams.items()}
        else:
            raise InvalidArgumentError(
                f"hparams must be a torch.nn.Module or a non-empty dict of tensors, got {type(hparams).__name__}"
            )
        if not h:
            raise InvalidArgumentError("hparams has no trainable tensors: there is nothing to tune")
        self.hparams: Tree = {k: v.requires_grad_(True) for k, v in _prefixed(_HP, h).items()}
        shared = {id(p) for p in parameters_of(model).values()} & {id(p) for p in parameters_of(head).values()}
        if shared:
            raise InvalidArgumentError(
                "model and head share parameters: the fine-tuning head must be a separate module (the model's "
                "weights are fine-tuned with finetune='all' instead)"
            )
        self.params = _prefixed(_MODEL, parameters_of(model))
        self.head_params = _prefixed(_HEAD, parameters_of(head))
        self._losses = (pretrain_loss, finetune_loss, finetune_loss if val_loss is None else val_loss)
        self.pretrain_steps = positive_int("pretrain_steps", pretrain_steps)
        self.head_steps = nonnegative_int("head_steps", head_steps)
        self.seed = nonnegative_int("seed", seed)
        adam = lambda lr: lambda ps: torch.optim.Adam(ps, lr=lr)
        self.pretrain_opt = _factory("pretrain_optimizer", pretrain_optimizer, adam(1e-3))(list(self.params.values()))
        self.head_opt = _factory("head_optimizer", head_optimizer, adam(1e-3))(list(self.head_params.values()))
        self.outer_opt = _factory("outer_optimizer", outer_optimizer, adam(1e-2))(list(self.hparams.values()))
        if hypergrad is None:
            lr = float(self.pretrain_opt.param_groups[0]["lr"])
            hypergrad = TwoStage(
                functional.sgd(lr=finetune_lr), steps=1, solver=Neumann(steps=1, alpha=lr, on_growth="continue")
            )
        if not isinstance(hypergrad, TwoStage):
            raise InvalidArgumentError(f"hypergrad must be a nestopt.hypergrad.TwoStage strategy, got {hypergrad!r}")
        self.strategy = hypergrad
        self.strategy.reset()
        self.outer_step = 0
        self.history = History()
        self._loaders: dict[str, tuple[Iterable[Any], BatchStream]] = {}

    # -- the losses, as nestopt losses over prefixed trees --------------------------------------------
    def _hp(self, h: Tree, *, copy: bool = True) -> Any:
        own = _strip(_HP, h)
        if self.hparams_module is None:
            return own
        return bind(self.hparams_module, own, buffers="copy" if copy else "live", train=True)

    def _pretrain(self, p: Tree, h: Tree, batch: Any, *, live: bool = False) -> Tensor:
        model = bind(self.model, _strip(_MODEL, p), buffers="live" if live else "copy", train=True)
        return self._losses[0](model, self._hp(h, copy=not live), batch)

    def _finetune(self, w: Tree, h: Tree, batch: Any, *, which: int = 1, live_head: bool = False) -> Tensor:
        validation = which == 2
        model_train = not validation and self.strategy.finetune != "head"
        model = bind(self.model, _strip(_MODEL, w), buffers="copy" if model_train else "live", train=model_train)
        head_buffers: Literal["copy", "live"] = "live" if (live_head or validation) else "copy"
        head = bind(self.head, _strip(_HEAD, w), buffers=head_buffers, train=not validation)
        return self._losses[which](model, head, batch)

    # -- one outer step ---------------------------------------------------------------------------------
    def _step(self, opt: torch.optim.Optimizer, loss: Tensor, what: str) -> float:
        if not bool(torch.isfinite(loss.detach())):
            raise NonFiniteError(f"the {what} loss became {float(loss.detach())} at outer step {self.outer_step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    def _inner_step(self, streams: dict[str, BatchStream], batch: Any, h: Tree) -> float:
        value = self._step(self.pretrain_opt, self._pretrain(self.params, h, batch, live=True), "pre-training")
        frozen = tree.detach(self.params)
        for _ in range(self.head_steps):
            loss = self._finetune({**frozen, **self.head_params}, h, streams["finetune"].next(), live_head=True)
            self._step(self.head_opt, loss, "fine-tuning")
        return value

    def _problem(self, streams: dict[str, BatchStream]) -> TwoStageProblem:
        return TwoStageProblem(
            inner_loss=self._pretrain,
            outer_loss=functools.partial(self._finetune, which=2),
            step_loss=functools.partial(self._pretrain, live=True),
            params=self.params,
            hparams=self.hparams,
            next_train=streams["pretrain"].next,
            next_val=streams["val"].next,
            inner_step=functools.partial(self._inner_step, streams),
            steps=self.pretrain_steps,
            outer_step=self.outer_step,
            seed=_rng.derive(self.seed, "hypergrad", self.outer_step),
            finetune_loss=self._finetune,
            head=self.head_params,
            next_finetune=streams["finetune"].next,
        )

    def _one_outer_step(self, streams: dict[str, BatchStream]) -> tuple[HypergradResult, list[float]]:
        problem = self._problem(streams)
        with _rng.fork(_rng.derive(self.seed, "outer", self.outer_step)):
            losses = list(self.strategy.inner_phase(problem))
            try:
                res = self.strategy.hypergradient(problem)
            except NonFiniteError as err:
                raise NonFiniteError(f"at outer step {self.outer_step}: {err}") from err
        self.outer_opt.zero_grad(set_to_none=True)
        for k, v in self.hparams.items():
            v.grad = res.grads[k].to(v.dtype)
        self.outer_opt.step()
        self.outer_opt.zero_grad(set_to_none=True)
        if not tree.all_finite(tree.detach(self.hparams)):
            raise NonFiniteError(f"a hyperparameter became non-finite at outer step {self.outer_step}")
        return res, losses

    def warmup(self, pretrain: Iterable[Any], finetune: Iterable[Any], *, steps: int) -> list[float]:
        """``steps`` pre-training (and head) steps at the current hyperparameters, without hypergradients (the
        paper's warm-up epochs); returns the pre-training losses."""
        streams = self._streams(pretrain, finetune, finetune)
        h = tree.detach(self.hparams)
        with _rng.fork(_rng.derive(self.seed, "warmup")):
            return [
                self._inner_step(streams, streams["pretrain"].next(), h) for _ in range(nonnegative_int("steps", steps))
            ]

    def _streams(self, pretrain: Iterable[Any], finetune: Iterable[Any], val: Iterable[Any]) -> dict[str, BatchStream]:
        """One stream per role; a loader seen before continues where it stopped (a new one starts afresh)."""
        for role, loader in (("pretrain", pretrain), ("finetune", finetune), ("val", val)):
            known = self._loaders.get(role)
            if known is None or known[0] is not loader:
                self._loaders[role] = (loader, BatchStream(loader, role))
        return {role: stream for role, (_, stream) in self._loaders.items()}

    def fit(
        self,
        pretrain: Iterable[Any],
        finetune: Iterable[Any],
        val: Iterable[Any],
        *,
        outer_steps: int,
        progress: bool | None = None,
        callback: Callable[[PretrainFinetuneTrainer, dict[str, Any]], None] | None = None,
    ) -> History:
        """Run ``outer_steps`` outer steps (a second call continues): pre-training batches from ``pretrain``,
        fine-tuning batches (head steps and the unroll) from ``finetune``, validation batches from ``val``.

        Returns:
            The :class:`~nestopt.bilevel.History`: per outer step the mean pre-training loss, the validation
            and fine-tuning losses of the unroll, the hypergradient's norm, both stages' diagnostics and the
            values of small hyperparameter tensors.
        """
        streams = self._streams(pretrain, finetune, val)
        start = time.perf_counter()
        for _ in progress_bar(range(nonnegative_int("outer_steps", outer_steps)), progress):
            res, losses = self._one_outer_step(streams)
            self.outer_step += 1
            record = self._record(res, losses, time.perf_counter() - start)
            self.history.append(record)
            if callback is not None:
                callback(self, record)
        return self.history

    def _record(self, res: HypergradResult, losses: list[float], seconds: float) -> dict[str, Any]:
        info = res.info
        record: dict[str, Any] = {
            "outer_step": self.outer_step,
            "pretrain_loss": sum(losses) / len(losses) if losses else math.nan,
            "val_loss": info.outer_loss,
            "finetune_loss": sum(res.inner_losses) / len(res.inner_losses) if res.inner_losses else math.nan,
            "hypergrad_norm": float(tree.norm(res.grads)),
            "status": info.status.value,
            "pretrain_grad_norm": info.inner_grad_norm,
            "stage1": info.extra.get("stage1"),
            "stage2": info.extra.get("stage2"),
            "seconds": seconds,
        }
        for k, v in self.hparams.items():
            if v.numel() <= 16:
                value = v.detach().cpu()
                record[k] = float(value) if value.numel() == 1 else value.reshape(-1).tolist()
        return record

    def hparams_tree(self) -> Tree:
        """The current hyperparameters (detached), keys without prefix."""
        return _strip(_HP, tree.detach(self.hparams))


def progress_bar(steps: range, enabled: bool | None) -> progress[int]:
    return progress(steps, desc="outer steps", enabled=enabled)
