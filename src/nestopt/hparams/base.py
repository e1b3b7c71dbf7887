"""Hyperparameter families: what a bilevel problem tunes, and where it enters the losses.

A family owns some hyperparameter tensors and knows where they enter the inner (training) loss:

=====================  ==========================================================================
hook                   used by
=====================  ==========================================================================
``penalty``            :class:`WeightDecay`: a term added to the inner loss
``transform_batch``    :class:`AugmentationNet` (inputs), :class:`DistilledData` (the whole batch)
``example_weights``    :class:`LossReweighting`: per-example weights of the task loss
``learning_rate``      :class:`LearningRate`: only reachable by unrolling (it enters the ``"trajectory"``)
=====================  ==========================================================================

Each family declares the channels it :attr:`~Family.enters` through: ``"loss"`` (the inner loss),
``"trajectory"`` (only the optimization trajectory: an optimizer setting) or ``"sampling"`` (only random
sampling, with no gradient through the loss). A hypergradient strategy differentiates some channels
(:attr:`nestopt.hypergrad.Strategy.differentiates`), and a trainer refuses a family it cannot differentiate.

Families compose into one bilevel objective with :class:`nestopt.hparams.Objective`.

Each family's tensors appear in the hyperparameter tree under ``"<family name>/<key>"``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from nestopt.tree import Tree

__all__ = ["Family"]


class Family:
    """Base class of hyperparameter families. Subclasses override the hooks they need.

    Attributes:
        name: the prefix of this family's keys in the hyperparameter tree.
        enters: the channels through which the family's hyperparameters act: ``"loss"``, ``"trajectory"``
            or ``"sampling"`` (see the module docstring).
    """

    name: str = "family"
    enters: frozenset[str] = frozenset({"loss"})

    @property
    def unroll_only(self) -> bool:
        """Whether the family acts only through the optimization trajectory (no implicit hypergradient)."""
        return self.enters == frozenset({"trajectory"})

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

    def state_dict(self) -> dict[str, Any]:
        """State that is not a hyperparameter but must be checkpointed (a noise generator, say): tensors and
        plain values only. Default: none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def key(self, k: str) -> str:
        """The full key of this family's tensor ``k`` in the hyperparameter tree."""
        return f"{self.name}/{k}"

    def own(self, hparams: Tree) -> Tree:
        """This family's tensors from the full hyperparameter tree, keys without the prefix."""
        prefix = f"{self.name}/"
        return {k[len(prefix) :]: v for k, v in hparams.items() if k.startswith(prefix)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
