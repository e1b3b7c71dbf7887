"""STN layers: linear and convolutional layers whose units are gated by an affine map of the hyperparameters.

For a layer with ``D`` outputs and a hyperparameter input :math:`h \\in \\mathbb R^H` (one per example or
one per batch), with :math:`g = U h \\in \\mathbb R^{2D}`:

.. math::  o = s\\,(W_e x + b_e) + g_{1:D} \\odot (W_h x) + g_{D+1:2D} \\odot b_h

:math:`W_e, b_e, s` are the elementary (base) parameters, :math:`W_h, b_h, U` the response; :math:`U` starts
near zero and :math:`s` at one, so a fresh layer computes its base layer. The cost is two matrix products
per layer (and the small :math:`U h`). The layer is the weight :math:`W(h) = s W_e + \\mathrm{diag}(g_{1:D}) W_h`
(:meth:`StnLinear.effective`), a best response that is affine in :math:`h` per output unit.

Inside an STN model the layers read :math:`h` from a context the model sets for each call (``h=None``:
the base layer alone, as a centred model at its centre); standalone, pass ``h`` to :meth:`forward`.
:class:`HyperDropout` reads its rate from the same context.

References:
    MacKay, Vicol, Lorraine, Duvenaud, Grosse. Self-Tuning Networks. ICLR 2019 (section 4.2).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

from nestopt._validate import nonnegative, positive_int
from nestopt.errors import ShapeMismatchError, UnsupportedError
from nestopt.hparams.dropout import Dropout
from nestopt.tree import Tree

__all__ = ["RESPONSE_PARAMETERS", "Context", "HyperDropout", "StnConv2d", "StnLinear"]

RESPONSE_PARAMETERS = ("response_weight", "response_bias", "hyper")
"""The names of an STN layer's response parameters (the rest are elementary)."""


class Context:
    """What an STN model hands its layers for one call: the hyperparameter input and the tree."""

    def __init__(self) -> None:
        self.h: Tensor | None = None
        self.hparams: Tree = {}

    @contextmanager
    def use(self, h: Tensor | None, hparams: Tree) -> Iterator[None]:
        old = (self.h, self.hparams)
        self.h, self.hparams = h, hparams
        try:
            yield
        finally:
            self.h, self.hparams = old


class _StnLayer(torch.nn.Module):
    """The gating shared by :class:`StnLinear` and :class:`StnConv2d`."""

    weight: torch.nn.Parameter
    bias: torch.nn.Parameter | None
    response_weight: torch.nn.Parameter
    response_bias: torch.nn.Parameter | None

    def _setup(self, weight_shape: tuple[int, ...], bias: bool, num_hparams: int, init_std: float) -> None:
        self.num_hparams = positive_int("num_hparams", num_hparams)
        self.init_std = nonnegative("init_std", init_std)
        self.out_units = weight_shape[0]
        self.weight = torch.nn.Parameter(torch.empty(weight_shape))
        self.response_weight = torch.nn.Parameter(torch.empty(weight_shape))
        self.bias = torch.nn.Parameter(torch.empty(self.out_units)) if bias else None
        self.response_bias = torch.nn.Parameter(torch.empty(self.out_units)) if bias else None
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.hyper = torch.nn.Parameter(torch.empty(self.out_units * (2 if bias else 1), num_hparams))
        self.context = Context()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """torch's default initialization of both weights and biases, ``s = 1``, ``U ~ N(0, init_std^2)``."""
        with torch.no_grad():
            fan_in = self.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            for w in (self.weight, self.response_weight):  # kaiming_uniform_(a=sqrt(5)), as torch.nn.Linear
                w.uniform_(-bound, bound, generator=generator)
            for b in (self.bias, self.response_bias):
                if b is not None:
                    b.uniform_(-bound, bound, generator=generator)
            self.scale.fill_(1.0)
            self.hyper.normal_(0.0, self.init_std, generator=generator) if self.init_std > 0 else self.hyper.zero_()

    def _gates(self, h: Tensor) -> tuple[Tensor, Tensor | None]:
        """:math:`g = U h` split into the weight gates and the bias gates, each ``(..., D)``."""
        if h.shape[-1] != self.num_hparams:
            raise ShapeMismatchError(
                f"{type(self).__name__} takes {self.num_hparams} hyperparameters, got h of shape {tuple(h.shape)}"
            )
        g = F.linear(h, self.hyper)
        return g[..., : self.out_units], (g[..., self.out_units :] if self.bias is not None else None)

    def effective(self, h: Tensor | None, *, freeze_base: bool = False) -> tuple[Tensor, Tensor | None]:
        """The weight and bias the layer computes with at ``h`` (the batch's mean for one ``h`` per example):
        :math:`W(h) = s W_e + \\mathrm{diag}(g) W_h`, :math:`b(h) = s b_e + g' \\odot b_h`. With ``freeze_base``
        the elementary parameters are detached."""
        s: Tensor = self.scale
        w: Tensor = self.weight
        b: Tensor | None = self.bias
        if freeze_base:
            s, w, b = s.detach(), w.detach(), None if b is None else b.detach()
        weight, bias = s * w, None if b is None else s * b
        if h is None:
            return weight, bias
        gw, gb = self._gates(h.mean(0) if h.dim() == 2 else h)
        weight = weight + gw.reshape(-1, *([1] * (w.dim() - 1))) * self.response_weight
        if bias is not None and gb is not None and self.response_bias is not None:
            bias = bias + gb * self.response_bias
        return weight, bias

    def _copy_weights(self, module: torch.nn.Linear | torch.nn.Conv2d) -> None:
        """Take ``module``'s device, dtype, weight and bias as the elementary weights."""
        self.to(device=module.weight.device, dtype=module.weight.dtype)
        with torch.no_grad():
            self.weight.copy_(module.weight)
            if module.bias is not None and self.bias is not None:
                self.bias.copy_(module.bias)


class StnLinear(_StnLayer):
    """An STN version of ``torch.nn.Linear`` (see the module docstring).

    Args:
        in_features, out_features, bias: as for ``torch.nn.Linear``.
        num_hparams: :math:`H`, the size of the hyperparameter input.
        init_std: the standard deviation of :math:`U`'s initialization (0: zeros; paper: 0.01).
        generator: the random generator of the initialization.

    Example:
        >>> import torch
        >>> from nestopt.bestresponse import StnLinear
        >>> base = torch.nn.Linear(4, 3)
        >>> layer = StnLinear.from_module(base, num_hparams=2, init_std=0.0)   # U = 0
        >>> x, h = torch.randn(5, 4), torch.randn(5, 2)
        >>> torch.allclose(layer(x, h), base(x))
        True
    """

    def __init__(
        self, in_features: int, out_features: int, num_hparams: int, *, bias: bool = True, init_std: float = 0.01,
        generator: torch.Generator | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.in_features, self.out_features = (
            positive_int("in_features", in_features),
            positive_int("out_features", out_features),
        )
        self._setup((out_features, in_features), bias, num_hparams, init_std)
        self.reset_parameters(generator)

    @classmethod
    def from_module(
        cls,
        module: torch.nn.Linear,
        num_hparams: int,
        *,
        init_std: float = 0.01,
        generator: torch.Generator | None = None,
    ) -> StnLinear:
        """An STN layer whose elementary weights are ``module``'s (copied), on its device and dtype."""
        layer = cls(module.in_features, module.out_features, num_hparams, bias=module.bias is not None,
                    init_std=init_std, generator=generator)  # fmt: skip
        layer._copy_weights(module)
        return layer

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        h = self.context.h if h is None else h
        base = F.linear(x, self.weight, self.bias)
        if h is None:
            return self.scale * base
        gw, gb = self._gates(h)
        if h.dim() == 2 and x.dim() != 2:  # one input per example, against (B, ..., D) outputs
            if x.dim() < 2 or x.shape[0] != h.shape[0]:
                raise ShapeMismatchError(f"{h.shape[0]} hyperparameter inputs for inputs of shape {tuple(x.shape)}")
            shape = (h.shape[0],) + (1,) * (x.dim() - 2) + (self.out_features,)
            gw, gb = gw.reshape(shape), None if gb is None else gb.reshape(shape)
        out = self.scale * base + gw * F.linear(x, self.response_weight)
        if gb is not None and self.response_bias is not None:
            out = out + gb * self.response_bias
        return out

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, num_hparams={self.num_hparams}, bias={self.bias is not None}"


class StnConv2d(_StnLayer):
    """An STN version of ``torch.nn.Conv2d``: each output channel gated (see the module docstring).

    Build it from a convolution with :meth:`from_module` (stride, padding, dilation and groups are kept;
    only ``padding_mode="zeros"`` is supported).

    Example:
        >>> import torch
        >>> from nestopt.bestresponse import StnConv2d
        >>> base = torch.nn.Conv2d(3, 4, 3, padding=1)
        >>> layer = StnConv2d.from_module(base, num_hparams=2, init_std=0.0)
        >>> x = torch.randn(2, 3, 8, 8)
        >>> torch.allclose(layer(x, torch.randn(2, 2)), base(x), atol=1e-6)
        True
    """

    def __init__(self, conv: torch.nn.Conv2d, num_hparams: int, *, init_std: float = 0.01,
                 generator: torch.Generator | None = None) -> None:  # fmt: skip
        super().__init__()
        if conv.padding_mode != "zeros":
            raise UnsupportedError(f"StnConv2d supports padding_mode='zeros' only, got {conv.padding_mode!r}")
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self._setup(tuple(conv.weight.shape), conv.bias is not None, num_hparams, init_std)
        self.reset_parameters(generator)

    @classmethod
    def from_module(
        cls,
        module: torch.nn.Conv2d,
        num_hparams: int,
        *,
        init_std: float = 0.01,
        generator: torch.Generator | None = None,
    ) -> StnConv2d:
        """An STN layer whose elementary weights are ``module``'s (copied), on its device and dtype."""
        layer = cls(module, num_hparams, init_std=init_std, generator=generator)
        layer._copy_weights(module)
        return layer

    def _conv(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        h = self.context.h if h is None else h
        base = self._conv(x, self.weight, self.bias)
        if h is None:
            return self.scale * base
        gw, gb = self._gates(h)
        out = self.scale * base + gw[..., None, None] * self._conv(x, self.response_weight, None)
        if gb is not None and self.response_bias is not None:
            out = out + (gb * self.response_bias)[..., None, None]
        return out


class HyperDropout(torch.nn.Module):
    """Dropout whose rate is a hyperparameter: read from an STN model's context (one rate per example when the
    strategy perturbs it per example); the identity in eval mode."""

    def __init__(self, family: Dropout, layer: str, context: Context) -> None:
        super().__init__()
        self.family, self.layer, self.context = family, layer, context

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        return Dropout.drop(x, self.family.rate(self.context.hparams, self.layer))

    def extra_repr(self) -> str:
        return f"rate={self.family.key(self.layer)!r}"
