"""A model, a task criterion and hyperparameter families as the losses of a bilevel problem.

.. math::  L_{in}(w, \\lambda) = \\frac{\\sum_i a_i(\\lambda)\\, \\ell(f_w(T_\\lambda(x_i)), y_i)}{\\sum_i a_i(\\lambda)}
           + \\sum_{\\text{families}} R(w, \\lambda), \\qquad
           L_{out}(w) = \\tfrac1n \\sum_i \\ell(f_w(x_i), y_i).

**Modes and buffers.** The model runs in train mode for the training losses and in eval mode (dropout off,
BatchNorm on its running statistics) for the validation loss and for predictions, whatever mode it was left
in; the mode is set for each call and restored after it. Buffers (BatchNorm running statistics) are passed
explicitly: :attr:`Objective.inner_loss` and the validation loss never change them (a Hessian-vector product
or a mixed term must not move the statistics), and only :attr:`Objective.step_loss`, which a training loop
evaluates once per inner step, updates them.

**Data parallel.** A model wrapped in ``torch.nn.parallel.DistributedDataParallel`` is named, and called for
every product and evaluation, through the module it wraps (``model.module``: parameter names without the
``module.`` prefix, no collective in any forward pass); only :attr:`Objective.step_loss` runs the wrapper's
forward, so that the ``backward`` of an inner step fires its gradient synchronization.

**Gauss-Newton.** The training loss is a convex criterion of the model's outputs plus penalties, so it knows
its Gauss-Newton split (``gauss_newton_parts``): :func:`nestopt.autodiff.linearize` with
``curvature="gauss-newton"`` uses it.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torch.func import functional_call

from nestopt import tree
from nestopt.autodiff import DecayTerms
from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.hparams.base import Family
from nestopt.tree import Tree

__all__ = ["Mode", "Objective", "ObjectiveLoss", "model_mode"]

Criterion = Callable[..., Tensor]
Mode = Literal["eval", "train"]


def _check_batch(batch: Any) -> tuple[Tensor, ...]:
    if not isinstance(batch, tuple | list) or len(batch) < 2 or not all(isinstance(t, Tensor) for t in batch):
        raise InvalidArgumentError(
            f"a batch must be a tuple (inputs, targets[, example indices]) of tensors, got {type(batch).__name__}"
        )
    return tuple(batch)


@contextlib.contextmanager
def model_mode(model: torch.nn.Module, train: bool) -> Iterator[None]:
    """Run the block with ``model`` in train (``True``) or eval mode; every submodule's mode is restored after.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Dropout(0.5)).eval()
        >>> with model_mode(net, train=True):
        ...     net[0].training
        True
        >>> net[0].training
        False
    """
    flags = [(m, m.training) for m in model.modules()]
    model.train(train)
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    ddp = torch.nn.parallel.DistributedDataParallel
    return model.module if isinstance(model, ddp) else model


def _sum(terms: Sequence[Tensor | None]) -> Tensor | None:
    """The sum of the terms that are not ``None`` (``None`` if all are)."""
    kept = [t for t in terms if t is not None]
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else torch.stack(kept).sum()


def _accepts_reduction(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return False
    return any(p.name == "reduction" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


class _Criterion:
    """A task criterion as the objective needs it: per-example values, and their mean."""

    def __init__(self, criterion: Criterion) -> None:
        if not callable(criterion):
            raise InvalidArgumentError(
                f"criterion must be a loss function or module such as torch.nn.functional.cross_entropy or "
                f"torch.nn.CrossEntropyLoss(), got {criterion!r}"
            )
        self.fn = criterion
        self.per_example: Callable[[Tensor, Tensor], Tensor] | None = None
        if isinstance(criterion, torch.nn.Module):
            if hasattr(criterion, "reduction"):
                none = copy.copy(criterion)
                none.reduction = "none"  # type: ignore[assignment]
                self.per_example = none
        elif _accepts_reduction(criterion):
            self.per_example = lambda out, y: criterion(out, y, reduction="none")

    def values(self, out: Tensor, y: Tensor) -> Tensor:
        """One loss per example (averaged over any further dimensions)."""
        if self.per_example is None:
            raise InvalidArgumentError(
                f"the criterion {self.fn!r} cannot return one loss per example (it takes no `reduction` argument), "
                "which example weights need: pass a criterion such as torch.nn.functional.cross_entropy or "
                "torch.nn.CrossEntropyLoss()"
            )
        per_example = self.per_example(out, y)
        return per_example.reshape(per_example.shape[0], -1).mean(1) if per_example.dim() > 1 else per_example

    def mean(self, out: Tensor, y: Tensor) -> Tensor:
        return self.values(out, y).mean() if self.per_example is not None else self.fn(out, y)


class ObjectiveLoss:
    """One of an :class:`Objective`'s losses, ``loss(params, hparams, batch) -> scalar``.

    Args:
        objective: the objective it belongs to.
        transform: apply the families (transformed, weighted batch and penalties): the training losses.
        model_train: run the model in train mode.
        live_buffers: let a train-mode pass update the model's buffers (only the loss of inner steps).
    """

    def __init__(self, objective: Objective, *, transform: bool, model_train: bool, live_buffers: bool) -> None:
        self.objective = objective
        self.transform, self.model_train, self.live_buffers = transform, model_train, live_buffers

    def _buffers(self) -> Tree | None:
        if self.live_buffers or not self.model_train:
            return None  # the model's own: updated by a train-mode pass, only read in eval mode
        return self.objective.scratch_buffers()

    def _outputs(self, params: Tree, hparams: Tree, batch: Any) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        obj = self.objective
        x, y, weights, soft = obj.batch_terms(hparams, batch, transform=self.transform)
        z = obj.predict(
            params, x, hparams=hparams, train=self.model_train, buffers=self._buffers(), wrapper=self.live_buffers
        )
        return z, lambda out: obj.head(out, y, weights, soft)

    def gauss_newton_parts(self, params: Tree, hparams: Tree, batch: Any) -> tuple[Tensor, Callable[[Tensor], Tensor], Tensor | DecayTerms | None]:  # fmt: skip
        """``(z, head, rest)`` with ``loss = head(z) + rest``: the model's outputs ``z``, the criterion as a
        convex function of them, and the families' penalties (``None`` without any; weight decays as
        :class:`~nestopt.autodiff.DecayTerms`, whose derivatives a linearization writes out)."""
        z, head = self._outputs(params, hparams, batch)
        return z, head, self.objective.rest_terms(params, hparams) if self.transform else None

    def __call__(self, params: Tree, hparams: Tree, batch: Any) -> Tensor:
        z, head = self._outputs(params, hparams, batch)
        value = head(z)
        rest = self.objective.penalty(params, hparams) if self.transform else None
        return value if rest is None else value + rest

    def __repr__(self) -> str:
        kind = "step" if self.live_buffers else ("inner" if self.transform else "outer")
        return f"ObjectiveLoss({kind}, model in {'train' if self.model_train else 'eval'} mode)"


class Objective:
    """A model, a task criterion and hyperparameter families as the losses of a bilevel problem.

    Its losses, each ``loss(params, hparams, batch) -> scalar`` (:class:`ObjectiveLoss`):

    ``inner_loss``
        the training loss (train mode): the weighted criterion on the families' transformed batch plus
        every family's penalty; it never changes the model's buffers (for hypergradient products).
    ``step_loss``
        the training loss as an inner step evaluates it: like ``inner_loss``, but a train-mode pass updates
        the model's buffers (BatchNorm running statistics) in place. Evaluate it once per inner step.
    ``outer_loss``
        the validation loss: the plain criterion on an untransformed batch, with the model in
        ``outer_mode`` (eval by default); it never changes the buffers.

    Args:
        model: the network; it is called through ``torch.func.functional_call`` with the parameter tree and
            its buffers (a ``DistributedDataParallel`` model: see the module docstring). A model whose
            ``forward(x, hparams)`` takes the hyperparameter tree (a best-response model) sets the attribute
            ``conditions_on_hparams = True``.
        criterion: ``criterion(outputs, targets)``: a function such as ``torch.nn.functional.cross_entropy``
            (it should accept ``reduction="none"``, as torch's do) or a loss module such as
            ``torch.nn.CrossEntropyLoss()``.
        families: the hyperparameter families (their names must differ).
        outer_mode: the mode the model runs in for the validation loss: ``"eval"`` (default, as in the
            papers: no dropout, BatchNorm on its running statistics) or ``"train"``.

    Example:
        >>> import torch
        >>> from nestopt import hparams
        >>> net = torch.nn.Linear(4, 3)
        >>> obj = hparams.Objective(net, torch.nn.CrossEntropyLoss(), [hparams.WeightDecay(net)])
        >>> h = obj.init_hparams()
        >>> sorted(h)
        ['weight_decay/bias', 'weight_decay/weight']
        >>> batch = (torch.randn(8, 4), torch.randint(3, (8,)))
        >>> obj.inner_loss(dict(net.named_parameters()), h, batch).shape
        torch.Size([])
    """

    def __init__(
        self,
        model: torch.nn.Module,
        criterion: Criterion,
        families: Sequence[Family] = (),
        *,
        outer_mode: Mode = "eval",
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise InvalidArgumentError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if outer_mode not in ("eval", "train"):
            raise InvalidArgumentError(f"outer_mode must be 'eval' or 'train', got {outer_mode!r}")
        self.model = model
        self.module: torch.nn.Module = _unwrapped(model)
        """The network itself: ``model``, or the module a ``DistributedDataParallel`` ``model`` wraps."""
        self.criterion = criterion
        self._criterion = _Criterion(criterion)
        self.outer_mode: Mode = outer_mode
        self.families = list(families)
        names = [f.name for f in self.families]
        if len(set(names)) != len(names):
            raise InvalidArgumentError(f"hyperparameter families need distinct names, got {names}")
        for f in self.families:
            if not isinstance(f, Family):
                raise InvalidArgumentError(f"families must be nestopt.hparams families, got {f!r}")
            f.check_params(self.params())
        self.buffers: Tree = dict(self.module.named_buffers())
        """The model's buffers (live tensors); only :attr:`step_loss` updates them."""
        self.conditions_on_hparams = bool(getattr(self.module, "conditions_on_hparams", False))
        first = next(iter(self.params().values()), None)
        self._dtype = None if first is None else first.dtype
        self.inner_loss = ObjectiveLoss(self, transform=True, model_train=True, live_buffers=False)
        self.step_loss = ObjectiveLoss(self, transform=True, model_train=True, live_buffers=True)
        self.outer_loss = ObjectiveLoss(self, transform=False, model_train=outer_mode == "train", live_buffers=False)

    def params(self) -> Tree:
        """The model's trainable parameters (the live tensors)."""
        return {k: v for k, v in self.module.named_parameters() if v.requires_grad}

    def init_hparams(self) -> Tree:
        """Every family's initial tensors, under prefixed keys, on the model's device and in its float dtype."""
        like = next(iter(self.params().values()), None)
        out: Tree = {}
        for f in self.families:
            for k, v in f.init().items():
                if like is not None and v.is_floating_point():
                    v = v.to(device=like.device, dtype=like.dtype)
                out[f.key(k)] = v
        return out

    @property
    def unroll_only(self) -> list[Family]:
        return [f for f in self.families if f.unroll_only]

    def scratch_buffers(self) -> Tree:
        """Copies of the buffers: a train-mode forward pass may update them without touching the model's."""
        return tree.clone(self.buffers) if self.buffers else {}

    def predict(
        self,
        params: Tree,
        x: Tensor,
        *,
        hparams: Tree | None = None,
        train: bool = False,
        buffers: Tree | None = None,
        wrapper: bool = False,
    ) -> Tensor:
        """The model's outputs on ``x`` with weights ``params``, in eval mode unless ``train``.

        ``buffers`` (default: the model's own) are what a train-mode pass updates; eval mode only reads them.
        ``wrapper`` runs a ``DistributedDataParallel`` model's own forward (an inner step's, whose ``backward``
        synchronizes the gradients) instead of the wrapped module's.
        """
        if self._dtype is not None and x.is_floating_point() and x.dtype != self._dtype:
            raise ShapeMismatchError(
                f"the inputs are {x.dtype} but the model's parameters are {self._dtype}: convert the data "
                f"(x.to({self._dtype})) or the model (model.to({x.dtype})) so that they match"
            )
        tensors = {**params, **(self.buffers if buffers is None else buffers)}
        args: tuple[Any, ...] = (x, hparams) if self.conditions_on_hparams else (x,)
        module = self.model if wrapper else self.module
        if module is not self.module:
            tensors = {f"module.{k}": v for k, v in tensors.items()}
        with model_mode(self.model, train):
            return functional_call(module, tensors, args)

    def batch_terms(
        self, hparams: Tree, batch: Any, *, transform: bool
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """``(inputs, targets, example weights, soft targets)`` of a batch; with ``transform`` after every
        family's transformation, weights and learned labels (``None`` where no family sets them)."""
        batch = _check_batch(batch)
        weights: Tensor | None = None
        soft: Tensor | None = None
        if transform:
            for f in self.families:
                batch = f.transform_batch(hparams, batch)
            for f in self.families:
                w = f.example_weights(hparams, batch)
                if w is not None:
                    weights = w if weights is None else weights * w
                s = f.soft_targets(hparams, batch)
                if s is not None:
                    soft = s
        return batch[0], batch[1], weights, soft

    def head(self, out: Tensor, y: Tensor, weights: Tensor | None, soft: Tensor | None) -> Tensor:
        """The (weighted) criterion as a function of the model's outputs: convex in them."""
        if soft is not None:
            per_example = -(soft * torch.log_softmax(out, dim=-1)).sum(-1)
        elif weights is None:
            return self._criterion.mean(out, y)
        else:
            per_example = self._criterion.values(out, y)
        if weights is None:
            return per_example.mean()
        if weights.shape != per_example.shape:
            raise ShapeMismatchError(
                f"example weights have shape {tuple(weights.shape)} but the batch has {per_example.shape[0]} examples"
            )
        return (weights * per_example).sum() / weights.sum().clamp_min(1e-12)

    def penalty(self, params: Tree, hparams: Tree) -> Tensor | None:
        """The sum of the families' penalties, or ``None`` when no family adds one."""
        return _sum([f.penalty(params, hparams) for f in self.families])

    def rest_terms(self, params: Tree, hparams: Tree) -> Tensor | DecayTerms | None:
        """The penalties as the rest of a split: the families' weight decays as
        :class:`~nestopt.autodiff.DecayTerms` (with the other penalties' sum beside them), else :meth:`penalty`."""
        decays: list[tuple[Tensor, Tensor]] = []
        others: list[Tensor | None] = []
        for f in self.families:
            pairs = f.decay_terms(params, hparams)
            if pairs is None:
                others.append(f.penalty(params, hparams))
            else:
                decays += pairs
        if not decays:
            return _sum(others)

        def total() -> Tensor:
            value = self.penalty(params, hparams)
            assert value is not None  # the decays' families add a penalty
            return value

        return DecayTerms(decays, total=total, other=_sum(others))

    def task_loss(self, params: Tree, hparams: Tree, batch: Any, *, train: bool) -> Tensor:
        """The criterion alone (no penalty): with ``train`` in train mode on the transformed, weighted batch
        (buffers untouched), otherwise in eval mode on the plain batch."""
        x, y, weights, soft = self.batch_terms(hparams, batch, transform=train)
        buffers = self.scratch_buffers() if train else None
        return self.head(self.predict(params, x, hparams=hparams, train=train, buffers=buffers), y, weights, soft)

    def evaluate(
        self, params: Tree, hparams: Tree, loader: Any, *, reduce: Callable[[Tree], Tree] | None = None
    ) -> dict[str, float]:
        """Mean loss (and accuracy, for class targets) of ``params`` over every batch of ``loader``.

        The model runs in eval mode under ``no_grad``; no buffer changes and no random number is drawn. In a
        data-parallel run each rank evaluates its shard and ``reduce`` (a mean over the ranks, such as
        :func:`nestopt.distributed.all_reduce_mean`) combines the sums, so every rank gets the whole set's result.
        """
        total, count, correct, classes = 0.0, 0, 0, True
        h = tree.detach(hparams)
        with torch.random.fork_rng(devices=[]):
            for batch in loader:
                s, n, c = self.evaluate_sums(params, h, batch)
                total, count = total + s, count + n
                classes = classes and c is not None
                correct += c or 0
        if reduce is not None:  # means of the sums: their ratios are the whole set's
            sums = reduce({"sums": torch.tensor([total, count, correct], dtype=torch.float64)})["sums"].tolist()
            total, count, correct = sums[0], sums[1], sums[2]
        if count == 0:
            raise InvalidArgumentError("cannot evaluate on an empty loader")
        result = {"loss": total / count}
        if classes:
            result["accuracy"] = correct / count
        return result

    def evaluate_sums(self, params: Tree, hparams: Tree, batch: Any) -> tuple[float, int, int | None]:
        """For evaluation (eval mode, no gradient): the summed loss over ``batch``, its size, and the number
        of correct class predictions (``None`` unless the targets are class indices)."""
        x, y = _check_batch(batch)[:2]
        with torch.no_grad():
            out = self.predict(tree.detach(params), x, hparams=hparams)
            n = int(y.shape[0])
            if self._criterion.per_example is not None:
                total = float(self._criterion.values(out, y).sum())
            else:
                total = float(self._criterion.mean(out, y)) * n
            correct = None
            if out.dim() == 2 and not y.is_floating_point() and y.dim() == 1:
                correct = int((out.argmax(-1) == y).sum())
        return total, n, correct
