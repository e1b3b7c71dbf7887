"""Input convex neural networks (Amos, Xu and Kolter, 2017) and their gradients.

.. math::

    z_1 = \\sigma(A_0 x + b_0), \\qquad
    z_{l+1} = \\sigma(W_l z_l + A_l x + b_l), \\qquad
    \\psi(x) = w_L^\\top z_L + a_L^\\top x + b_L,

with **non-negative** hidden-to-hidden weights :math:`W_l \\ge 0`, :math:`w_L \\ge 0`, unconstrained direct input
skips :math:`A_l x`, and a **convex, non-decreasing** activation :math:`\\sigma` (softplus or ReLU). A non-negative
combination of convex functions is convex and a convex non-decreasing function of a convex function is convex,
so :math:`\\psi` is convex in :math:`x` and :meth:`ICNN.gradient` :math:`= \\nabla\\psi` is a monotone field.

**The non-negativity rule is a reparameterization:** each constrained weight is stored as an unconstrained
parameter :math:`U` and used as :math:`W = \\mathrm{softplus}(U) > 0`. The constraint then holds for any
parameter values, after any optimizer step, with no projection to remember. (The original paper instead clamps
negative entries to zero after every step; that needs a hook into the training loop and breaks functional
updates, so it is not used here.)

Reference: B. Amos, L. Xu and J. Z. Kolter, "Input Convex Neural Networks", ICML 2017.

Example:
    >>> import torch
    >>> from nestopt.jacobian import ICNN
    >>> net = ICNN(2, hidden=(8, 8), generator=torch.Generator().manual_seed(0))
    >>> x = torch.randn(5, 2)
    >>> net(x).shape, net.gradient(x).shape
    (torch.Size([5]), torch.Size([5, 2]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nestopt.jacobian._nets import activation_fn, check_dim, check_points, check_widths, seeded_linear

__all__ = ["ICNN"]

_ACTIVATIONS = ("softplus", "relu")


def _inverse_softplus(y: Tensor) -> Tensor:
    return y + torch.log(-torch.expm1(-y))


class ICNN(nn.Module):
    """A fully input convex network :math:`\\psi : \\mathbb{R}^d \\to \\mathbb{R}` (see the module docstring).

    Args:
        dim: input dimension :math:`d`.
        hidden: width (an int: one hidden layer) or widths of the hidden layers.
        activation: ``"softplus"`` (default; smooth, so :math:`\\nabla\\psi` is continuous) or ``"relu"``.
        generator: seeds the initial weights.

    Example:
        >>> net = ICNN(3, hidden=16)
        >>> sum(p.numel() for p in net.parameters())  # A_0, b_0 (16*3 + 16), w_1 (16), a_1, b_1 (3 + 1)
        84
    """

    def __init__(
        self,
        dim: int,
        hidden: int | Sequence[int] = 32,
        *,
        activation: str = "softplus",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_dim(dim)
        self.widths = check_widths(hidden)
        self.activation = activation
        self._act = activation_fn(activation, _ACTIVATIONS)
        # Direct input skips A_l x + b_l into every hidden layer and the output.
        self.skips = nn.ModuleList(seeded_linear(dim, w, generator) for w in (*self.widths, 1))
        # Unconstrained parameters U_l of the non-negative weights softplus(U_l): hidden-to-hidden and output.
        raws = []
        for fan_in, fan_out in zip(self.widths, (*self.widths[1:], 1)):
            init = torch.empty(fan_out, fan_in).uniform_(0.05, 1.0, generator=generator) / math.sqrt(fan_in)
            raws.append(nn.Parameter(_inverse_softplus(init)))
        self.raw_weights = nn.ParameterList(raws)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, hidden={self.widths}, activation={self.activation!r}"

    def _check_input(self, x: Tensor, name: str = "x") -> Tensor:
        return check_points(x, self.dim, "ICNN", name, like=next(self.parameters()))

    def nonnegative_weights(self) -> list[Tensor]:
        """The constrained weights :math:`W_1, \\dots, W_{L-1}, w_L` as used, all entrywise positive."""
        return [nn.functional.softplus(u) for u in self.raw_weights]

    def _psi(self, x: Tensor) -> Tensor:
        weights = self.nonnegative_weights()
        z = self._act(self.skips[0](x))
        for skip, w in zip(self.skips[1:-1], weights[:-1]):
            z = self._act(z @ w.T + skip(x))
        return (z @ weights[-1].T + self.skips[-1](x)).squeeze(-1)

    def forward(self, x: Tensor) -> Tensor:
        """:math:`\\psi(x)`, convex in ``x``; shape ``(...)`` for ``x`` of shape ``(..., d)``."""
        return self._psi(self._check_input(x))

    def gradient(self, x: Tensor) -> Tensor:
        """:math:`\\nabla\\psi(x)`, shape ``(..., d)``; differentiable in the parameters (for training)."""
        x = self._check_input(x)
        flat = x.reshape(-1, self.dim)
        return torch.func.vmap(torch.func.grad(self._psi))(flat).reshape(x.shape)
