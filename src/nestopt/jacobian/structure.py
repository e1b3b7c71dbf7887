"""The structure a JacNet puts on its Jacobian: :class:`Unconstrained`, :class:`Invertible`, :class:`Lipschitz`.

A structure is a small frozen object (a strategy, like a linear solver) that maps the raw output of the
Jacobian network to a matrix field :math:`J(x) \\in \\mathbb{R}^{d \\times d}` with a guaranteed property:

* :class:`Unconstrained` -- :math:`J = A`, any matrix.
* :class:`Invertible` ``(eps)`` -- the symmetric part of :math:`J` is at least :math:`\\varepsilon I`:
  :math:`J = \\mathrm{softplus}(a) + \\varepsilon` for :math:`d = 1` and
  :math:`J = A^\\top A + \\tfrac12 (S - S^\\top) + \\varepsilon I` for :math:`d > 1` (so that non-symmetric
  Jacobians are representable). Then :math:`v^\\top J v \\ge \\varepsilon |v|^2`: :math:`J` is non-singular,
  and a map whose Jacobian it is is strongly monotone, hence a bijection of :math:`\\mathbb{R}^d`.
* :class:`Lipschitz` ``(k)`` -- :math:`J = k \\tanh(s)\\, A / s` with :math:`s = (\\|A\\|_2^2 + \\delta)^{1/2}`
  (spectral norm, :math:`\\delta` tiny), so :math:`\\|J\\|_2 \\le k \\tanh(s) < k`; for :math:`d = 1` this is
  :math:`k \\tanh(a)`. A map whose Jacobian it is is :math:`k`-Lipschitz. (A relative margin of 16 machine
  epsilons keeps the computed norm below :math:`k` where :math:`\\tanh` rounds to 1.)

The structure is always one of these objects; strings such as ``"invertible"`` are rejected with a message
that names the class to use.

Example:
    >>> import torch
    >>> from nestopt.jacobian import Invertible, Lipschitz
    >>> raw = torch.randn(5, Invertible().raw_size(2))
    >>> J = Invertible(eps=0.1).jacobian(raw, 2)
    >>> bool(torch.linalg.eigvalsh((J + J.mT) / 2).min() >= 0.1 - 1e-6)
    True
    >>> J = Lipschitz(k=2.0).jacobian(3 * torch.randn(5, 4), 2)
    >>> bool(torch.linalg.matrix_norm(J, ord=2).max() <= 2.0)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from nestopt.errors import InvalidArgumentError

__all__ = ["Invertible", "Lipschitz", "Structure", "Unconstrained", "check_structure"]

_ROUNDING_MARGIN = 16.0
"""``Lipschitz`` scales by ``1 - 16 eps`` so that the bound holds for the rounded matrices too."""


class Structure:
    """Base class of Jacobian structures (see the module docstring)."""

    invertible: ClassVar[bool] = False
    """Whether every map with this Jacobian structure is invertible (so that ``JacNet.inverse`` is defined)."""

    def raw_size(self, dim: int) -> int:
        """How many raw numbers per point the Jacobian network must output for inputs of dimension ``dim``."""
        return dim * dim

    def jacobian(self, raw: Tensor, dim: int) -> Tensor:
        """Map raw network outputs ``(..., raw_size(dim))`` to structured Jacobians ``(..., dim, dim)``."""
        raise NotImplementedError


@dataclass(frozen=True)
class Unconstrained(Structure):
    """No structure: :math:`J(x)` is the network's output reshaped to a :math:`d \\times d` matrix."""

    def jacobian(self, raw: Tensor, dim: int) -> Tensor:
        return raw.reshape(*raw.shape[:-1], dim, dim)


def _positive(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise InvalidArgumentError(f"{what} must be a positive finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Invertible(Structure):
    """Positive-definite Jacobians: :math:`v^\\top J(x) v \\ge \\varepsilon |v|^2` for every :math:`x, v`.

    Args:
        eps: the lower bound :math:`\\varepsilon > 0` on the symmetric part of :math:`J`.
    """

    eps: float = 1e-2
    invertible: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _positive(self.eps, "Invertible(eps=...): eps")

    def raw_size(self, dim: int) -> int:
        return 1 if dim == 1 else 2 * dim * dim

    def jacobian(self, raw: Tensor, dim: int) -> Tensor:
        if dim == 1:
            return (torch.nn.functional.softplus(raw) + self.eps).unsqueeze(-1)
        lead = raw.shape[:-1]
        a = raw[..., : dim * dim].reshape(*lead, dim, dim)
        s = raw[..., dim * dim :].reshape(*lead, dim, dim)
        eye = torch.eye(dim, dtype=raw.dtype, device=raw.device)
        return a.mT @ a + 0.5 * (s - s.mT) + self.eps * eye


@dataclass(frozen=True)
class Lipschitz(Structure):
    """Jacobians with spectral norm below ``k``: :math:`\\|J(x)\\|_2 < k`, so the map is ``k``-Lipschitz.

    Args:
        k: the Lipschitz constant, positive.
    """

    k: float = 1.0

    def __post_init__(self) -> None:
        _positive(self.k, "Lipschitz(k=...): k")

    def jacobian(self, raw: Tensor, dim: int) -> Tensor:
        a = raw.reshape(*raw.shape[:-1], dim, dim)
        sigma = a[..., 0, 0].abs() if dim == 1 else torch.linalg.svdvals(a)[..., 0]
        eps = torch.finfo(raw.dtype).eps
        s = torch.sqrt(sigma**2 + eps**2)
        # tanh(s) rounds to 1 for large s; the margin keeps the computed norm at most k after rounding.
        return a * (self.k * (1.0 - _ROUNDING_MARGIN * eps) * torch.tanh(s) / s)[..., None, None]


def check_structure(structure: object) -> Structure:
    """Validate the ``structure`` argument of :class:`~nestopt.jacobian.JacNet` (``None`` is unconstrained)."""
    if structure is None:
        return Unconstrained()
    if isinstance(structure, Structure):
        return structure
    hint = ""
    if isinstance(structure, str):
        hint = " (use a structure object: Unconstrained(), Invertible(eps=1e-2) or Lipschitz(k=1.0))"
    raise InvalidArgumentError(
        f"structure must be Unconstrained(), Invertible(...) or Lipschitz(...), got {structure!r}{hint}"
    )
