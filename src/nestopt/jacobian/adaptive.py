"""Choose the number of Gauss-Legendre nodes so that a quadrature's error estimate meets a tolerance.

JacNet and ICGN compute every quantity (the map, its Jacobian) as a Gauss-Legendre sum
:math:`Q_n = \\sum_i w_i h(t_i)` over ``n`` nodes, and their structure (``Lipschitz(k)``, ``Invertible(eps)``, a
PSD Jacobian) holds for the exact integral :math:`Q = \\int_0^1 h`, not for the sum. :class:`AdaptiveQuadrature`
turns the gap into a stated tolerance: it returns :math:`Q_n` for the first ``n`` in ``nodes, 2 nodes, 4 nodes,
...`` with

.. math::  \\hat\\varepsilon_n = \\| Q_n - Q_{\\lfloor n/2 \\rfloor} \\| \\le \\tau \\max(1, \\|Q_n\\|)
    \\quad\\text{at every point}

(:math:`Q_0 = 0`; the Euclidean norm for vectors, the Frobenius norm for matrices, which bounds the spectral
norm). :math:`\\hat\\varepsilon_n` is the error of the *coarser* rule :math:`Q_{n/2}` (up to the much smaller
error of :math:`Q_n`): for the analytic integrands of these networks (smooth activations) the Gauss-Legendre
error falls geometrically with ``n``, so the error of the returned :math:`Q_n` is far below it. It is an
estimate, not a proof: a field that varies on a scale that neither rule resolves can fool it. The check costs
one evaluation of the ``n/2``-node rule without autograd.

The tolerance applied is never below ``64`` machine epsilons of the values' dtype (rounding alone moves
:math:`\\hat\\varepsilon_n` that much). When ``max_nodes`` is reached first, the ``max_nodes`` value is
returned with a :class:`~nestopt.errors.SolverWarning` and ``converged=False`` in the :class:`QuadratureInfo`.

Each point of a batch gets its own node count: only the points whose estimate misses the tolerance are
evaluated with the next rule. This works inside ``torch.func`` transforms too; under ``vmap`` over the points
the vmapped points are refined together. Because the node count is piecewise constant in the input, finite
differences across a change of ``n`` see a jump of up to the tolerance: use a fixed rule (``tol=None``) for
finite-difference checks such as ``torch.autograd.gradcheck``.

:func:`path_integral_with_error` is the one-step version for a fixed rule: the :math:`2n`-node value and its
distance from the :math:`n`-node one.

Example:
    >>> import torch
    >>> from nestopt.jacobian import AdaptiveQuadrature
    >>> from nestopt.jacobian.adaptive import point_values
    >>> from nestopt.jacobian.quadrature import node_values
    >>> a = torch.tensor([[0.5], [8.0]], dtype=torch.float64)   # int_0^1 exp(a t) dt, sharp at the second point
    >>> integrand = lambda rows, n: node_values(lambda t: torch.exp(t * rows), nodes=n, dtype=a.dtype)
    >>> value, error, info = AdaptiveQuadrature(nodes=4, tol=1e-10)(point_values(integrand, a))
    >>> info.nodes, info.evaluations, bool(torch.allclose(value, torch.expm1(a) / a, rtol=1e-14))
    (32, 76, True)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from nestopt._validate import nonnegative, positive_int
from nestopt.errors import InvalidArgumentError, SolverWarning
from nestopt.jacobian.quadrature import JacobianField, Vectorize, check_nodes, gauss_legendre, path_values

__all__ = [
    "AdaptiveQuadrature",
    "QuadratureEstimate",
    "QuadratureInfo",
    "jacobian_values",
    "path_integral_with_error",
    "point_values",
]

NodeValues = Callable[[Tensor, int], Tensor]
"""``values(points, n)``: an integrand at ``n`` nodes for a batch of points ``(P, d)``, shape ``(n, P, *event)``."""

_ROUNDING_FLOOR = 64.0
"""The tolerance applied is at least this many machine epsilons of the values' dtype."""


@dataclass(frozen=True)
class QuadratureInfo:
    """How the node count of one quadrature was chosen.

    Attributes:
        nodes: the largest number of Gauss-Legendre nodes used at any point (points are refined separately).
        tol: the tolerance :math:`\\tau` (``None``: a fixed rule).
        error: the largest error estimate :math:`\\hat\\varepsilon_n` over the points (``None`` when a fixed
            rule estimated nothing).
        converged: whether every point met the tolerance (``True`` for a fixed rule: there is none to meet).
        evaluations: the integrand evaluations spent, summed over the points, the checks and the rejected
            rules included (a cost count: a fixed ``n``-node rule spends ``n`` per point).
    """

    nodes: int
    tol: float | None
    error: float | None
    converged: bool
    evaluations: int


def _is_batched(t: Tensor) -> bool:
    """Whether ``t`` is batched by ``torch.func.vmap`` at some level."""
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(t):
        if functorch.is_batchedtensor(t):
            return True
        t = functorch.get_unwrapped(t)
    return False


def _host_max(t: Tensor) -> float:
    """``float(t.max())`` of a detached tensor, also inside ``torch.func`` transforms (the batch is pooled)."""
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(t):
        t = functorch.get_unwrapped(t)
    return float(t.max()) if t.numel() else 0.0


def _norm(t: Tensor, event_dims: int) -> Tensor:
    return torch.linalg.vector_norm(t, dim=tuple(range(-event_dims, 0)))


@dataclass(frozen=True)
class AdaptiveQuadrature:
    """Double the number of Gauss-Legendre nodes until the error estimate meets ``tol`` (see the module docstring).

    Args:
        nodes: the first rule tried (or, with ``tol=None``, the only one).
        tol: the relative tolerance :math:`\\tau > 0`; ``None`` for a fixed ``nodes``-point rule.
        max_nodes: the cap, at least ``nodes`` (ignored by a fixed rule).

    Raises:
        InvalidArgumentError: a bad ``nodes``, ``tol`` or ``max_nodes``.
    """

    nodes: int = 16
    tol: float | None = 1e-6
    max_nodes: int = 512

    def __post_init__(self) -> None:
        check_nodes(self.nodes)
        if self.tol is not None:
            nonnegative("quadrature_tol", self.tol, positive=True)
        positive_int("max_nodes", self.max_nodes)
        if self.tol is not None and self.max_nodes < self.nodes:
            raise InvalidArgumentError(f"max_nodes must be at least nodes={self.nodes}, got {self.max_nodes!r}")

    def __call__(
        self,
        node_values: Callable[[int, Tensor | None], Tensor],
        *,
        event_dims: int = 1,
        estimate: bool = False,
        owner: str = "quadrature",
    ) -> tuple[Tensor, Tensor | None, QuadratureInfo]:
        """Integrate at a batch of points, refining only the points whose estimate misses the tolerance.

        Args:
            node_values: ``node_values(n, index)`` is the integrand at the ``n`` nodes for the points ``index``
                (a 1-D index into the batch; ``None``: all), shape ``(n, points, *event)``. It is called in the
                caller's autograd mode for the values returned and under ``torch.no_grad()`` for the check.
            event_dims: the number of trailing axes of one point's value (1: a vector, 2: a matrix).
            estimate: with a fixed rule, still return the per-point estimate against ``nodes // 2`` nodes.
            owner: names the caller in the warning.

        Returns:
            ``(value, error, info)``: the integral, shape ``(points, *event)``; the per-point estimate
            :math:`\\hat\\varepsilon_n` (detached; ``None`` for a fixed rule without ``estimate``); the
            :class:`QuadratureInfo`.
        """
        n = self.nodes
        value = self._rule(node_values, n, None)
        points = value.shape[0]
        evaluations = n * points
        if self.tol is None and not estimate:
            return value, None, QuadratureInfo(n, None, None, True, evaluations)
        with torch.no_grad():
            coarse = self._rule(node_values, n // 2, None).detach() if n > 1 else torch.zeros_like(value.detach())
        evaluations += (n // 2) * points
        fine = value.detach()
        error = _norm(fine - coarse, event_dims)
        if self.tol is None:
            return value, error, QuadratureInfo(n, None, _host_max(error), True, evaluations)
        tol = max(self.tol, _ROUNDING_FLOOR * torch.finfo(value.dtype).eps)
        batched = _is_batched(error)  # under vmap over the points: refine them all together
        while True:
            ratio = error / (tol * _norm(fine, event_dims).clamp_min(1.0))
            worst = _host_max(ratio)
            if worst <= 1.0 or 2 * n > self.max_nodes:
                break
            n *= 2
            index = None if batched else torch.nonzero(ratio > 1.0).squeeze(-1)
            refined = self._rule(node_values, n, index)
            if index is None:
                error, value = _norm(refined.detach() - fine, event_dims), refined
                evaluations += n * points
            else:
                error = error.index_copy(0, index, _norm(refined.detach() - fine[index], event_dims))
                value = value.index_copy(0, index, refined)
                evaluations += n * index.numel()
            fine = value.detach()
        if worst > 1.0:
            warnings.warn(
                f"{owner}: with max_nodes={self.max_nodes} Gauss-Legendre nodes the quadrature error estimate is "
                f"still {worst:.3g} times quadrature_tol={tol:.3g}; raise max_nodes or quadrature_tol (the field is "
                "sharper than the rule resolves, so the structural guarantees hold only up to the estimate in "
                "last_quadrature)",
                SolverWarning,
                stacklevel=3,
            )
        return value, error, QuadratureInfo(n, tol, _host_max(error), worst <= 1.0, evaluations)

    @staticmethod
    def _rule(node_values: Callable[[int, Tensor | None], Tensor], n: int, index: Tensor | None) -> Tensor:
        values = node_values(n, index)
        return torch.tensordot(gauss_legendre(n, dtype=values.dtype, device=values.device)[1], values, dims=1)

    def describe(self) -> str:
        """For ``repr``: ``nodes=16 (adaptive: tol=1e-06, max_nodes=512)``, or ``nodes=16`` for a fixed rule."""
        if self.tol is None:
            return f"nodes={self.nodes}"
        return f"nodes={self.nodes} (adaptive: tol={self.tol:g}, max_nodes={self.max_nodes})"


def point_values(values: NodeValues, points: Tensor) -> Callable[[int, Tensor | None], Tensor]:
    """The ``node_values`` argument of :class:`AdaptiveQuadrature` for ``values`` at the rows of ``points``."""

    def at(n: int, index: Tensor | None) -> Tensor:
        return values(points if index is None else points[index], n)

    return at


def jacobian_values(values: NodeValues, points: Tensor) -> Callable[[int, Tensor | None], Tensor]:
    """Like :func:`point_values` for the Jacobian of ``values`` in the point (forward mode): ``(n, P, m, d)``.

    Its quadrature is the Jacobian of the quadrature of ``values``: differentiation and the weighted sum commute.
    """
    eye = torch.eye(points.shape[-1], dtype=points.dtype, device=points.device)

    def at(n: int, index: Tensor | None) -> Tensor:
        z = points if index is None else points[index]

        def column(v: Tensor) -> Tensor:
            return torch.func.jvp(lambda p: values(p, n), (z,), (v.expand_as(z),))[1]

        return torch.movedim(torch.func.vmap(column)(eye), 0, -1)

    return at


@dataclass(frozen=True)
class QuadratureEstimate:
    """A quadrature's value with a per-point estimate of its error.

    Attributes:
        value: the integral, shape ``(..., m)``.
        error: the error estimate per point (Euclidean norm over the value's axis), shape ``(...)``; the
            function that returns the estimate says how it is formed.
        nodes: the number of Gauss-Legendre nodes of ``value`` (the largest at any point, when points differ).
    """

    value: Tensor
    error: Tensor
    nodes: int

    @property
    def max_error(self) -> float:
        """The largest error estimate over the batch."""
        return float(self.error.detach().max()) if self.error.numel() else 0.0


def path_integral_with_error(
    field: JacobianField,
    x: Tensor,
    x0: Tensor | None = None,
    *,
    nodes: int = 16,
    vectorize: Vectorize = "vmap",
) -> QuadratureEstimate:
    """:func:`~nestopt.jacobian.path_integral` with ``2 * nodes`` nodes, and its distance from the ``nodes``-node value.

    .. math::  \\hat\\varepsilon(x) = \\big\\| I_{2n}(x) - I_n(x) \\big\\|_2

    This is the error of the :math:`n`-node rule; for smooth fields the :math:`2n`-node value returned is far
    more accurate than :math:`\\hat\\varepsilon`.

    Returns:
        A :class:`QuadratureEstimate` with ``value`` :math:`I_{2n}` and ``nodes`` :math:`= 2n`.

    Example:
        >>> import math
        >>> field = lambda z: torch.exp(z).unsqueeze(-1)          # d = m = 1: J(z) = exp(z)
        >>> est = path_integral_with_error(field, torch.tensor([[2.0]], dtype=torch.float64), nodes=3)
        >>> exact = math.exp(2.0) - 1.0
        >>> float(est.error) > 1e-5, abs(float(est.value) - exact) < 1e-9, abs(float(est.value) - exact) < float(est.error)
        (True, True, True)
        >>> est.nodes
        6
    """
    check_nodes(nodes)

    def values(n: int, index: Tensor | None) -> Tensor:  # a fixed rule never refines a subset of the points
        return path_values(field, x, x0, nodes=n, vectorize=vectorize)

    value, error, _ = AdaptiveQuadrature(nodes=2 * nodes, tol=None)(values, estimate=True)
    assert error is not None  # estimate=True
    return QuadratureEstimate(value=value, error=error, nodes=2 * nodes)
