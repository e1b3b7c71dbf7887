"""Hyperparameter families and how they compose into one bilevel objective.

A family owns some hyperparameter tensors and knows where they enter the inner (training) loss:

=====================  ==========================================================================
hook                   used by
=====================  ==========================================================================
``penalty``            :class:`WeightDecay`: a term added to the inner loss
``transform_batch``    :class:`AugmentationNet` (inputs), :class:`DistilledData` (the whole batch)
``example_weights``    :class:`LossReweighting`: per-example weights of the task loss
``learning_rate``      :class:`LearningRate`: only reachable by unrolling (``unroll_only = True``)
=====================  ==========================================================================

:class:`Objective` puts a model, a task criterion and any number of families together into the two losses
of the functional core, ``inner_loss(params, hparams, batch)`` and ``outer_loss(params, hparams, batch)``:

.. math::  L_{in}(w, \\lambda) = \\frac{\\sum_i a_i(\\lambda)\\, \\ell(f_w(T_\\lambda(x_i)), y_i)}{\\sum_i a_i(\\lambda)}
           + \\sum_{\\text{families}} R(w, \\lambda), \\qquad
           L_{out}(w) = \\tfrac1n \\sum_i \\ell(f_w(x_i), y_i).

Each family's tensors appear in the hyperparameter tree under ``"<family name>/<key>"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.tree import Tree

__all__ = ["Family", "Objective"]

Criterion = Callable[..., Tensor]


class Family:
    """Base class of hyperparameter families. Subclasses override the hooks they need.

    Attributes:
        name: the prefix of this family's keys in the hyperparameter tree.
        unroll_only: the family acts only through the optimization trajectory (no implicit hypergradient).
    """

    name: str = "family"
    unroll_only: bool = False

    def init(self) -> Tree:
        """The initial hyperparameter tensors (keys without the family prefix)."""
        raise NotImplementedError

    def check_params(self, params: Tree) -> None:
        """Raise :class:`ShapeMismatchError` unless the family fits these model parameters."""

    def penalty(self, params: Tree, hparams: Tree) -> Tensor | None:
        """A term added to the inner loss, or ``None``."""
        return None

    def transform_batch(self, hparams: Tree, batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """The batch the model trains on (``(x, y, ...)`` in, the same form out)."""
        return batch

    def example_weights(self, hparams: Tree, batch: tuple[Tensor, ...]) -> Tensor | None:
        """Non-negative weights of the examples' task losses, or ``None``."""
        return None

    def soft_targets(self, hparams: Tree, batch: tuple[Tensor, ...]) -> Tensor | None:
        """Probability targets that replace the batch's labels (learned labels), or ``None``."""
        return None

    def key(self, k: str) -> str:
        """The full key of this family's tensor ``k`` in the hyperparameter tree."""
        return f"{self.name}/{k}"

    def own(self, hparams: Tree) -> Tree:
        """This family's tensors from the full hyperparameter tree, keys without the prefix."""
        prefix = f"{self.name}/"
        return {k[len(prefix) :]: v for k, v in hparams.items() if k.startswith(prefix)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _check_batch(batch: Any) -> tuple[Tensor, ...]:
    if not isinstance(batch, tuple | list) or len(batch) < 2 or not all(isinstance(t, Tensor) for t in batch):
        raise InvalidArgumentError(
            f"a batch must be a tuple (inputs, targets[, example indices]) of tensors, got {type(batch).__name__}"
        )
    return tuple(batch)


class Objective:
    """A model, a task criterion and hyperparameter families as the two losses of a bilevel problem.

    Args:
        model: the network; it is called through ``torch.func.functional_call`` with the parameter tree.
        criterion: ``criterion(outputs, targets, reduction=...)`` such as ``torch.nn.functional.cross_entropy``.
        families: the hyperparameter families (their names must differ).

    Example:
        >>> import torch
        >>> from nestopt import hparams
        >>> net = torch.nn.Linear(4, 3)
        >>> obj = hparams.Objective(net, torch.nn.functional.cross_entropy, [hparams.WeightDecay(net)])
        >>> h = obj.init_hparams()
        >>> sorted(h)
        ['weight_decay/bias', 'weight_decay/weight']
        >>> batch = (torch.randn(8, 4), torch.randint(3, (8,)))
        >>> obj.inner_loss(dict(net.named_parameters()), h, batch).shape
        torch.Size([])
    """

    def __init__(self, model: torch.nn.Module, criterion: Criterion, families: Sequence[Family] = ()) -> None:
        if not isinstance(model, torch.nn.Module):
            raise InvalidArgumentError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.criterion = criterion
        self.families = list(families)
        names = [f.name for f in self.families]
        if len(set(names)) != len(names):
            raise InvalidArgumentError(f"hyperparameter families need distinct names, got {names}")
        for f in self.families:
            if not isinstance(f, Family):
                raise InvalidArgumentError(f"families must be nestopt.hparams families, got {f!r}")
            f.check_params(self.params())

    def params(self) -> Tree:
        """The model's trainable parameters (the live tensors)."""
        return {k: v for k, v in self.model.named_parameters() if v.requires_grad}

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

    def predict(self, params: Tree, x: Tensor) -> Tensor:
        return functional_call(self.model, params, (x,))

    def task_loss(self, params: Tree, hparams: Tree, batch: Any, *, train: bool) -> Tensor:
        """The weighted criterion on a (transformed, when ``train``) batch."""
        batch = _check_batch(batch)
        weights: Tensor | None = None
        soft: Tensor | None = None
        if train:
            for f in self.families:
                batch = f.transform_batch(hparams, batch)
            for f in self.families:
                w = f.example_weights(hparams, batch)
                if w is not None:
                    weights = w if weights is None else weights * w
                s = f.soft_targets(hparams, batch)
                if s is not None:
                    soft = s
        x, y = batch[0], batch[1]
        out = self.predict(params, x)
        if soft is not None:
            per_example = -(soft * torch.log_softmax(out, dim=-1)).sum(-1)
        else:
            per_example = self.criterion(out, y, reduction="none")
            if per_example.dim() > 1:
                per_example = per_example.reshape(per_example.shape[0], -1).mean(1)
        if weights is None:
            return per_example.mean()
        if weights.shape != per_example.shape:
            raise ShapeMismatchError(
                f"example weights have shape {tuple(weights.shape)} but the batch has {per_example.shape[0]} examples"
            )
        return (weights * per_example).sum() / weights.sum().clamp_min(1e-12)

    def inner_loss(self, params: Tree, hparams: Tree, batch: Any) -> Tensor:
        """The training loss: weighted task loss on the transformed batch plus every family's penalty."""
        value = self.task_loss(params, hparams, batch, train=True)
        for f in self.families:
            term = f.penalty(params, hparams)
            if term is not None:
                value = value + term
        return value

    def outer_loss(self, params: Tree, hparams: Tree, batch: Any) -> Tensor:
        """The validation loss: the plain criterion on an untransformed batch."""
        return self.task_loss(params, hparams, batch, train=False)
