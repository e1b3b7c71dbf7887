"""Self-Tuning Networks: a user's model converted into one whose units respond to the hyperparameters.

:func:`stn` copies a model and replaces its ``torch.nn.Linear`` and ``torch.nn.Conv2d`` layers by STN layers
(:mod:`nestopt.bestresponse.layers`, elementary weights copied) and, for a :class:`~nestopt.hparams.Dropout`
family, its ``torch.nn.Dropout`` layers by dropout whose rate is a hyperparameter. The model's own
``forward`` is kept: the converted model's ``forward(x, hparams)`` builds the hyperparameter input
(:class:`~nestopt.bestresponse.HyperSpace`) and runs it with the layers reading that input.

**Delta-STN** (``delta=True``) centres the response: the layers see :math:`\\lambda - \\lambda_0`, so the
model at the centre is its base network :math:`f(x; w_0)`. Given a tree with centres (a response step of
:class:`~nestopt.hypergrad.BestResponse` with ``delta=True``) the base parameters are held fixed and, in
train mode with ``linearize=True``, the output is the first-order expansion in the response,

.. math::  f(x; w_0) + J_w f(x; w_0)\\, \\Phi\\, (\\lambda - \\lambda_0),

computed with one Jacobian-vector product (forward-mode differentiation). Given a tree without centres (a base step,
evaluation) only the base parameters are used, so a single inner optimizer steps the base parameters in one
and the response parameters in the other, as Delta-STN's two optimizers do.

References:
    MacKay, Vicol, Lorraine, Duvenaud, Grosse. Self-Tuning Networks. ICLR 2019.
    Bae, Grosse. Delta-STN: Efficient Bilevel Optimization for Neural Networks using Structured Response
    Jacobians. NeurIPS 2020.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor
from torch.func import functional_call

from nestopt.bestresponse.layers import RESPONSE_PARAMETERS, Context, HyperDropout, StnConv2d, StnLinear
from nestopt.bestresponse.model import BestResponseModel, parameter_shapes
from nestopt.bestresponse.space import HyperSpace
from nestopt.errors import InvalidArgumentError, UnsupportedError
from nestopt.hparams.base import Family
from nestopt.hparams.dropout import Dropout
from nestopt.tree import Tree

__all__ = ["STN", "stn"]

_STN_LAYERS = (StnLinear, StnConv2d)


class STN(BestResponseModel):
    """A model converted by :func:`stn`: ``forward(x, hparams)`` with the converted network as ``net``.

    Attributes:
        net: the converted copy of the user's model.
        space: the hyperparameters it conditions on.
        delta: whether it is centred (Delta-STN).
        linearize: whether a centred model's response step is linearized (train mode).
    """

    def __init__(self, net: torch.nn.Module, space: HyperSpace, context: Context, *, delta: bool, linearize: bool,
                 base_shapes: dict[str, torch.Size]) -> None:  # fmt: skip
        super().__init__()
        self.net, self.space, self.context = net, space, context
        self.delta, self.linearize = bool(delta), bool(linearize)
        self.base_shapes = base_shapes

    def response_parameter_names(self) -> list[str]:
        """The names (in this model) of the response parameters :math:`W_h, b_h, U`; the rest are base."""
        return [f"net.{n}" for n, _ in self.net.named_parameters() if n.rsplit(".", 1)[-1] in RESPONSE_PARAMETERS]

    def forward(self, x: Tensor | None, hparams: Tree | None = None, *, weights: bool = False) -> Any:
        h = self.space.offsets(hparams) if self.delta else self.space.features(hparams)
        tree = hparams if hparams is not None else {}
        if weights:
            with self.context.use(h, tree):
                return self._weights(h, frozen=self.delta and h is not None)
        if not self.delta or h is None:
            with self.context.use(h, tree):
                return self.net(x)
        # a centred response step: the base parameters held fixed
        base = {
            n: p.detach() for n, p in self.net.named_parameters() if n.rsplit(".", 1)[-1] not in RESPONSE_PARAMETERS
        }

        def run(d: Tensor) -> Tensor:
            with self.context.use(d, tree):
                return functional_call(self.net, base, (x,), strict=False)

        if not (self.training and self.linearize):
            return run(h)
        with fwAD.dual_level():  # forward mode, as torch.func.jvp, but buffers may be updated in place
            out, tangent = fwAD.unpack_dual(run(fwAD.make_dual(torch.zeros_like(h), h)))
        return out if tangent is None else out + tangent

    def _weights(self, h: Tensor | None, *, frozen: bool) -> Tree:
        """The original network's parameters as the response computes with them (see :meth:`StnLinear.effective`)."""
        out: Tree = {}
        stn_paths = {p for p, m in self.net.named_modules() if isinstance(m, _STN_LAYERS)}
        for path, module in self.net.named_modules():
            prefix = f"{path}." if path else ""
            if isinstance(module, _STN_LAYERS):
                w, b = module.effective(h, freeze_base=frozen)
                out[prefix + "weight"] = w
                if b is not None:
                    out[prefix + "bias"] = b
            elif path not in stn_paths:
                for name, p in module.named_parameters(recurse=False):
                    out[prefix + name] = p.detach() if frozen else p
        return out


def stn(
    model: torch.nn.Module,
    families: Sequence[Family] | Family,
    *,
    delta: bool = False,
    linearize: bool = True,
    init_std: float | None = None,
    seed: int = 0,
) -> STN:
    """Convert ``model`` into a Self-Tuning Network conditioned on ``families`` (see the module docstring).

    Args:
        model: the network (left unchanged: a converted copy is returned).
        families: the hyperparameter families to condition on; a :class:`~nestopt.hparams.Dropout` family
            names ``torch.nn.Dropout`` layers of ``model``, which become layers reading their rates.
        delta: build a centred Delta-STN (use it with ``hypergrad.BestResponse(delta=True)``).
        linearize: for a Delta-STN, linearize the response in training steps.
        init_std: the standard deviation of the gates' initialization :math:`U` (default 0.01 for an STN, as
            in its paper, 0 for a Delta-STN, as in its code).
        seed: seeds the initialization of the response weights.

    Returns:
        An :class:`STN`; train it with ``hypergrad.BestResponse`` and pass ``model.families`` to the trainer.

    Raises:
        UnsupportedError: the model has no ``torch.nn.Linear`` or ``torch.nn.Conv2d`` layer, or a family the
            response cannot condition on.
        InvalidArgumentError: a Dropout family names a layer that is not a ``torch.nn.Dropout`` of the model.

    Example:
        >>> import torch
        >>> from nestopt import bestresponse, hparams
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(), torch.nn.Linear(8, 2))
        >>> model = bestresponse.stn(net, [hparams.Dropout(net, init=0.1)])
        >>> h = {k: v for f in model.families for k, v in f.initial().items()}
        >>> model(torch.randn(3, 4), h).shape
        torch.Size([3, 2])
        >>> type(model.net[0]).__name__, type(model.net[2]).__name__
        ('StnLinear', 'HyperDropout')
    """
    if not isinstance(model, torch.nn.Module):
        raise InvalidArgumentError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    space = HyperSpace([families] if isinstance(families, Family) else list(families))
    std = (0.0 if delta else 0.01) if init_std is None else init_std
    net = copy.deepcopy(model)
    context = Context()
    gen = torch.Generator().manual_seed(seed)
    dropouts = {layer: f for f in space.families if isinstance(f, Dropout) for layer in f.layers}
    modules = dict(net.named_modules())
    for layer in dropouts:
        if not isinstance(modules.get(layer), torch.nn.Dropout):
            found = [n for n, m in modules.items() if isinstance(m, torch.nn.Dropout)]
            raise InvalidArgumentError(
                f"the Dropout family names layer {layer!r}, which is not a torch.nn.Dropout of the model "
                f"(its dropout layers: {found})"
            )
    converted = 0
    for name, module in list(net.named_modules()):
        new: torch.nn.Module | None = None
        if isinstance(module, torch.nn.Linear):
            new = StnLinear.from_module(module, space.size, init_std=std, generator=gen)
        elif isinstance(module, torch.nn.Conv2d):
            new = StnConv2d.from_module(module, space.size, init_std=std, generator=gen)
        elif name in dropouts:
            new = HyperDropout(dropouts[name], name, context)
        if new is None:
            continue
        converted += isinstance(new, _STN_LAYERS)
        new.context = context  # type: ignore[assignment]
        net = _replace(net, name, new)
    if not converted:
        raise UnsupportedError(
            f"the model ({type(model).__name__}) has no layer the converter can turn into an STN layer: it "
            "converts torch.nn.Linear and torch.nn.Conv2d"
        )
    return STN(net, space, context, delta=delta, linearize=linearize, base_shapes=parameter_shapes(model))


def _replace(root: torch.nn.Module, name: str, new: torch.nn.Module) -> torch.nn.Module:
    """``root`` with its submodule ``name`` replaced by ``new`` (``new`` itself for the root)."""
    if not name:
        return new
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)
    return root
