"""Hypernetworks: modules that map a hyperparameter input :math:`h \\in \\mathbb R^H` to a weight vector.

================================  ==========================================================  =================
module                            :math:`w_\\phi(h)`                                            parameters
================================  ==========================================================  =================
:class:`LinearHypernet`           :math:`w_0 + A h`                                             :math:`P(H + 1)`
:class:`FactorizedHypernet`       :math:`w_0 + B (C h)`, a bottleneck of ``rank`` linear units  :math:`P + r(P + H)`
:class:`MLPHypernet`              :math:`w_0 + B \\tanh(C h + c)`                               :math:`P + r(P + H + 1)`
================================  ==========================================================  =================

Each starts at :math:`w_\\phi(h) = w_0` for every :math:`h` (its output layer is zero), :math:`w_0` being the
weights of the network it generates; the random input layers are drawn from a generator. A factorized
hypernetwork makes thousands of hyperparameters (one L2 decay per weight) affordable: its cost is linear in
:math:`P` and :math:`H`. Any ``torch.nn.Module`` mapping ``(H,)`` to ``(P,)`` can serve instead.

References:
    Lorraine, Duvenaud. Stochastic Hyperparameter Optimization through Hypernetworks. 2017.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nestopt._validate import positive_int
from nestopt.errors import ShapeMismatchError

__all__ = ["FactorizedHypernet", "LinearHypernet", "MLPHypernet"]


class _Hypernet(torch.nn.Module):
    def __init__(self, num_hparams: int, init_weights: Tensor) -> None:
        super().__init__()
        self.num_hparams = positive_int("num_hparams", num_hparams)
        if init_weights.dim() != 1:
            raise ShapeMismatchError(f"init_weights must be a flat vector, got shape {tuple(init_weights.shape)}")
        self.base = torch.nn.Parameter(init_weights.detach().clone())

    @property
    def num_weights(self) -> int:
        return self.base.numel()

    def _check(self, h: Tensor) -> None:
        if h.shape != (self.num_hparams,):
            raise ShapeMismatchError(
                f"{type(self).__name__} maps {self.num_hparams} hyperparameters (one set per batch), got {tuple(h.shape)}"
            )


class LinearHypernet(_Hypernet):
    """A full linear hypernetwork :math:`w = w_0 + A h`; :attr:`slope` is :math:`A = dw/dh`.

    Example:
        >>> import torch
        >>> from nestopt.bestresponse import LinearHypernet
        >>> hnet = LinearHypernet(2, torch.zeros(5))
        >>> hnet(torch.ones(2)).shape, float(hnet(torch.ones(2)).detach().abs().sum())
        (torch.Size([5]), 0.0)
    """

    def __init__(self, num_hparams: int, init_weights: Tensor) -> None:
        super().__init__(num_hparams, init_weights)
        self.slope = torch.nn.Parameter(init_weights.new_zeros(init_weights.numel(), num_hparams))

    def forward(self, h: Tensor) -> Tensor:
        self._check(h)
        return self.base + self.slope @ h


class FactorizedHypernet(_Hypernet):
    """A factorized linear hypernetwork :math:`w = w_0 + B (C h)` through ``rank`` linear units.

    :math:`C` is drawn with unit-variance outputs for unit-variance inputs, :math:`B` starts at zero.

    Example:
        >>> import torch
        >>> from nestopt.bestresponse import FactorizedHypernet
        >>> hnet = FactorizedHypernet(1000, torch.zeros(1000), rank=4)
        >>> sum(p.numel() for p in hnet.parameters())   # 1000 + 4 * (1000 + 1000)
        9000
    """

    def __init__(
        self, num_hparams: int, init_weights: Tensor, *, rank: int = 4, generator: torch.Generator | None = None
    ) -> None:
        super().__init__(num_hparams, init_weights)
        self.rank = positive_int("rank", rank)
        c = torch.randn(rank, num_hparams, generator=generator, dtype=init_weights.dtype) / math.sqrt(num_hparams)
        self.down = torch.nn.Parameter(c.to(init_weights.device))
        self.up = torch.nn.Parameter(init_weights.new_zeros(init_weights.numel(), rank))

    def forward(self, h: Tensor) -> Tensor:
        self._check(h)
        return self.base + self.up @ (self.down @ h)


class MLPHypernet(_Hypernet):
    """A one-hidden-layer hypernetwork :math:`w = w_0 + B \\tanh(C h + c)`, for a nonlinear (global) response.

    Example:
        >>> import torch
        >>> from nestopt.bestresponse import MLPHypernet
        >>> MLPHypernet(1, torch.zeros(3), hidden=8)(torch.zeros(1)).shape
        torch.Size([3])
    """

    def __init__(
        self, num_hparams: int, init_weights: Tensor, *, hidden: int = 32, generator: torch.Generator | None = None
    ) -> None:
        super().__init__(num_hparams, init_weights)
        self.hidden = positive_int("hidden", hidden)
        lin = torch.nn.Linear(num_hparams, hidden)
        with torch.no_grad():  # torch.nn.Linear's initialization, from the generator
            bound = 1.0 / math.sqrt(num_hparams)
            lin.weight.uniform_(-bound, bound, generator=generator)
            lin.bias.uniform_(-bound, bound, generator=generator)
        self.inner = lin.to(device=init_weights.device, dtype=init_weights.dtype)
        self.up = torch.nn.Parameter(init_weights.new_zeros(init_weights.numel(), hidden))

    def forward(self, h: Tensor) -> Tensor:
        self._check(h)
        return self.base + self.up @ torch.tanh(self.inner(h))
