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

They are thin layers over two composable primitives, which pull a cotangent on the inner solution back to
the hyperparameters (and, when unrolling, to the initial weights): :func:`implicit_vjp` and
:func:`unrolled_vjp`. Chaining them differentiates problems of several stages: :func:`two_stage` is the
hypergradient through pre-training (implicit) then fine-tuning (unrolled), and :class:`TwoStage` the same as
a strategy. :func:`implicit_solution` puts an implicit solution into torch's autograd graph (differentiable
once), :func:`unrolled_solution` an unrolled one (differentiable to any order: it can sit inside the loss of
a higher level, see ``docs/composing.md``).

:class:`Implicit`, :class:`Unrolled` and :class:`Forward` are the same estimators as strategy values: a
training loop calls them through the :class:`Strategy` protocol (see :mod:`nestopt.hypergrad.strategy`).
:class:`BestResponse` differentiates instead through a model that conditions on the hyperparameters
(hypernetworks, Self-Tuning Networks, Delta-STN: :mod:`nestopt.bestresponse`).

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

from nestopt.hypergrad.best_response import BestResponse
from nestopt.hypergrad.custom_root import custom_root
from nestopt.hypergrad.forward import Forward, forward
from nestopt.hypergrad.implicit import Implicit, default_solver, implicit, implicit_solution, implicit_vjp
from nestopt.hypergrad.result import HypergradInfo, HypergradResult, VJPResult
from nestopt.hypergrad.strategy import Problem, Strategy
from nestopt.hypergrad.two_stage import TwoStage, TwoStageProblem, TwoStageResult, two_stage
from nestopt.hypergrad.unrolled import Unrolled, unrolled, unrolled_vjp
from nestopt.hypergrad.unrolled_solution import unrolled_solution

__all__ = [
    "BestResponse",
    "Forward",
    "HypergradInfo",
    "HypergradResult",
    "Implicit",
    "Problem",
    "Strategy",
    "TwoStage",
    "TwoStageProblem",
    "TwoStageResult",
    "Unrolled",
    "VJPResult",
    "custom_root",
    "default_solver",
    "forward",
    "implicit",
    "implicit_solution",
    "implicit_vjp",
    "two_stage",
    "unrolled",
    "unrolled_solution",
    "unrolled_vjp",
]
