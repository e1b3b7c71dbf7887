"""Weight decay as hyperparameters: one global, one per layer, or one per weight."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.hparams._penalty import decay_penalty
from nestopt.hparams.base import Family
from nestopt.hparams.interval import Interval
from nestopt.tree import Tree

__all__ = ["WeightDecay"]


class WeightDecay(Family):
    """An L2 penalty with log-parameterized coefficients :math:`\\lambda = \\log c`:

    .. math::  R(w, \\lambda) = \\sum_{\\text{tensors } k} \\sum_j e^{\\lambda_{k,j}} w_{k,j}^2

    where :math:`\\lambda_{k,j}` is one scalar (``per="global"``), one scalar per parameter tensor
    (``per="layer"``), or one value per weight (``per="parameter"``: as many hyperparameters as weights).

    Args:
        model: the model whose parameters are penalized (the trainer checks it is the model being trained).
        per: ``"global"``, ``"layer"`` or ``"parameter"``.
        init: the initial coefficient :math:`c` (not its log).
        include: which parameter names to penalize (default: all).
        name: the key prefix.

    Example:
        >>> import torch
        >>> from nestopt import hparams
        >>> net = torch.nn.Linear(3, 2)
        >>> wd = hparams.WeightDecay(net, per="parameter", init=1e-3)
        >>> {k: tuple(v.shape) for k, v in wd.init().items()}
        {'weight': (2, 3), 'bias': (2,)}
    """

    def __init__(
        self,
        model: torch.nn.Module,
        per: Literal["global", "layer", "parameter"] = "parameter",
        init: float = 1e-4,
        *,
        include: Callable[[str], bool] | None = None,
        name: str = "weight_decay",
    ) -> None:
        if per not in ("global", "layer", "parameter"):
            raise InvalidArgumentError(f"per must be 'global', 'layer' or 'parameter', got {per!r}")
        if not (isinstance(init, float | int) and init > 0 and math.isfinite(init)):
            raise InvalidArgumentError(f"init must be a positive finite coefficient, got {init!r}")
        self.per, self.init_value, self.name = per, float(init), name
        self.shapes = {
            k: v.shape for k, v in model.named_parameters() if v.requires_grad and (include is None or include(k))
        }
        self._like = {k: v for k, v in model.named_parameters() if k in self.shapes}
        if not self.shapes:
            raise InvalidArgumentError("WeightDecay: no parameter of the model is selected by `include`")

    def init(self) -> Tree:
        log_c = math.log(self.init_value)
        first = next(iter(self._like.values()))
        if self.per == "global":
            return {"global": torch.tensor(log_c, dtype=first.dtype, device=first.device)}
        if self.per == "layer":
            return {k: torch.tensor(log_c, dtype=v.dtype, device=v.device) for k, v in self._like.items()}
        return {k: torch.full_like(v.detach(), log_c) for k, v in self._like.items()}

    def intervals(self) -> dict[str, Interval]:
        """Every coefficient lies in :math:`(0, \\infty)`; the tree holds its log."""
        keys = ["global"] if self.per == "global" else list(self.shapes)
        return dict.fromkeys(keys, Interval(0, math.inf, transform="exp"))

    def check_params(self, params: Tree) -> None:
        for k, shape in self.shapes.items():
            if k not in params:
                raise ShapeMismatchError(
                    f"WeightDecay was built for a model with parameter {k!r}, which the trained model lacks "
                    f"(it has {sorted(params)}): attach the family to the model being trained"
                )
            if params[k].shape != shape:
                raise ShapeMismatchError(
                    f"WeightDecay was built for {k!r} of shape {tuple(shape)} but the trained model's {k!r} has "
                    f"shape {tuple(params[k].shape)}: attach the family to the model being trained"
                )

    def coefficients(self, hparams: Tree) -> dict[str, Tensor]:
        """The penalty coefficients :math:`e^{\\lambda}` for each penalized parameter."""
        own = self.own(hparams)
        if self.per == "global":
            c = own["global"].exp()
            return {k: c for k in self.shapes}
        return {k: own[k].exp() for k in self.shapes}

    def penalty(self, params: Tree, hparams: Tree) -> Tensor:
        """The penalty, as one fused function per tensor: its derivatives allocate one buffer each
        (:mod:`nestopt.hparams._penalty`)."""
        own = self.own(hparams)
        terms = [decay_penalty(own["global" if self.per == "global" else k], params[k]) for k in self.shapes]
        return torch.stack(terms).sum()

    def decay_terms(self, params: Tree, hparams: Tree) -> list[tuple[Tensor, Tensor]]:
        """The penalty's pairs ``(lam, w)``, whose derivatives a linearization writes out."""
        own = self.own(hparams)
        return [(own["global" if self.per == "global" else k], params[k]) for k in self.shapes]
