"""Input convex gradient networks: model :math:`\\nabla\\psi` of a convex :math:`\\psi` through its Hessian.

A learned map :math:`h_\\theta : \\mathbb{R}^d \\to \\mathbb{R}^m` with Jacobian :math:`V(x) = Dh_\\theta(x)` gives
the positive semi-definite matrix field :math:`H(x) = V(x)^\\top V(x)`, and

.. math::  g(x) = c + \\int_0^1 H(t x)\\, x \\, dt = c + \\int_0^1 V(tx)^\\top \\big(V(tx)\\, x\\big)\\, dt,

computed matrix-free (one JVP and one VJP of :math:`h` per Gauss-Legendre node, all nodes in one ``vmap``).

**One layer: an exact convex gradient.** For :math:`h(x) = \\sigma(Wx + b)` with an elementwise activation,
:math:`H(x) = W^\\top \\mathrm{diag}\\big(\\sigma'(Wx + b)^2\\big) W` is the Hessian of
:math:`\\psi(x) = \\sum_j \\phi(w_j^\\top x + b_j)` with :math:`\\phi'' = \\sigma'^2 \\ge 0`; so :math:`g = c +
\\nabla\\psi - \\nabla\\psi(0)` is the gradient of a convex function, its Jacobian is symmetric PSD, and by
Brenier's theorem it is an optimal transport map (for the squared distance) from any source density.

**To what tolerance.** The integral is a Gauss-Legendre sum, and its quadrature error is visible on sharp
fields: a one-layer ``tanh`` ICGN with weights scaled up 4 times has a computed :math:`Dg` with eigenvalue
:math:`-5 \\cdot 10^{-4}` with a fixed 16-node rule. For one layer the computed :math:`Dg` is symmetric for any
rule (every node contributes :math:`W^\\top D_i W` with :math:`D_i` diagonal), so only the sign of its eigenvalues
is at stake. By default (``quadrature_tol`` :math:`= \\tau = 10^{-6}`) every call chooses the node count per
point, doubling from ``nodes``, until the estimate of :class:`~nestopt.jacobian.AdaptiveQuadrature` meets the
tolerance; then at every point evaluated, up to that estimate (the error of the rule with half as many nodes,
an over-estimate for these smooth integrands but not a proof),
:math:`\\|g(x) - g^\\star(x)\\|_2 \\le \\tau \\max(1, \\|g(x) - c\\|_2)` for :meth:`forward` and
:math:`\\|Dg(x) - Dg^\\star(x)\\|_F \\le \\tau \\max(1, \\|Dg(x)\\|_F)` for :meth:`jacobian`, so that for one
layer :math:`\\lambda_{\\min}(Dg(x)) \\ge -\\tau \\max(1, \\|Dg(x)\\|_F)`. With ``quadrature_tol=None`` the rule is
fixed at ``nodes`` and the sign is not controlled.

**Deeper maps: not guaranteed.** For :math:`h` with two or more layers, :math:`H` is still symmetric PSD at every
point but need not be a Hessian (it need not be integrable), and then :math:`g` is not a gradient: its Jacobian
:math:`Dg` is not symmetric. :meth:`ICGN.integrability` reports :math:`\\|Dg - Dg^\\top\\|_F / \\|Dg\\|_F` and the
smallest eigenvalue of the symmetric part, so that this error is measured rather than assumed away.

Reference: J. Richter-Powell, J. Lorraine and B. Amos, "Input Convex Gradient Networks", 2021.

Example:
    >>> import torch
    >>> from nestopt.jacobian import ICGN
    >>> net = ICGN(2, hidden=8, generator=torch.Generator().manual_seed(0)).double()
    >>> check = net.integrability(torch.randn(4, 2, dtype=torch.float64))
    >>> net.exact, bool(check.asymmetry.max() < 1e-12), bool(check.min_eigenvalue.min() > -1e-10)
    (True, True, True)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nestopt.errors import InvalidArgumentError
from nestopt.jacobian._nets import activation_fn, check_dim, check_points, check_widths, seeded_linear
from nestopt.jacobian.adaptive import AdaptiveQuadrature, QuadratureInfo, jacobian_values, point_values
from nestopt.jacobian.quadrature import Vectorize, node_values

__all__ = ["ICGN", "Integrability"]

_ACTIVATIONS = ("sigmoid", "tanh", "softplus")


@dataclass(frozen=True)
class Integrability:
    """How far a vector field :math:`g` is from the gradient of a convex function, point by point.

    Attributes:
        asymmetry: :math:`\\|Dg - Dg^\\top\\|_F / \\|Dg\\|_F` per point (0 for a gradient field).
        min_eigenvalue: the smallest eigenvalue of :math:`(Dg + Dg^\\top)/2` per point (:math:`\\ge 0` for a
            monotone field).
        quadrature: how the node count of :math:`Dg` was chosen; its ``error`` bounds (up to the estimate) how
            far ``min_eigenvalue`` can be from that of the exact :math:`Dg`.
    """

    asymmetry: Tensor
    min_eigenvalue: Tensor
    quadrature: QuadratureInfo


class ICGN(nn.Module):
    """An input convex gradient network :math:`g(x) = c + \\int_0^1 V(tx)^\\top V(tx)\\, x\\, dt`.

    Args:
        dim: input and output dimension :math:`d`.
        hidden: width of the map :math:`h` (an int: one layer, the exact construction) or the widths of its
            layers (two or more: the deeper variant, checked with :meth:`integrability`).
        activation: of :math:`h`: ``"sigmoid"`` (default, the construction of the paper; :math:`g` is bounded),
            ``"tanh"`` (bounded too), or ``"softplus"`` (then :math:`V = \\mathrm{diag}(\\mathrm{sigmoid}(Wx+b))W`
            and :math:`g` grows linearly, as a map onto an unbounded target such as a Gaussian must).
        offset: learn the constant :math:`c = g(0)` (default); otherwise :math:`g(0) = 0`.
        nodes: Gauss-Legendre nodes of the integral: the first rule tried, or the only one with
            ``quadrature_tol=None``.
        quadrature_tol: the relative tolerance :math:`\\tau` on the quadrature error estimate of :math:`g` and
            :math:`Dg` (see :class:`~nestopt.jacobian.AdaptiveQuadrature`); ``None`` for a fixed rule.
        max_nodes: the cap on the node count (a ``SolverWarning`` when it is reached before the tolerance).
        vectorize: ``"vmap"`` or ``"loop"`` over the nodes.
        generator: seeds the initial weights.

    The three quadrature arguments make the attribute ``quadrature`` (an
    :class:`~nestopt.jacobian.AdaptiveQuadrature`), which may be replaced, e.g. by a fixed rule while training.

    Example:
        >>> net = ICGN(2, hidden=(8, 8), generator=torch.Generator().manual_seed(0))
        >>> net(torch.randn(5, 2)).shape, net.exact
        (torch.Size([5, 2]), False)
    """

    def __init__(
        self,
        dim: int,
        hidden: int | Sequence[int] = 32,
        *,
        activation: str = "sigmoid",
        offset: bool = True,
        nodes: int = 16,
        quadrature_tol: float | None = 1e-6,
        max_nodes: int = 512,
        vectorize: Vectorize = "vmap",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_dim(dim)
        self.widths = check_widths(hidden)
        self.activation = activation
        self._act = activation_fn(activation, _ACTIVATIONS)
        self.quadrature = AdaptiveQuadrature(nodes=nodes, tol=quadrature_tol, max_nodes=max_nodes)
        self.last_quadrature: QuadratureInfo | None = None
        """How the last :meth:`forward` or :meth:`jacobian` chose its node count (``None`` before)."""
        if vectorize not in ("vmap", "loop"):
            raise InvalidArgumentError(f"vectorize must be 'vmap' or 'loop', got {vectorize!r}")
        self.vectorize: Vectorize = vectorize
        sizes = (dim, *self.widths)
        self.layers = nn.ModuleList(seeded_linear(a, b, generator) for a, b in itertools.pairwise(sizes))
        self.offset = nn.Parameter(torch.zeros(dim)) if offset else None

    @property
    def exact(self) -> bool:
        """Whether :math:`g` is exactly a convex gradient by construction (the single-layer ICGN)."""
        return len(self.layers) == 1

    @property
    def nodes(self) -> int:
        """The first Gauss-Legendre rule tried (the only one with a fixed rule): ``quadrature.nodes``."""
        return self.quadrature.nodes

    def extra_repr(self) -> str:
        return f"dim={self.dim}, hidden={self.widths}, activation={self.activation!r}, {self.quadrature.describe()}"

    def _check_input(self, x: Tensor, name: str = "x") -> Tensor:
        return check_points(x, self.dim, "ICGN", name, like=next(self.parameters()))

    def feature_map(self, x: Tensor) -> Tensor:
        """The learned map :math:`h(x)`, whose Jacobian is :math:`V(x)`; shape ``(..., m)``."""
        for layer in self.layers:
            x = self._act(layer(x))
        return x

    def hessian(self, x: Tensor) -> Tensor:
        """The PSD field :math:`H(x) = V(x)^\\top V(x)`, shape ``(..., d, d)`` (explicit; for checks and plots)."""
        x = self._check_input(x)
        flat = x.reshape(-1, self.dim)
        v = torch.func.vmap(torch.func.jacrev(self.feature_map))(flat)  # (n, m, d)
        return (v.mT @ v).reshape(*x.shape, self.dim)

    def _node_values(self, x: Tensor, nodes: int) -> Tensor:  # the integrand at the nodes: (nodes, points, d)
        def integrand(t: Tensor) -> Tensor:
            z = t * x
            vx = torch.func.jvp(self.feature_map, (z,), (x,))[1]
            pullback = torch.func.vjp(self.feature_map, z)[1]
            return pullback(vx)[0]

        return node_values(integrand, nodes=nodes, dtype=x.dtype, device=x.device, vectorize=self.vectorize)

    def forward(self, x: Tensor) -> Tensor:
        """:math:`g(x) = c + \\int_0^1 V(tx)^\\top V(tx)\\,x\\,dt`, shape ``(..., d)``.

        With the node count chosen so that the quadrature error estimate is at most ``quadrature_tol`` times
        :math:`\\max(1, |g(x) - c|)` at every point (see :attr:`last_quadrature`).
        """
        flat = self._check_input(x).reshape(-1, self.dim)
        g, _, self.last_quadrature = self.quadrature(point_values(self._node_values, flat), owner="ICGN.forward")
        g = g.reshape(x.shape)
        return g if self.offset is None else g + self.offset

    def jacobian(self, x: Tensor) -> Tensor:
        """The Jacobian :math:`Dg(x)` of the computed field (forward-mode autodiff), shape ``(..., d, d)``.

        With its own node count: the one at which the estimate of its quadrature error (against the exact
        :math:`Dg`) is at most ``quadrature_tol`` times :math:`\\max(1, \\|Dg(x)\\|_F)` in the Frobenius norm at
        every point (see :attr:`last_quadrature`).
        """
        flat = self._check_input(x).reshape(-1, self.dim)
        jac, _, self.last_quadrature = self.quadrature(
            jacobian_values(self._node_values, flat), event_dims=2, owner="ICGN.jacobian"
        )
        return jac.reshape(*x.shape, self.dim)

    def integrability(self, x: Tensor) -> Integrability:
        """Check at the points ``x`` whether :math:`g` behaves as a convex gradient there (see :class:`Integrability`).

        For the single-layer ICGN the asymmetry is zero up to rounding, and the eigenvalues are at least
        :math:`-\\tau \\max(1, \\|Dg\\|_F)` up to the quality of the quadrature estimate (exactly :math:`\\ge 0`
        for the exact integral); for deeper variants both are measured, not guaranteed.
        """
        jac = self.jacobian(x).detach()
        assert self.last_quadrature is not None  # set by jacobian()
        asym = torch.linalg.matrix_norm(jac - jac.mT) / torch.linalg.matrix_norm(jac).clamp_min(
            torch.finfo(jac.dtype).tiny
        )
        return Integrability(
            asymmetry=asym,
            min_eigenvalue=torch.linalg.eigvalsh(0.5 * (jac + jac.mT))[..., 0],
            quadrature=self.last_quadrature,
        )
