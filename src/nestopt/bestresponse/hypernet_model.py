"""Hypernetwork-backed models: the weights of a network generated from its hyperparameters.

:func:`hypernet` wraps a network :math:`f(x; w)` into the best-response model :math:`f(x; w_\\phi(\\lambda))`,
whose parameters are the hypernetwork's :math:`\\phi` (:mod:`nestopt.bestresponse.hypernets`). The
hypernetwork sees :math:`\\lambda - \\lambda_{init}` (a fixed shift by the initial hyperparameters, which only
conditions the fit) and generates one set of weights per batch, so it is trained with one perturbation per
batch (``hypergrad.BestResponse(per_example=False)``). :func:`hypernet_strategy` builds the three training
schemes of Lorraine & Duvenaud (2017):

``"global"``
    train :math:`\\phi` on hyperparameters drawn from a fixed distribution :math:`p(\\lambda)` (uniform in a
    box of the unconstrained space), and descend :math:`\\hat\\lambda` through the response;
``"local"``
    draw :math:`\\lambda \\sim N(\\hat\\lambda, \\sigma^2 I)` for each training step, alternating one
    :math:`\\phi` step on a training batch and one :math:`\\hat\\lambda` step on a validation batch;
``"simplified"``
    train :math:`\\phi` at :math:`\\hat\\lambda` itself (no sampling).

References:
    Lorraine, Duvenaud. Stochastic Hyperparameter Optimization through Hypernetworks. 2017.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torch.func import functional_call

from nestopt._validate import one_of, real
from nestopt.bestresponse.hypernets import FactorizedHypernet, LinearHypernet, MLPHypernet
from nestopt.bestresponse.model import BestResponseModel, parameter_shapes
from nestopt.bestresponse.space import HyperSpace
from nestopt.errors import InvalidArgumentError, ShapeMismatchError, UnsupportedError
from nestopt.hparams.base import Family
from nestopt.hypergrad.best_response import BestResponse
from nestopt.tree import Tree

__all__ = ["Hypernet", "UniformPrior", "hypernet", "hypernet_strategy"]

Kind = Literal["linear", "factorized", "mlp"]


class Hypernet(BestResponseModel):
    """A network whose weights a hypernetwork generates from the hyperparameters (see :func:`hypernet`).

    Attributes:
        hypernet: the module :math:`h \\mapsto w` (its parameters are this model's).
        space: the hyperparameters it conditions on.
    """

    origin: Tensor

    def __init__(self, model: torch.nn.Module, space: HyperSpace, hnet: torch.nn.Module, origin: Tensor) -> None:
        super().__init__()
        self.space, self.hypernet = space, hnet
        self.base_shapes = parameter_shapes(model)
        self._sizes = [s.numel() for s in self.base_shapes.values()]
        self._model = [model]  # the generated network: not a submodule (its own weights are never used)
        self.register_buffer("origin", origin)

    @property
    def network(self) -> torch.nn.Module:
        """The network whose weights are generated."""
        return self._model[0]

    def forward(self, x: Tensor | None, hparams: Tree | None = None, *, weights: bool = False) -> Any:
        h = self.space.features(hparams)
        if h.dim() == 2:
            raise UnsupportedError(
                "a hypernetwork generates one set of weights per batch, but the hyperparameters carry one value "
                "per example: use hypergrad.BestResponse(per_example=False) (or bestresponse.hypernet_strategy)"
            )
        flat = self.hypernet(h - self.origin)
        size = sum(self._sizes)
        if flat.shape != (size,):
            raise ShapeMismatchError(
                f"the hypernetwork returned shape {tuple(flat.shape)}; the network has {size} weights"
            )
        pieces = flat.split(self._sizes)
        w = {k: t.reshape(s) for (k, s), t in zip(self.base_shapes.items(), pieces)}
        if weights:
            return w
        net = self.network
        net.train(self.training)
        return functional_call(net, w, (x,))


def hypernet(
    model: torch.nn.Module,
    families: Sequence[Family] | Family,
    kind: Kind | torch.nn.Module = "linear",
    *,
    rank: int = 4,
    hidden: int = 32,
    seed: int = 0,
) -> Hypernet:
    """A hypernetwork-backed best-response model of ``model`` conditioned on ``families``.

    Args:
        model: the network whose trainable parameters are generated (a copy is kept; buffers such as BatchNorm
            statistics are not supported: use :func:`nestopt.bestresponse.stn`).
        families: the hyperparameter families to condition on (see :class:`~nestopt.bestresponse.HyperSpace`).
        kind: ``"linear"`` (:class:`LinearHypernet`), ``"factorized"`` (:class:`FactorizedHypernet`, ``rank``
            units), ``"mlp"`` (:class:`MLPHypernet`, ``hidden`` units), or a module mapping ``(H,)`` to the
            flat weights ``(P,)``. The built-in ones start at ``model``'s weights.
        rank: the factorized hypernetwork's bottleneck.
        hidden: the MLP hypernetwork's hidden units.
        seed: seeds the hypernetwork's random initialization.

    Example:
        >>> import torch
        >>> from nestopt import bestresponse, hparams
        >>> net = torch.nn.Linear(3, 1, bias=False)
        >>> model = bestresponse.hypernet(net, [hparams.WeightDecay(net, per="global")])
        >>> h = {"weight_decay/global": torch.tensor(-2.0)}
        >>> torch.allclose(model(torch.ones(2, 3), h), net(torch.ones(2, 3)))   # it starts at the network
        True
    """
    if not isinstance(model, torch.nn.Module):
        raise InvalidArgumentError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if any(True for _ in model.buffers()):
        raise UnsupportedError(
            f"a hypernetwork-backed model cannot carry buffers ({type(model).__name__} has "
            f"{[n for n, _ in model.named_buffers()]}); use bestresponse.stn for models with BatchNorm"
        )
    space = HyperSpace([families] if isinstance(families, Family) else list(families))
    net = copy.deepcopy(model)
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise UnsupportedError(f"the model ({type(model).__name__}) has no trainable parameter to generate")
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    gen = torch.Generator().manual_seed(seed)
    hnet: torch.nn.Module
    if isinstance(kind, torch.nn.Module):
        hnet = kind
    else:
        one_of("kind", kind, ("linear", "factorized", "mlp"))
        if kind == "linear":
            hnet = LinearHypernet(space.size, flat)
        elif kind == "factorized":
            hnet = FactorizedHypernet(space.size, flat, rank=rank, generator=gen)
        else:
            hnet = MLPHypernet(space.size, flat, hidden=hidden, generator=gen)
    init = {k: v.to(flat.dtype) for f in space.families for k, v in f.initial().items()}
    return Hypernet(net, space, hnet, space.features(init).to(flat.device))


class UniformPrior:
    """Draws every hyperparameter uniformly from ``[low, high]`` in its unconstrained space (from torch's
    global generator, which the training loop seeds): the fixed distribution of a *global* hypernetwork.

    Args:
        bounds: ``key -> (low, high)`` for every hyperparameter key, or one ``(low, high)`` for all.
    """

    def __init__(self, bounds: Mapping[str, tuple[float, float]] | tuple[float, float]) -> None:
        items = bounds.items() if isinstance(bounds, Mapping) else [("*", bounds)]
        self.bounds: dict[str, tuple[float, float]] = {}
        for k, pair in items:
            low, high = (real(f"bounds[{k!r}]", v) for v in pair)
            if not low < high:
                raise InvalidArgumentError(f"bounds[{k!r}] must have low < high, got {pair!r}")
            self.bounds[k] = (low, high)

    def __call__(self, values: Tree) -> Tree:
        out: Tree = {}
        for k, v in values.items():
            low, high = self.bounds.get(k, self.bounds.get("*", (math.nan, math.nan)))
            if math.isnan(low):
                raise InvalidArgumentError(f"UniformPrior has no bounds for {k!r} (it has {sorted(self.bounds)})")
            out[k] = low + (high - low) * torch.rand_like(v)
        return out

    def __repr__(self) -> str:
        return f"UniformPrior({self.bounds})"


def hypernet_strategy(
    variant: Literal["global", "local", "simplified"] = "local",
    *,
    scale: float = 0.5,
    prior: Mapping[str, tuple[float, float]] | tuple[float, float] | None = None,
    warmup: int = 0,
) -> BestResponse:
    """The hypernetwork training schemes of Lorraine & Duvenaud (2017) as a :class:`~nestopt.hypergrad.BestResponse`
    strategy: one response step per hyperparameter step, one perturbation per batch, a fixed scale and no
    entropy term (see the module docstring).

    Args:
        variant: ``"global"``, ``"local"`` or ``"simplified"``.
        scale: :math:`\\sigma` of the local variant.
        prior: the global variant's box (:class:`UniformPrior`).
        warmup: training steps before the first hyperparameter step (the global variant's first phase).

    Example:
        >>> from nestopt import bestresponse
        >>> s = bestresponse.hypernet_strategy("local", scale=0.5)
        >>> s.scale, s.learn_scale, s.train_steps, s.val_steps, s.per_example
        (0.5, False, 1, 1, False)
    """
    one_of("variant", variant, ("global", "local", "simplified"))
    common: dict[str, Any] = {"learn_scale": False, "entropy_weight": 0.0, "train_steps": 1, "val_steps": 1,
                              "warmup": warmup, "per_example": False}  # fmt: skip
    if variant == "global":
        if prior is None:
            raise InvalidArgumentError("the global variant draws from a prior: pass prior=(low, high) or per key")
        return BestResponse(scale=None, sample=UniformPrior(prior), **common)
    if variant == "simplified":
        return BestResponse(scale=None, **common)
    return BestResponse(scale=scale, **common)
