"""Derivatives of losses ``loss(params, hparams, batch) -> scalar`` with respect to trees.

For an inner loss :math:`L(w, \\lambda)` this module computes

* the gradient :math:`\\nabla_w L`,
* Hessian-vector products :math:`H v = \\nabla^2_{ww} L \\, v`,
* the mixed second-derivative VJP :math:`(\\partial^2 L / \\partial \\lambda \\partial w)\\, v`, a tree over
  ``hparams``: the term the implicit function theorem multiplies the inverse-Hessian-vector product with,
* the mixed JVP :math:`(\\partial^2 L / \\partial w \\partial \\lambda)\\, u`, a tree over ``params``.

Two ways of forming :math:`Hv` are offered (``mode``):

``"rev-rev"``
    reverse over reverse. :func:`linearize` builds the gradient's graph once and every product is one
    backward pass through it (``retain_graph``), so K products cost one forward/backward plus K double
    backward passes. The mixed VJP reuses the same graph. Measured fastest for MLPs on CPU
    (``benchmarks/hvp_modes.py``), hence the default.
``"fwd-rev"``
    forward over reverse (``torch.func.jvp`` of ``torch.func.grad``): no retained graph, but every product
    recomputes the forward and backward pass in forward mode.

Every call is counted in a :class:`Counter` that estimators return in their diagnostics.

Example:
    >>> import torch
    >>> from nestopt import autodiff
    >>> loss = lambda p, h, batch: 0.5 * (h["scale"] * p["w"] ** 2).sum()
    >>> params, hparams = {"w": torch.ones(3)}, {"scale": torch.tensor(2.0)}
    >>> lin = autodiff.linearize(loss, params, hparams, None)
    >>> lin.hvp({"w": torch.ones(3)})["w"]
    tensor([2., 2., 2.])
    >>> lin.mixed_vjp({"w": torch.ones(3)})["scale"]
    tensor(3.)
"""

from nestopt.autodiff._core import (
    Counter,
    LossFn,
    check_loss_value,
    check_tree,
    evaluate_loss,
    functional_loss,
    grad,
    raw_vjp,
    vjp,
)
from nestopt.autodiff._decays import DecayTerms
from nestopt.autodiff._gauss_newton import GaussNewtonLoss
from nestopt.autodiff._linearization import (
    CURVATURES,
    DEFAULT_HVP_MODE,
    Curvature,
    HVPMode,
    Linearization,
    hvp,
    linearize,
    mixed_jvp,
    mixed_vjp,
)

__all__ = [
    "CURVATURES",
    "DEFAULT_HVP_MODE",
    "Counter",
    "Curvature",
    "DecayTerms",
    "GaussNewtonLoss",
    "HVPMode",
    "Linearization",
    "LossFn",
    "check_loss_value",
    "check_tree",
    "evaluate_loss",
    "functional_loss",
    "grad",
    "hvp",
    "linearize",
    "mixed_jvp",
    "mixed_vjp",
    "raw_vjp",
    "vjp",
]
