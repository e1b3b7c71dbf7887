"""What every best-response model shares: the hyperparameters it conditions on, and families that regularize
the weights it responds with.

A best-response model :math:`w_\\phi(\\lambda)` has the response parameters :math:`\\phi` as its own; the
weights of the original network are a function of them and of the hyperparameters. A penalty such as weight
decay must act on those weights, not on :math:`\\phi`:

.. math::  L_T(\\phi, \\lambda) = \\ell\\big(f(x; w_\\phi(\\lambda)), y\\big) + R\\big(w_\\phi(\\lambda), \\lambda\\big).

:attr:`BestResponseModel.families` therefore wraps each family so that its penalty sees
``model.response_weights(params, hparams)`` (keyed by the original network's parameter names) while its
keys, ranges and other hooks stay the family's own: pass ``model.families`` to the trainer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from nestopt.bestresponse.space import HyperSpace
from nestopt.errors import ShapeMismatchError
from nestopt.hparams.base import Family
from nestopt.hparams.interval import Interval
from nestopt.tree import Tree

__all__ = ["BestResponseModel", "ResponseFamily"]


class BestResponseModel(torch.nn.Module):
    """Base class of models whose ``forward(x, hparams)`` conditions on the hyperparameters.

    Subclasses set :attr:`space` and :attr:`base_shapes` and implement ``forward(x, hparams, *,
    weights=False)``, which with ``weights=True`` returns the response's weights (keyed by the original
    network's parameter names) instead of outputs.
    """

    conditions_on_hparams = True
    space: HyperSpace
    base_shapes: dict[str, torch.Size]

    @property
    def families(self) -> list[Family]:
        """The families the model conditions on, with penalties acting on the response's weights."""
        return [ResponseFamily(f, self) for f in self.space.families]

    def response_weights(self, params: Tree, hparams: Tree) -> Tree:
        """The weights of the original network that ``params`` respond with at ``hparams``."""
        out = functional_call(self, params, (None, hparams), {"weights": True}, strict=False)
        if not isinstance(out, dict):  # a subclass that ignores `weights`
            raise TypeError(f"{type(self).__name__}.forward(..., weights=True) must return a tree")
        return out


class ResponseFamily(Family):
    """A family whose penalty acts on a best-response model's weights (see the module docstring); every other
    hook, its name, keys, ranges and channels are the wrapped family's."""

    def __init__(self, family: Family, model: BestResponseModel) -> None:
        self.family, self.model = family, model
        self.name, self.enters, self.per_example = family.name, family.enters, family.per_example

    def init(self) -> Tree:
        return self.family.init()

    def intervals(self) -> dict[str, Interval]:
        return self.family.intervals()

    def check_params(self, params: Tree) -> None:
        own = {k for k, p in self.model.named_parameters() if p.requires_grad}
        if set(params) != own:
            raise ShapeMismatchError(
                f"{self!r} belongs to a best-response model with parameters {sorted(own)[:4]}...; the trained model "
                f"has {sorted(params)[:4]}...: pass the best-response model's own `families` with it"
            )
        self.family.check_params({k: torch.empty(s, device="meta") for k, s in self.model.base_shapes.items()})

    def penalty(self, params: Tree, hparams: Tree) -> Tensor | None:
        if type(self.family).penalty is Family.penalty:
            return None
        return self.family.penalty(self.model.response_weights(params, hparams), hparams)

    def transform_batch(self, hparams: Tree, batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return self.family.transform_batch(hparams, batch)

    def example_weights(self, hparams: Tree, batch: tuple[Tensor, ...]) -> Tensor | None:
        return self.family.example_weights(hparams, batch)

    def soft_targets(self, hparams: Tree, batch: tuple[Tensor, ...]) -> Tensor | None:
        return self.family.soft_targets(hparams, batch)

    def state_dict(self) -> dict[str, Any]:
        return self.family.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.family.load_state_dict(state)

    def __repr__(self) -> str:
        return f"{self.family!r} (on {type(self.model).__name__} weights)"


def parameter_shapes(model: torch.nn.Module) -> dict[str, torch.Size]:
    """The shapes of a model's trainable parameters, by name."""
    return {k: p.shape for k, p in model.named_parameters() if p.requires_grad}
