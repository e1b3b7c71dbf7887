"""Hyperparameter families: what a bilevel problem tunes, and where it enters the losses.

A family owns some hyperparameter tensors and knows where they enter the inner (training) loss:

=====================  ==========================================================================
hook                   used by
=====================  ==========================================================================
``penalty``            :class:`WeightDecay`: a term added to the inner loss
``transform_batch``    :class:`AugmentationNet` (inputs), :class:`DistilledData` (the whole batch)
``example_weights``    :class:`LossReweighting`: per-example weights of the task loss
``learning_rate``      :class:`LearningRate`: only reachable by unrolling (it enters the ``"trajectory"``)
(a model)              :class:`Dropout`: read by a best-response model's dropout layers (``"sampling"``)
=====================  ==========================================================================

Each family declares the channels it :attr:`~Family.enters` through: ``"loss"`` (the inner loss),
``"trajectory"`` (only the optimization trajectory: an optimizer setting) or ``"sampling"`` (only random
sampling, with no gradient through the loss). A hypergradient strategy differentiates some channels
(:attr:`nestopt.hypergrad.Strategy.differentiates`), and a trainer refuses a family it cannot differentiate.

A family whose tensors are hyperparameters with a range declares it (:meth:`Family.intervals`: the range
and the projection from the unconstrained value the tree holds, see :class:`nestopt.hparams.Interval`); a
best-response model can then take them as inputs (:attr:`Family.conditionable`). A family that can take
one value per example (:attr:`Family.per_example`: a dropout rate, an augmentation strength) accepts its
tensors with a leading batch dimension, and a best-response strategy perturbs it per example.

Families compose into one bilevel objective with :class:`nestopt.hparams.Objective`.

Each family's tensors appear in the hyperparameter tree under ``"<family name>/<key>"``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from nestopt.hparams.interval import Interval
from nestopt.tree import Tree

__all__ = ["Family"]


class Family:
    """Base class of hyperparameter families. Subclasses override the hooks they need.

    Attributes:
        name: the prefix of this family's keys in the hyperparameter tree.
        enters: the channels through which the family's hyperparameters act: ``"loss"``, ``"trajectory"``
            or ``"sampling"`` (see the module docstring).
        per_example: whether the hooks accept the family's tensors with a leading batch dimension (one value
            per example of the batch).
    """

    name: str = "family"
    enters: frozenset[str] = frozenset({"loss"})
    per_example: bool = False

    @property
    def unroll_only(self) -> bool:
        """Whether the family acts only through the optimization trajectory (no implicit hypergradient)."""
        return self.enters == frozenset({"trajectory"})

    def init(self) -> Tree:
        """The initial hyperparameter tensors (keys without the family prefix)."""
        raise NotImplementedError

    def initial(self) -> Tree:
        """The initial tensors under their full keys (``"<name>/<key>"``), as the hyperparameter tree holds them."""
        return {self.key(k): v for k, v in self.init().items()}

    def intervals(self) -> dict[str, Interval]:
        """The range and projection of each tensor (keys without prefix); empty for a family whose tensors are
        not hyperparameters with a range (data, network weights). Default: none."""
        return {}

    @property
    def conditionable(self) -> bool:
        """Whether a best-response model can take this family's hyperparameters as inputs: it declares a
        range for every one of its tensors."""
        ranges = self.intervals()
        return bool(ranges) and all(k in ranges for k in self.init())

    def project(self, hparams: Tree) -> Tree:
        """The family's hyperparameters in their own units (a rate, a count, a coefficient): its tensors in
        the full tree mapped through their :meth:`intervals` (unchanged where none is declared)."""
        ranges = self.intervals()
        return {k: ranges[k].project(v) if k in ranges else v for k, v in self.own(hparams).items()}

    def check_params(self, params: Tree) -> None:
        """Raise :class:`ShapeMismatchError` unless the family fits these model parameters."""

    def penalty(self, params: Tree, hparams: Tree) -> Tensor | None:
        """A term added to the inner loss, or ``None``."""
        return None

    def decay_terms(self, params: Tree, hparams: Tree) -> list[tuple[Tensor, Tensor]] | None:
        """The penalty as weight decays, pairs ``(lam, w)`` with penalty :math:`\\sum e^{\\lambda} w^2` (``lam`` one
        log-coefficient or one per entry of ``w``), when it is one; ``None`` otherwise. A linearization (exact
        Hessian or Gauss-Newton) then takes the penalty's derivatives from their formulas instead of a backward
        pass through its graph (:class:`nestopt.autodiff.DecayTerms`). Default: ``None``."""
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
