"""Dropout rates, one per layer, as hyperparameters (tuned through sampling: no gradient reaches them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from nestopt._validate import in_range
from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.hparams.base import Family
from nestopt.hparams.interval import Interval
from nestopt.tree import Tree

__all__ = ["Dropout"]


class Dropout(Family):
    """One dropout rate per layer: :math:`p = p_{max}\\, \\sigma(u)` in :math:`(0, p_{max})`.

    A rate acts only by sampling the dropout masks, so no derivative of the training loss reaches it: the
    family enters through ``"sampling"``, which a best-response strategy (:class:`nestopt.hypergrad.BestResponse`)
    differentiates and :class:`~nestopt.hypergrad.Implicit` / :class:`~nestopt.hypergrad.Unrolled` refuse.
    A best-response model (:func:`nestopt.bestresponse.stn`) replaces the model's ``torch.nn.Dropout`` layers
    by layers that read their rate from the hyperparameter tree, one value per example when the strategy
    perturbs it per example. :meth:`drop` applies such rates.

    Args:
        layers: the model whose ``torch.nn.Dropout`` layers get a rate each (keyed by module name), or the
            layer names themselves.
        init: the initial rate of every layer, or one per layer name (paper default 0.05).
        max_rate: the upper end :math:`p_{max}` of the rates (below 1, for stability: default 0.9).
        name: the key prefix.

    Example:
        >>> import torch
        >>> from nestopt import hparams
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(), torch.nn.Linear(8, 2))
        >>> drop = hparams.Dropout(net, init=0.1)
        >>> {k: round(float(v), 6) for k, v in drop.project(drop.initial()).items()}
        {'2': 0.1}

    References:
        MacKay, Vicol, Lorraine, Duvenaud, Grosse. Self-Tuning Networks: Bilevel Optimization of
        Hyperparameters using Structured Best-Response Functions. ICLR 2019.
    """

    enters = frozenset({"sampling"})
    per_example = True

    def __init__(
        self,
        layers: torch.nn.Module | Sequence[str],
        *,
        init: float | Mapping[str, float] = 0.05,
        max_rate: float = 0.9,
        name: str = "dropout",
    ) -> None:
        if isinstance(layers, torch.nn.Module):
            names = [n for n, m in layers.named_modules() if isinstance(m, torch.nn.Dropout)]
            if not names:
                raise InvalidArgumentError(
                    f"Dropout: the model has no torch.nn.Dropout layer to tune ({type(layers).__name__}); add "
                    "torch.nn.Dropout layers where rates should be tuned, or pass the layer names"
                )
        elif isinstance(layers, str) or not all(isinstance(n, str) for n in layers) or not layers:
            raise InvalidArgumentError(f"layers must be a model or a non-empty list of layer names, got {layers!r}")
        else:
            names = list(layers)
        self.layers, self.name = names, name
        self.interval = Interval(0.0, in_range("max_rate", max_rate, 0.0, 1.0, low_open=True, high_open=True))
        inits = init if isinstance(init, Mapping) else dict.fromkeys(names, init)
        if set(inits) != set(names):
            raise InvalidArgumentError(f"init must give a rate for exactly the layers {names}, got {sorted(inits)}")
        self.init_rates = {
            n: in_range(f"init[{n!r}]", v, 0.0, max_rate, low_open=True, high_open=True) for n, v in inits.items()
        }

    def init(self) -> Tree:
        return {n: torch.tensor(self.interval.unproject(p)) for n, p in self.init_rates.items()}

    def intervals(self) -> dict[str, Interval]:
        return dict.fromkeys(self.layers, self.interval)

    def rate(self, hparams: Tree, layer: str) -> Tensor:
        """The rate of ``layer`` from the full tree: a scalar, or one per example."""
        key = self.key(layer)
        if key not in hparams:
            raise ShapeMismatchError(f"the hyperparameters have no dropout rate {key!r} (they have {sorted(hparams)})")
        return self.interval.project(hparams[key])

    @staticmethod
    def drop(x: Tensor, rate: Tensor) -> Tensor:
        """Inverted dropout of ``x`` with ``rate`` (a scalar, or one rate per example of ``x``'s first
        dimension): every entry is zeroed with probability ``rate`` and the survivors scaled by
        ``1 / (1 - rate)``. The masks come from torch's global generator; no gradient reaches ``rate``."""
        p = rate.detach().to(x.dtype)
        if p.dim() == 1:
            if p.shape[0] != x.shape[0]:
                raise ShapeMismatchError(f"{p.shape[0]} dropout rates for a batch of {x.shape[0]} examples")
            p = p.reshape(-1, *([1] * (x.dim() - 1)))
        elif p.dim() != 0:
            raise ShapeMismatchError(f"a dropout rate is a scalar or one per example, got shape {tuple(p.shape)}")
        keep = 1.0 - p
        return x * (torch.rand_like(x) < keep) / keep
