"""The hyperparameters a best-response model conditions on, and the input it builds from a tree.

A best-response model sees the unconstrained hyperparameters (the values the tree holds, before any
family's projection), flattened and concatenated in a fixed key order:

.. math::  h = [u_{k_1}, u_{k_2}, \\ldots] \\in \\mathbb R^{H} \\quad\\text{or}\\quad \\mathbb R^{B \\times H}

when some key carries one value per example (a leading batch dimension). A centred (Delta-STN) model sees
:math:`h - h_0` instead, :math:`h_0` being the centre the strategy puts in the tree under
:func:`nestopt.hypergrad.best_response.centre_key`; without a centre it is at :math:`h_0` (no input).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from nestopt.errors import InvalidArgumentError, ShapeMismatchError, UnsupportedError
from nestopt.hparams.base import Family
from nestopt.hypergrad.best_response import centre_key
from nestopt.tree import Tree

__all__ = ["HyperSpace"]


class HyperSpace:
    """The keys, shapes and order of the hyperparameters a best-response model takes as inputs.

    Args:
        families: the families to condition on; each must declare a range for its tensors
            (:attr:`~nestopt.hparams.Family.conditionable`).

    Raises:
        UnsupportedError: a family the response cannot condition on (its tensors are data or network
            weights, or an optimizer setting, with no declared range).

    Example:
        >>> import torch
        >>> from nestopt import hparams
        >>> from nestopt.bestresponse import HyperSpace
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout())
        >>> space = HyperSpace([hparams.WeightDecay(net, per="global"), hparams.Dropout(net)])
        >>> space.keys, space.size
        (['weight_decay/global', 'dropout/1'], 2)
        >>> h = {"weight_decay/global": torch.tensor(-3.0), "dropout/1": torch.zeros(5)}  # a rate per example
        >>> space.features(h).shape
        torch.Size([5, 2])
    """

    def __init__(self, families: Sequence[Family]) -> None:
        if isinstance(families, Family):
            families = [families]
        self.families = list(families)
        if not self.families:
            raise InvalidArgumentError("a best-response model needs at least one hyperparameter family to condition on")
        self.shapes: dict[str, torch.Size] = {}
        for f in self.families:
            if not isinstance(f, Family):
                raise InvalidArgumentError(f"families must be nestopt.hparams families, got {f!r}")
            if not f.conditionable:
                raise UnsupportedError(
                    f"a best-response model cannot condition on {f!r}: its tensors declare no range (they are data, "
                    "network weights or an optimizer setting, not a few hyperparameters). Tune it with "
                    "hypergrad.Implicit or hypergrad.Unrolled, and condition on families such as WeightDecay, "
                    "Dropout, Cutout, RandomShift or AugmentationStrength"
                )
            for k, v in f.init().items():
                self.shapes[f.key(k)] = v.shape
        if len({f.name for f in self.families}) != len(self.families):
            raise InvalidArgumentError(f"the families need distinct names, got {[f.name for f in self.families]}")

    @property
    def keys(self) -> list[str]:
        return list(self.shapes)

    @property
    def size(self) -> int:
        """:math:`H`, the number of scalar inputs."""
        return sum(s.numel() for s in self.shapes.values())

    def features(self, hparams: Tree | None) -> Tensor:
        """The model's input from a hyperparameter tree: ``(H,)``, or ``(B, H)`` when some key carries one
        value per example."""
        out = self._collect(hparams, centred=False)
        if out is None:  # pragma: no cover - only a centred collection can be empty
            raise ShapeMismatchError("no hyperparameter input")
        return out

    def offsets(self, hparams: Tree | None) -> Tensor | None:
        """A centred model's input :math:`h - h_0`, shaped as :meth:`features`; ``None`` at the centre (the
        tree holds no centres)."""
        return self._collect(hparams, centred=True)

    def _collect(self, hparams: Tree | None, *, centred: bool) -> Tensor | None:
        if hparams is None:
            raise InvalidArgumentError("a best-response model needs the hyperparameter tree: call model(x, hparams)")
        centres = [k for k in self.shapes if centre_key(k) in hparams]
        if centres and not centred:
            raise UnsupportedError(
                "the hyperparameters carry Delta-STN centres but the model is not centred: build it with "
                "bestresponse.stn(..., delta=True), or use hypergrad.BestResponse(delta=False)"
            )
        if centred and not centres:
            return None
        if centred and len(centres) != len(self.shapes):
            missing = sorted(set(self.shapes) - set(centres))
            raise ShapeMismatchError(f"the hyperparameters carry the centres of some keys but not of {missing}")
        parts: list[Tensor] = []
        batch: int | None = None
        for k, shape in self.shapes.items():
            if k not in hparams:
                raise ShapeMismatchError(
                    f"the model conditions on {k!r}, which the hyperparameters lack (they have {sorted(hparams)})"
                )
            v = hparams[k] - hparams[centre_key(k)] if centred else hparams[k]
            if v.shape == shape:
                parts.append(v.reshape(-1))
            elif v.dim() == len(shape) + 1 and v.shape[1:] == shape and batch in (None, v.shape[0]):
                batch = int(v.shape[0])
                parts.append(v.reshape(batch, -1))
            else:
                raise ShapeMismatchError(
                    f"hyperparameter {k!r} has shape {tuple(v.shape)}: expected {tuple(shape)} or one value per "
                    f"example, (batch, *{tuple(shape)})"
                )
        if batch is None:
            return torch.cat(parts)
        return torch.cat([p if p.dim() == 2 else p.expand(batch, -1) for p in parts], dim=1)
