"""Hypergradients by the implicit function theorem (IFT).

At a solution :math:`w^*(\\lambda)` of the inner problem, :math:`\\nabla_w L_{in}(w^*, \\lambda) = 0`, and

.. math::

    \\frac{d L_{out}}{d\\lambda} = \\frac{\\partial L_{out}}{\\partial \\lambda}
        - \\frac{\\partial^2 L_{in}}{\\partial \\lambda\\, \\partial w}
          \\left[\\frac{\\partial^2 L_{in}}{\\partial w\\, \\partial w}\\right]^{-1}
          \\frac{\\partial L_{out}}{\\partial w}.

The inverse-Hessian-vector product is delegated to a solver from :mod:`nestopt.linalg`. The inner gradient
is linearized once and reused for every Hessian product and for the mixed term, so a ``K``-step solver costs
one gradient, ``K`` Hessian products, one mixed product and the outer gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nestopt import tree
from nestopt.autodiff import DEFAULT_HVP_MODE, Counter, HVPMode, LossFn, check_tree, linearize
from nestopt.errors import InvalidArgumentError, NonFiniteError, UnsupportedError
from nestopt.hypergrad._outer import outer_gradients
from nestopt.hypergrad.result import HypergradInfo, HypergradResult
from nestopt.linalg import CG, LinearOperator, Solver
from nestopt.tree import Tree

__all__ = ["Implicit", "implicit"]


def implicit(
    inner_loss: LossFn,
    outer_loss: LossFn,
    params: Tree,
    hparams: Tree,
    inner_batch: Any,
    outer_batch: Any,
    *,
    solver: Solver | None = None,
    hessian_batch: Any = None,
    hvp_mode: HVPMode = DEFAULT_HVP_MODE,
) -> HypergradResult:
    """The IFT hypergradient of ``outer_loss`` at inner parameters ``params`` (assumed inner-optimal).

    Args:
        inner_loss: ``(params, hparams, batch) -> scalar``, the loss the inner problem minimizes.
        outer_loss: ``(params, hparams, batch) -> scalar``, the loss whose hypergradient is wanted.
        params: the inner solution :math:`w^*` (a tree); it is not modified.
        hparams: the hyperparameters :math:`\\lambda` (a tree).
        inner_batch: batch for the inner gradient (the mixed term).
        outer_batch: batch for the outer loss.
        solver: the inverse-Hessian-vector solver (default ``linalg.CG(steps=20)``).
        hessian_batch: batch for the Hessian products; defaults to ``inner_batch``.
        hvp_mode: ``"rev-rev"`` or ``"fwd-rev"`` (see :mod:`nestopt.autodiff`).

    Returns:
        A :class:`HypergradResult` whose ``grads`` has the keys of ``hparams``.

    Raises:
        UnsupportedError: a hyperparameter enters neither the inner gradient nor the outer loss (a learning
            rate, say), so the IFT cannot differentiate it: use :func:`nestopt.hypergrad.unrolled`.

    Example:
        >>> import torch
        >>> from nestopt import hypergrad, linalg
        >>> x = torch.randn(30, 4, dtype=torch.float64); y = x.sum(1)
        >>> inner = lambda p, h, b: ((b[0] @ p["w"] - b[1]) ** 2).mean() + (h["l2"] * p["w"] ** 2).sum()
        >>> outer = lambda p, h, b: ((b[0] @ p["w"] - b[1]) ** 2).mean()
        >>> hp = {"l2": torch.full((4,), 0.1, dtype=torch.float64)}
        >>> w = {"w": torch.linalg.solve(x.T @ x / 30 + torch.diag(hp["l2"]), x.T @ y / 30)}
        >>> res = hypergrad.implicit(inner, outer, w, hp, (x, y), (x, y), solver=linalg.Exact())
        >>> res.info.status.value, res.grads["l2"].shape
        ('converged', torch.Size([4]))
    """
    params = check_tree(params, "params")
    hparams = check_tree(hparams, "hparams")
    solver = CG(steps=20) if solver is None else solver
    if not isinstance(solver, Solver):
        raise InvalidArgumentError(f"solver must be a nestopt.linalg solver (CG, Neumann, ...), got {solver!r}")
    counter = Counter()
    outer_value, g_w, g_direct, outer_unused = outer_gradients(
        outer_loss, params, hparams, outer_batch, counter, drop_unused=True
    )

    mixed_lin = linearize(inner_loss, params, hparams, inner_batch, mode=hvp_mode, counter=counter)
    hess_lin = mixed_lin
    if hessian_batch is not None and hessian_batch is not inner_batch:
        hess_lin = linearize(inner_loss, params, hparams, hessian_batch, mode=hvp_mode, counter=counter)
    solution = solver.solve(LinearOperator.hessian(hess_lin), g_w)
    mixed = mixed_lin.mixed_vjp(solution.value)
    unusable = sorted(set(mixed_lin.last_unused) & set(outer_unused))
    if unusable:
        raise UnsupportedError(
            f"hyperparameters {unusable} enter neither the inner loss's gradient nor the outer loss, so the "
            "implicit function theorem gives them no hypergradient. A learning rate (or any other optimizer "
            "setting) acts only through the optimization trajectory: differentiate it with "
            "hypergrad.unrolled or hypergrad.forward"
        )
    # direct - mixed, in the buffers of the mixed term (fresh autograd outputs): no extra hparams-sized copy
    grads = tree.scale_(mixed, -1.0)
    for k, g in g_direct.items():
        grads[k].add_(g)
    if not tree.all_finite(grads):
        raise NonFiniteError(
            f"the implicit hypergradient is not finite (solver status {solution.info.status.value}: "
            f"{solution.info.message}); use a more stable solver or damping"
        )
    inner_grad_norm = float(tree.norm(mixed_lin.grad))
    info = HypergradInfo(
        method="implicit",
        status=solution.info.status,
        iterations=solution.info.iterations,
        residual=solution.info.residual,
        hvp_calls=counter.hvps,
        grad_calls=counter.grads,
        outer_loss=outer_value,
        inner_grad_norm=inner_grad_norm,
        message=solution.info.message,
        solve=solution.info,
        extra={"mixed_calls": counter.mixed, "solver": repr(solver)},
    )
    return HypergradResult(tree.detach(grads), info)


@dataclass
class Implicit:
    """The IFT hypergradient as a strategy value, for training loops: ``Implicit(solver=Neumann(steps=5))``.

    Calling it runs :func:`implicit` with its settings.

    Example:
        >>> from nestopt import hypergrad, linalg
        >>> strategy = hypergrad.Implicit(solver=linalg.Neumann(steps=5, alpha=0.1))
        >>> strategy.solver.steps
        5
    """

    solver: Solver = field(default_factory=lambda: CG(steps=20))
    hvp_mode: HVPMode = DEFAULT_HVP_MODE

    def __call__(
        self,
        inner_loss: LossFn,
        outer_loss: LossFn,
        params: Tree,
        hparams: Tree,
        inner_batch: Any,
        outer_batch: Any,
        *,
        hessian_batch: Any = None,
    ) -> HypergradResult:
        return implicit(
            inner_loss,
            outer_loss,
            params,
            hparams,
            inner_batch,
            outer_batch,
            solver=self.solver,
            hessian_batch=hessian_batch,
            hvp_mode=self.hvp_mode,
        )
