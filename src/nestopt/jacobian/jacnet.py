"""JacNet: learn a function through its Jacobian, with structure (invertible, k-Lipschitz) by construction.

A network outputs a matrix field :math:`J_\\theta(x)` (structured by a :mod:`~nestopt.jacobian.structure`
object) and the function is its path integral from a base point :math:`x_0` with learned value
:math:`y_0 = f(x_0)`:

.. math::  f(x) = y_0 + \\int_0^1 J_\\theta\\big(x_0 + t (x - x_0)\\big) (x - x_0)\\, dt .

The inverse of an invertible JacNet integrates the inverse Jacobian along the output path
:math:`y(s) = y_0 + s (y - y_0)`, i.e. solves the ODE :math:`\\dot x(s) = J_\\theta(x(s))^{-1} (y - y_0)`,
:math:`x(0) = x_0`, with classical Runge-Kutta, and optionally polishes the result with Newton steps
:math:`x \\leftarrow x - Df(x)^{-1} (f(x) - y)`; the round-trip residual :math:`|f(\\hat x) - y|_\\infty` is
returned with it.

**One dimension versus several.** For :math:`d = 1` every field is a derivative, so the exact :math:`Df` is
:math:`J` and the structure carries over to :math:`f`. For :math:`d > 1`, :math:`f` is well defined through the
straight path, but :math:`Df = J` only when :math:`J` is a conservative field (the Jacobian of some map);
otherwise the structure holds for :math:`J` while :math:`Df` may differ. :meth:`JacNet.integrability_error`
measures the gap :math:`\\|Df - J\\|_F / \\|J\\|_F`, and penalising it in training makes the field consistent
(see the ``jacnet-invertible`` experiment).

**What is guaranteed, and to what tolerance.** The integral is a Gauss-Legendre sum, so the computed :math:`f`
and :math:`Df` differ from the exact ones by a quadrature error, which a sharp field makes visible (a
``Lipschitz(1)`` field with weights scaled up 8 times gives :math:`|Df| = 1.09` with a fixed 16-node rule). By
default (``quadrature_tol`` :math:`= \\tau = 10^{-6}`) every call chooses the node count per point, doubling from
``nodes``, until the estimate :math:`\\hat\\varepsilon` of :class:`~nestopt.jacobian.AdaptiveQuadrature` (the
distance to the rule with half as many nodes) meets the tolerance. At every point it evaluates:

* exactly, for any rule: :math:`J` has its structure (:math:`v^\\top J v \\ge \\varepsilon |v|^2`, or
  :math:`\\|J\\|_2 < k`), and :math:`|f(x) - y_0| \\le k |x - x_0|` for ``Lipschitz(k)`` (the weights are
  positive and sum to 1);
* up to the estimate, :meth:`forward`: :math:`\\|f(x) - f^\\star(x)\\|_2 \\le \\hat\\varepsilon \\le \\tau
  \\max(1, \\|f(x) - y_0\\|_2)` with :math:`f^\\star` the exact integral;
* up to the estimate, :meth:`model_jacobian`: :math:`\\|Df(x) - Df^\\star(x)\\|_F \\le \\tau \\max(1,
  \\|Df(x)\\|_F)`; where :math:`Df^\\star = J` (always for :math:`d = 1`) this gives
  :math:`\\|Df(x)\\|_2 \\le k + \\tau \\max(1, \\|Df(x)\\|_F)` for ``Lipschitz(k)`` and
  :math:`v^\\top Df(x) v \\ge (\\varepsilon - \\tau \\max(1, \\|Df(x)\\|_F)) |v|^2` for ``Invertible(eps)``.

"Up to the estimate": :math:`\\hat\\varepsilon` is the error of the coarser rule, which for these analytic
integrands (smooth activations) over-estimates the error of the value returned by orders of magnitude, but it is
an estimate, not a proof. With ``quadrature_tol=None`` the rule is fixed at ``nodes`` and only the exact
statements hold. :attr:`JacNet.last_quadrature` reports the node count and the estimate of the last call.

Reference: J. Lorraine and S. Hossain, "JacNet: Learning Functions with Structured Jacobians", 2019.

Example:
    >>> import torch
    >>> from nestopt.jacobian import Invertible, JacNet
    >>> net = JacNet(1, Invertible(eps=0.1), hidden=(16,), generator=torch.Generator().manual_seed(0)).double()
    >>> x = torch.linspace(-1, 1, 5, dtype=torch.float64).unsqueeze(-1)
    >>> inv = net.inverse(net(x))
    >>> bool((inv.x - x).abs().max() < 1e-8), bool(inv.max_residual < 1e-8)
    (True, True)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nestopt.errors import (
    InvalidArgumentError,
    NonFiniteError,
    ShapeMismatchError,
    SolverWarning,
    UnsupportedError,
)
from nestopt.jacobian._nets import activation_fn, check_dim, check_points, check_widths, mlp
from nestopt.jacobian.adaptive import (
    AdaptiveQuadrature,
    QuadratureEstimate,
    QuadratureInfo,
    jacobian_values,
    point_values,
)
from nestopt.jacobian.quadrature import Vectorize, path_values
from nestopt.jacobian.structure import Structure, check_structure

__all__ = ["InverseResult", "JacNet"]

_SMOOTH = ("tanh", "softplus", "silu", "sigmoid")


@dataclass(frozen=True)
class InverseResult:
    """What :meth:`JacNet.inverse` returns.

    Attributes:
        x: the preimages, shaped like ``y``.
        residual: the round-trip error :math:`|f(x) - y|_\\infty` per point (after the Newton polish).
        ode_residual: the same after the ODE alone, before Newton.
        ode_steps: Runge-Kutta steps taken.
        newton_steps: Newton steps taken.
    """

    x: Tensor
    residual: Tensor
    ode_residual: Tensor
    ode_steps: int
    newton_steps: int

    @property
    def max_residual(self) -> float:
        """The largest round-trip residual over the batch."""
        return float(self.residual.max()) if self.residual.numel() else 0.0


class JacNet(nn.Module):
    """A map :math:`\\mathbb{R}^d \\to \\mathbb{R}^d` learned through its (structured) Jacobian.

    Args:
        dim: input (and output) dimension :math:`d`.
        structure: ``Unconstrained()`` (default), ``Invertible(eps)`` or ``Lipschitz(k)``.
        hidden: widths of the Jacobian network's hidden layers.
        activation: a smooth activation for it: ``"tanh"``, ``"softplus"``, ``"silu"`` or ``"sigmoid"``.
        x0: the base point (default the origin); :math:`y_0 = f(x_0)` is a learned parameter, initialised to 0.
        nodes: Gauss-Legendre nodes of the path integral: the first rule tried, or the only one with
            ``quadrature_tol=None``.
        quadrature_tol: the relative tolerance :math:`\\tau` on the quadrature error estimate of every computed
            value and Jacobian (see :class:`~nestopt.jacobian.AdaptiveQuadrature`); ``None`` for a fixed rule.
        max_nodes: the cap on the node count (a ``SolverWarning`` when it is reached before the tolerance).
        vectorize: ``"vmap"`` or ``"loop"`` over the nodes.
        generator: seeds the initial weights.

    The three quadrature arguments make the attribute ``quadrature`` (an
    :class:`~nestopt.jacobian.AdaptiveQuadrature`), which may be replaced: for instance a fixed rule while
    training, for speed, and the adaptive one to evaluate the trained network with the guarantees.

    Raises:
        InvalidArgumentError: a bad ``dim``, ``hidden``, ``activation``, ``structure``, ``nodes``,
            ``quadrature_tol`` or ``max_nodes``.

    Example:
        >>> net = JacNet(2, hidden=(8,), generator=torch.Generator().manual_seed(0))
        >>> net(torch.zeros(3, 2)).shape, net.jacobian(torch.zeros(3, 2)).shape
        (torch.Size([3, 2]), torch.Size([3, 2, 2]))
    """

    x0: Tensor

    def __init__(
        self,
        dim: int,
        structure: Structure | None = None,
        *,
        hidden: int | Sequence[int] = (64, 64),
        activation: str = "tanh",
        x0: Tensor | None = None,
        nodes: int = 16,
        quadrature_tol: float | None = 1e-6,
        max_nodes: int = 512,
        vectorize: Vectorize = "vmap",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_dim(dim)
        self.structure = check_structure(structure)
        activation_fn(activation, _SMOOTH)
        self.quadrature = AdaptiveQuadrature(nodes=nodes, tol=quadrature_tol, max_nodes=max_nodes)
        self.last_quadrature: QuadratureInfo | None = None
        """How the last :meth:`forward` or :meth:`model_jacobian` chose its node count (``None`` before)."""
        if vectorize not in ("vmap", "loop"):
            raise InvalidArgumentError(f"vectorize must be 'vmap' or 'loop', got {vectorize!r}")
        self.vectorize: Vectorize = vectorize
        widths = check_widths(hidden)
        self.net = mlp([dim, *widths, self.structure.raw_size(dim)], activation, generator=generator)
        if x0 is None:
            x0 = torch.zeros(dim)
        if not isinstance(x0, Tensor) or tuple(x0.shape) != (dim,):
            raise ShapeMismatchError(f"x0 must be a tensor of shape ({dim},), got {getattr(x0, 'shape', x0)!r}")
        self.register_buffer("x0", x0.detach().clone().to(torch.get_default_dtype()))
        self.y0 = nn.Parameter(torch.zeros(dim))

    @property
    def nodes(self) -> int:
        """The first Gauss-Legendre rule tried (the only one with a fixed rule): ``quadrature.nodes``."""
        return self.quadrature.nodes

    def extra_repr(self) -> str:
        return f"dim={self.dim}, structure={self.structure}, {self.quadrature.describe()}"

    def _check_input(self, x: Tensor, name: str = "x") -> Tensor:
        return check_points(x, self.dim, "JacNet", name, like=self.y0)

    def jacobian(self, x: Tensor) -> Tensor:
        """The structured Jacobian field :math:`J_\\theta(x)`, shape ``(..., d, d)``."""
        x = self._check_input(x)
        return self.structure.jacobian(self.net(x), self.dim)

    def _field(self, z: Tensor) -> Tensor:
        return self.structure.jacobian(self.net(z), self.dim)

    def _node_values(self, x: Tensor, nodes: int) -> Tensor:  # the integrand at the nodes: (nodes, points, d)
        return path_values(self._field, x, self.x0, nodes=nodes, vectorize=self.vectorize)

    def _adaptive_forward(self, x: Tensor, *, estimate: bool) -> tuple[Tensor, Tensor | None]:
        flat = self._check_input(x).reshape(-1, self.dim)
        value, error, self.last_quadrature = self.quadrature(
            point_values(self._node_values, flat), estimate=estimate, owner="JacNet.forward"
        )
        return self.y0 + value.reshape(x.shape), None if error is None else error.reshape(x.shape[:-1])

    def forward(self, x: Tensor) -> Tensor:
        """:math:`f(x) = y_0 + \\int_0^1 J(x_0 + t(x - x_0))(x - x_0)\\,dt`, shape ``(..., d)``.

        With the node count chosen so that the quadrature error estimate is at most ``quadrature_tol`` times
        :math:`\\max(1, |f(x) - y_0|)` at every point (see :attr:`last_quadrature`).
        """
        return self._adaptive_forward(x, estimate=False)[0]

    def forward_with_error(self, x: Tensor) -> QuadratureEstimate:
        """:meth:`forward` with the per-point error estimate :math:`\\|I_n - I_{n/2}\\|_2` and the node count ``n``.

        With a fixed rule (``quadrature_tol=None``) too, the estimate compares ``nodes`` with ``nodes // 2``.
        """
        value, error = self._adaptive_forward(x, estimate=True)
        assert error is not None and self.last_quadrature is not None  # estimate=True
        return QuadratureEstimate(value=value, error=error, nodes=self.last_quadrature.nodes)

    def model_jacobian(self, x: Tensor) -> Tensor:
        """The Jacobian :math:`Df(x)` of the computed map (forward-mode autodiff), shape ``(..., d, d)``.

        It is the Jacobian of the quadrature sum, with its own node count: the one at which the estimate of its
        quadrature error (against the exact :math:`Df`) is at most ``quadrature_tol`` times
        :math:`\\max(1, \\|Df(x)\\|_F)` in the Frobenius norm at every point (see :attr:`last_quadrature`).
        Differentiable, so it can enter a training loss.
        """
        flat = self._check_input(x).reshape(-1, self.dim)
        value, _, self.last_quadrature = self.quadrature(
            jacobian_values(self._node_values, flat), event_dims=2, owner="JacNet.model_jacobian"
        )
        return value.reshape(*x.shape, self.dim)

    def integrability_error(self, x: Tensor) -> Tensor:
        """The relative gap :math:`\\|Df(x) - J(x)\\|_F / \\|J(x)\\|_F` per point, shape ``(...)``.

        Zero (up to quadrature error) when :math:`J` is a conservative field, in particular for ``d = 1``.
        """
        jac = self.jacobian(x)
        gap = torch.linalg.matrix_norm(self.model_jacobian(x) - jac)
        return gap / torch.linalg.matrix_norm(jac).clamp_min(torch.finfo(jac.dtype).tiny)

    def inverse(self, y: Tensor, *, steps: int = 32, newton: int = 2, tol: float = 0.0) -> InverseResult:
        """Invert :math:`f`: integrate :math:`\\dot x = J(x)^{-1}(y - y_0)` from :math:`x_0`, then Newton.

        .. math::  x(0) = x_0, \\quad \\frac{dx}{ds} = J_\\theta(x(s))^{-1} (y - y_0), \\quad \\hat x = x(1)

        Args:
            y: outputs, shape ``(..., d)``.
            steps: Runge-Kutta (RK4) steps along the output path, at least 1.
            newton: Newton polishing steps with the exact Jacobian :math:`Df` (0 for none).
            tol: stop Newton early once :math:`\\max |f(x) - y|_\\infty \\le` ``tol``.

        Returns:
            :class:`InverseResult` with the preimages and the round-trip residuals. A ``SolverWarning`` is
            emitted when the largest residual exceeds :math:`\\sqrt{\\epsilon_{\\mathrm{mach}}}\\,(1 + \\max|y|)`.

        Raises:
            UnsupportedError: the structure is not ``Invertible``.
            ShapeMismatchError: ``y`` does not have shape ``(..., d)``.
            NonFiniteError: the ODE or Newton produced NaN or infinity.
        """
        if not self.structure.invertible:
            raise UnsupportedError(
                f"inverse() needs a JacNet with structure=Invertible(...); this one has structure={self.structure!r}, "
                "whose maps need not be invertible"
            )
        y = self._check_input(y, "y")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise InvalidArgumentError(f"steps must be an integer >= 1, got {steps!r}")
        if isinstance(newton, bool) or not isinstance(newton, int) or newton < 0:
            raise InvalidArgumentError(f"newton must be an integer >= 0, got {newton!r}")
        dy = (y - self.y0).unsqueeze(-1)

        def velocity(z: Tensor) -> Tensor:
            return torch.linalg.solve(self._field(z), dy).squeeze(-1)

        x = torch.broadcast_to(self.x0, y.shape).clone()
        h = 1.0 / steps
        for _ in range(steps):
            k1 = velocity(x)
            k2 = velocity(x + 0.5 * h * k1)
            k3 = velocity(x + 0.5 * h * k2)
            k4 = velocity(x + h * k3)
            x = x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        r = self.forward(x) - y
        ode_residual = r.detach().abs().amax(dim=-1)
        taken = 0
        for _ in range(newton):
            if float(r.detach().abs().max()) <= tol:
                break
            x = x - torch.linalg.solve(self.model_jacobian(x), r.unsqueeze(-1)).squeeze(-1)
            r = self.forward(x) - y
            taken += 1
        residual = r.detach().abs().amax(dim=-1)
        if not bool(torch.isfinite(x).all()) or not bool(torch.isfinite(residual).all()):
            raise NonFiniteError(f"JacNet.inverse produced non-finite values (steps={steps}, newton={newton})")
        scale = 1.0 + float(y.detach().abs().max()) if y.numel() else 1.0
        worst = float(residual.max()) if residual.numel() else 0.0
        if worst > math.sqrt(torch.finfo(y.dtype).eps) * scale:
            warnings.warn(
                f"JacNet.inverse: round-trip residual max |f(x) - y| = {worst:.3g} after {steps} RK4 and {taken} Newton "
                "steps; for d > 1 check integrability_error(x) (a non-conservative field need not give an invertible "
                "map), or raise steps / newton",
                SolverWarning,
                stacklevel=2,
            )
        return InverseResult(x=x, residual=residual, ode_residual=ode_residual, ode_steps=steps, newton_steps=taken)
