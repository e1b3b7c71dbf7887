"""Gauss-Legendre integration along a segment: the path integral that turns a Jacobian field into a function.

For a Jacobian field :math:`J : \\mathbb{R}^d \\to \\mathbb{R}^{m \\times d}`, a base point :math:`x_0` and a
point :math:`x`,

.. math::

    I(x) = \\int_0^1 J\\big(x_0 + t (x - x_0)\\big) (x - x_0) \\, dt
         \\approx \\sum_{i=1}^n w_i \\, J\\big(x_0 + t_i (x - x_0)\\big) (x - x_0),

with the :math:`n`-node Gauss-Legendre rule :math:`(t_i, w_i)` mapped to :math:`[0, 1]` (exact for polynomials
in :math:`t` of degree :math:`\\le 2n - 1`). When :math:`J` is the Jacobian of :math:`f`, :math:`I(x) = f(x) -
f(x_0)`. The :math:`n` evaluations of the field are batched with ``torch.func.vmap`` over the nodes (or a plain
loop, ``vectorize="loop"``), and the result is differentiable in :math:`x`, :math:`x_0` and whatever the field
depends on. Error estimates and the choice of :math:`n` for a tolerance are in :mod:`nestopt.jacobian.adaptive`.

Example:
    >>> import torch
    >>> from nestopt.jacobian import path_integral
    >>> field = lambda z: torch.diag_embed(torch.exp(z))      # the Jacobian of exp, elementwise
    >>> x = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    >>> torch.allclose(path_integral(field, x, nodes=8), torch.exp(x) - 1)
    True
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from nestopt.errors import InvalidArgumentError, ShapeMismatchError

__all__ = [
    "Vectorize",
    "check_nodes",
    "gauss_legendre",
    "node_values",
    "path_integral",
    "path_values",
    "segment_integral",
]

Vectorize = Literal["vmap", "loop"]
"""How the integrand is evaluated at the nodes: one ``torch.func.vmap`` call, or a Python loop."""

JacobianField = Callable[[Tensor], Tensor]


def check_nodes(nodes: object, argument: str = "nodes") -> int:
    """Validate a number of quadrature nodes (an integer of at least 1) and return it."""
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise InvalidArgumentError(f"{argument} must be an integer >= 1 (Gauss-Legendre nodes), got {nodes!r}")
    return nodes


@functools.lru_cache(maxsize=64)
def _leggauss01(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    t, w = np.polynomial.legendre.leggauss(nodes)
    return (t + 1.0) / 2.0, w / 2.0


def gauss_legendre(
    nodes: int, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """Gauss-Legendre nodes and weights on :math:`[0, 1]`.

    .. math::  \\int_0^1 p(t)\\, dt = \\sum_{i=1}^n w_i\\, p(t_i) \\quad \\text{for every polynomial of degree} \\le 2n-1

    Args:
        nodes: the number of nodes :math:`n \\ge 1`.
        dtype, device: of the returned tensors (default: the default dtype, CPU).

    Returns:
        ``(t, w)``, two tensors of shape ``(nodes,)``; the weights are positive and sum to 1.

    Example:
        >>> t, w = gauss_legendre(3, dtype=torch.float64)
        >>> round(float((w * t**5).sum()), 12)  # exact: 1/6
        0.166666666667
    """
    check_nodes(nodes)
    t, w = _leggauss01(nodes)
    dtype = dtype or torch.get_default_dtype()
    return torch.as_tensor(t, dtype=dtype, device=device), torch.as_tensor(w, dtype=dtype, device=device)


def segment_integral(
    integrand: Callable[[Tensor], Tensor],
    *,
    nodes: int = 16,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    vectorize: Vectorize = "vmap",
) -> Tensor:
    """Integrate ``integrand(t)`` over :math:`t \\in [0, 1]` with the ``nodes``-point Gauss-Legendre rule.

    .. math::  \\int_0^1 h(t)\\, dt \\approx \\sum_{i=1}^n w_i\\, h(t_i)

    Args:
        integrand: maps a 0-d tensor ``t`` to a tensor (the same shape for every ``t``).
        nodes: number of Gauss-Legendre nodes (at least 1).
        dtype, device: of the nodes ``t``; they should match the tensors the integrand combines ``t`` with.
        vectorize: ``"vmap"`` evaluates all nodes in one ``torch.func.vmap`` call; ``"loop"`` one by one (for
            integrands that vmap cannot trace).

    Returns:
        The weighted sum, shaped like ``integrand(t)``.

    Example:
        >>> segment_integral(lambda t: torch.stack([t**2, torch.cos(t)]), nodes=6, dtype=torch.float64)
        tensor([0.3333, 0.8415], dtype=torch.float64)
    """
    values = node_values(integrand, nodes=nodes, dtype=dtype, device=device, vectorize=vectorize)
    return torch.tensordot(gauss_legendre(nodes, dtype=values.dtype, device=values.device)[1], values, dims=1)


def node_values(
    integrand: Callable[[Tensor], Tensor],
    *,
    nodes: int,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    vectorize: Vectorize = "vmap",
) -> Tensor:
    """``integrand`` at the ``nodes`` Gauss-Legendre nodes on :math:`[0, 1]`, stacked: shape ``(nodes, ...)``.

    What :func:`segment_integral` sums with the weights; :class:`~nestopt.jacobian.AdaptiveQuadrature` also
    reads its error estimate off these values.
    """
    if vectorize not in ("vmap", "loop"):
        raise InvalidArgumentError(f"vectorize must be 'vmap' or 'loop', got {vectorize!r}")
    t, _ = gauss_legendre(nodes, dtype=dtype, device=device)
    return torch.func.vmap(integrand)(t) if vectorize == "vmap" else torch.stack([integrand(ti) for ti in t])


def _segment(x: Tensor, x0: Tensor | None) -> tuple[Tensor, Tensor]:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise InvalidArgumentError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() == 0:
        raise ShapeMismatchError(
            "x must have at least one dimension (the last one is the point's coordinates), got 0-d"
        )
    if x0 is None:
        x0 = torch.zeros(x.shape[-1], dtype=x.dtype, device=x.device)
    if not isinstance(x0, Tensor) or x0.dim() == 0 or x0.shape[-1] != x.shape[-1]:
        shape = tuple(x0.shape) if isinstance(x0, Tensor) else type(x0).__name__
        raise ShapeMismatchError(
            f"x0 must have last dimension {x.shape[-1]} like x (shape {tuple(x.shape)}), got {shape}"
        )
    try:
        x0 = torch.broadcast_to(x0, x.shape)
    except RuntimeError as err:
        raise ShapeMismatchError(
            f"x0 of shape {tuple(x0.shape)} does not broadcast to x of shape {tuple(x.shape)}"
        ) from err
    return x0, x - x0


def path_integral(
    field: JacobianField,
    x: Tensor,
    x0: Tensor | None = None,
    *,
    nodes: int = 16,
    vectorize: Vectorize = "vmap",
) -> Tensor:
    """Integrate a Jacobian field along the segment from ``x0`` to ``x``.

    .. math::  I(x) = \\int_0^1 J\\big(x_0 + t (x - x_0)\\big)(x - x_0)\\, dt

    Args:
        field: ``J``: maps points ``z`` of shape ``(..., d)`` to matrices of shape ``(..., m, d)``.
        x: end points, shape ``(..., d)`` (a batch of points, or one point of shape ``(d,)``).
        x0: base point(s), broadcastable to ``x``; default the origin.
        nodes: number of Gauss-Legendre nodes (at least 1).
        vectorize: ``"vmap"`` (default) or ``"loop"``, see :func:`segment_integral`.

    Returns:
        :math:`I(x)`, shape ``(..., m)``; it is differentiable (``torch.autograd`` and ``torch.func``).

    Raises:
        InvalidArgumentError: ``nodes < 1`` or ``x`` not floating point.
        ShapeMismatchError: ``x0`` or the field's output does not fit ``x``.

    Example:
        >>> A = torch.tensor([[2.0, 1.0], [0.0, 3.0]])
        >>> path_integral(lambda z: A.expand(*z.shape[:-1], 2, 2), torch.ones(1, 2), nodes=1)
        tensor([[3., 3.]])
    """
    values = path_values(field, x, x0, nodes=nodes, vectorize=vectorize)
    return torch.tensordot(gauss_legendre(nodes, dtype=x.dtype, device=x.device)[1], values, dims=1)


def path_values(
    field: JacobianField, x: Tensor, x0: Tensor | None = None, *, nodes: int = 16, vectorize: Vectorize = "vmap"
) -> Tensor:
    """The integrand :math:`J(x_0 + t_i (x - x_0))(x - x_0)` of :func:`path_integral` at each node :math:`t_i`.

    Returns:
        Shape ``(nodes, ..., m)``; :func:`path_integral` is its weighted sum over the first axis.
    """
    check_nodes(nodes)
    x0, delta = _segment(x, x0)
    lead, d = tuple(x.shape[:-1]), x.shape[-1]

    def integrand(t: Tensor) -> Tensor:
        jac = field(x0 + t * delta)
        if not isinstance(jac, Tensor) or jac.dim() < 2 or tuple(jac.shape[:-2]) != lead or jac.shape[-1] != d:
            shape = tuple(jac.shape) if isinstance(jac, Tensor) else type(jac).__name__
            raise ShapeMismatchError(
                f"field must map points of shape {(*lead, d)} to Jacobians of shape {(*lead, 'm', d)}, got {shape}"
            )
        return (jac @ delta.unsqueeze(-1)).squeeze(-1)

    return node_values(integrand, nodes=nodes, dtype=x.dtype, device=x.device, vectorize=vectorize)
