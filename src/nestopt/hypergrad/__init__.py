"""Hypergradients: the derivative of an outer loss through the solution of an inner problem.

=============================  ===========================================  ==========================
estimator                      how                                          use it for
=============================  ===========================================  ==========================
:func:`implicit`               implicit function theorem + a linalg solver  many hyperparameters, long inner runs
:func:`unrolled`               reverse mode through ``K`` optimizer steps   optimizer hyperparameters, short horizons
:func:`forward`                forward mode through the same unroll         a few hyperparameters, long horizons
:func:`custom_root`            IFT around any solver, given its optimality  closed-form or black-box inner solvers
=============================  ===========================================  ==========================

Each returns a :class:`HypergradResult` with ``grads`` (the keys of ``hparams``) and ``info``.
:class:`Implicit`, :class:`Unrolled` and :class:`Forward` are the same estimators as strategy values.

Example:
    >>> import torch
    >>> from nestopt import hypergrad, linalg
    >>> inner = lambda p, h, b: ((p["w"] - b) ** 2).sum() + h["l2"].exp() * (p["w"] ** 2).sum()
    >>> outer = lambda p, h, b: ((p["w"] - b) ** 2).sum()
    >>> b = torch.tensor([1.0, 2.0], dtype=torch.float64)
    >>> hp = {"l2": torch.tensor(0.0, dtype=torch.float64)}
    >>> w = {"w": b / (1 + hp["l2"].exp())}  # the inner optimum
    >>> res = hypergrad.implicit(inner, outer, w, hp, b, b, solver=linalg.CG(steps=5))
    >>> float(res.grads["l2"])  # closed form: |b|^2 * 2 e^l / (1 + e^l)^3 = 1.25
    1.25
"""

from nestopt.hypergrad.custom_root import custom_root
from nestopt.hypergrad.forward import Forward, forward
from nestopt.hypergrad.implicit import Implicit, implicit
from nestopt.hypergrad.result import HypergradInfo, HypergradResult
from nestopt.hypergrad.unrolled import Unrolled, unrolled

__all__ = [
    "Forward",
    "HypergradInfo",
    "HypergradResult",
    "Implicit",
    "Unrolled",
    "custom_root",
    "forward",
    "implicit",
    "unrolled",
]
