"""Hypergradients by the implicit function theorem (IFT).

At a solution :math:`w^*(\\lambda)` of the inner problem, :math:`\\nabla_w L_{in}(w^*, \\lambda) = 0`, so
:math:`\\partial w^* / \\partial \\lambda = -H^{-1} \\partial^2_{w\\lambda} L_{in}` with :math:`H = \\nabla^2_{ww}
L_{in}`. A cotangent :math:`v` on :math:`w^*` therefore pulls back to the hyperparameters as

.. math::  \\mathrm{VJP}(v) = -\\frac{\\partial^2 L_{in}}{\\partial \\lambda\\, \\partial w} H^{-1} v
           \\qquad (:func:`implicit_vjp`),

and the hypergradient of an outer loss is its direct term plus the VJP of its gradient in the weights:

.. math::  \\frac{d L_{out}}{d\\lambda} = \\frac{\\partial L_{out}}{\\partial \\lambda}
           + \\mathrm{VJP}\\Big(\\frac{\\partial L_{out}}{\\partial w}\\Big) \\qquad (:func:`implicit`).

The inverse-Hessian-vector product is delegated to a solver from :mod:`nestopt.linalg`. The inner gradient
is linearized once and reused for every Hessian product and for the mixed term, so a ``K``-step solver costs
one gradient, ``K`` Hessian products and one mixed product (plus the outer gradient for :func:`implicit`).

To use an implicit solution inside a larger torch graph and call ``.backward()`` through it, see
:func:`implicit_solution`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from nestopt import tree
from nestopt._validate import positive_int
from nestopt.autodiff import (
    CURVATURES,
    DEFAULT_HVP_MODE,
    Counter,
    Curvature,
    HVPMode,
    Linearization,
    LossFn,
    check_tree,
    linearize,
)
from nestopt.errors import InvalidArgumentError, NonFiniteError, UnsupportedError
from nestopt.hypergrad._outer import outer_gradients
from nestopt.hypergrad._reduce import CountedReduce, Reduce, counted, reduced_operator
from nestopt.hypergrad.result import HypergradInfo, HypergradResult, VJPResult
from nestopt.hypergrad.strategy import Problem, Strategy
from nestopt.linalg import CG, Amortized, LinearOperator, Neumann, Solution, Solver
from nestopt.tree import Tree

__all__ = ["DEFAULT_SOLVER_STEPS", "Implicit", "default_solver", "implicit", "implicit_solution", "implicit_vjp"]

DEFAULT_SOLVER_STEPS = 20
"""The default number of iterations of the default solver (and of ``linalg.CG()``)."""

DEFAULT_DAMPING = 0.1
"""Damping of the default solver: the Hessians of neural-network training losses have small negative
eigenvalues away from a minimum, on which undamped CG stops (see ``docs/user-guide.md``)."""


def default_solver() -> Solver:
    """The solver used when none is given: ``linalg.CG(steps=20, damping=0.1)``."""
    return CG(steps=DEFAULT_SOLVER_STEPS, damping=DEFAULT_DAMPING)


def _check_solver(solver: Solver | None) -> Solver:
    solver = default_solver() if solver is None else solver
    if not isinstance(solver, Solver):
        raise InvalidArgumentError(f"solver must be a nestopt.linalg solver (CG, Neumann, ...), got {solver!r}")
    return solver


@dataclass
class _System:
    """The inner problem linearized at the solution: the operator :math:`H` of :math:`H x = v`, the solver ready
    for it, and the linearization of the mixed term."""

    mixed_lin: Linearization
    op: LinearOperator
    solver: Solver
    calls_before: int


def _system(
    inner_loss: LossFn,
    params: Tree,
    hparams: Tree,
    inner_batch: Any,
    *,
    solver: Solver,
    hessian_batch: Any,
    hvp_mode: HVPMode,
    counter: Counter,
    seed: int | None,
    curvature: Curvature,
    reduce: CountedReduce,
) -> _System:
    """Linearize the inner gradient and let the solver make its estimates (a Lanczos step, a Nystrom sketch)
    before the right-hand side is allocated: its vector is then not alive beside the estimate's."""
    separate = hessian_batch is not None and hessian_batch is not inner_batch
    mixed_lin = linearize(
        inner_loss, params, hparams, inner_batch, mode=hvp_mode, counter=counter, seed=seed,
        curvature="hessian" if separate else curvature, keep_grad=False,
    )  # fmt: skip
    hess_lin = mixed_lin
    if separate:
        hess_lin = linearize(
            inner_loss, params, hparams, hessian_batch, mode=hvp_mode, counter=counter, seed=seed,
            curvature=curvature, keep_grad=False,
        )  # fmt: skip
    op = reduced_operator(LinearOperator.hessian(hess_lin), reduce)
    before = op.calls
    return _System(mixed_lin, op, solver.ready(op), before)


def _pull_back(system: _System, cotangent: Tree) -> tuple[Tree, Solution, tuple[str, ...], float]:
    """``-(d2 L / d hparams d params) H^{-1} cotangent``, the solve (its products include the solver's
    estimates), the hparams the gradient does not read, and the inner gradient's norm."""
    solution = system.solver.solve(system.op, cotangent)
    solution.info.hvp_calls = system.op.calls - system.calls_before
    lin = system.mixed_lin
    mixed = tree.scale_(lin.mixed_vjp(solution.value), -1.0)  # fresh autograd outputs: negate in place
    return mixed, solution, lin.last_unused, lin.grad_norm


def _info(
    solution: Solution,
    counter: Counter,
    outer_value: float,
    grad_norm: float,
    solver: Solver,
    curvature: str,
    reduce: CountedReduce,
) -> HypergradInfo:
    return HypergradInfo(
        method="implicit",
        status=solution.info.status,
        iterations=solution.info.iterations,
        residual=solution.info.residual,
        hvp_calls=counter.hvps,
        grad_calls=counter.grads,
        outer_loss=outer_value,
        inner_grad_norm=grad_norm,
        message=solution.info.message,
        solve=solution.info,
        extra={"mixed_calls": counter.mixed, "solver": repr(solver), "curvature": curvature, **reduce.extra()},
    )


def _check_finite(grads: Tree, solution: Solution, what: str) -> None:
    if not tree.all_finite(grads):
        raise NonFiniteError(
            f"the implicit {what} is not finite (solver status {solution.info.status.value}: "
            f"{solution.info.message}); use a more stable solver or damping"
        )


def implicit_vjp(
    inner_loss: LossFn,
    params: Tree,
    hparams: Tree,
    inner_batch: Any,
    cotangent: Tree,
    *,
    solver: Solver | None = None,
    hessian_batch: Any = None,
    hvp_mode: HVPMode = DEFAULT_HVP_MODE,
    seed: int | None = None,
    curvature: Curvature = "hessian",
    reduce: Reduce | None = None,
) -> VJPResult:
    """Pull a cotangent on the inner solution back to the hyperparameters by the IFT.

    .. math::  v \\mapsto -\\frac{\\partial^2 L_{in}}{\\partial \\lambda\\, \\partial w}
               \\Big[\\frac{\\partial^2 L_{in}}{\\partial w\\, \\partial w}\\Big]^{-1} v

    This is the building block of :func:`implicit` and of compositions (a two-stage hypergradient pulls the
    cotangent that an unrolled fine-tuning stage puts on its initial weights back through pre-training).

    Args:
        inner_loss: ``(params, hparams, batch) -> scalar``, the loss the inner problem minimizes.
        params: the inner solution :math:`w^*` (a tree); it is not modified.
        hparams: the hyperparameters :math:`\\lambda` (a tree).
        inner_batch: batch for the inner gradient (the mixed term, and the Hessian unless ``hessian_batch``).
        cotangent: :math:`v`, a tree shaped like ``params``.
        solver: the inverse-Hessian-vector solver (default :func:`default_solver`).
        hessian_batch: batch for the Hessian products; defaults to ``inner_batch``.
        hvp_mode: ``"rev-rev"`` or ``"fwd-rev"`` (see :mod:`nestopt.autodiff`).
        seed: seeds the randomness of the loss's evaluations (dropout masks), the same for every product.
        curvature: ``"hessian"`` (exact) or ``"gauss-newton"``: solve with the generalized Gauss-Newton matrix
            instead, which is positive semi-definite (no negative curvature for CG) but approximate; the loss
            must expose its split (:mod:`nestopt.autodiff`'s ``GaussNewtonLoss``, or an ``Objective``'s losses).
        reduce: for data-parallel runs whose inner loss is the mean over ranks: a function ``tree -> tree``
            averaging over the ranks (:func:`nestopt.distributed.all_reduce_mean`), applied to every curvature
            product and to the result; ``cotangent`` must already be the same on every rank. ``None``: one
            process. Its calls and bytes are in ``info.extra`` (``reduce_calls``, ``reduce_bytes``).

    Returns:
        A :class:`VJPResult` with ``hparams`` (the cotangent on the hyperparameters), ``solution``
        (:math:`H^{-1} v`), ``unused`` (hyperparameters the inner gradient does not read: their cotangent is
        exactly zero) and ``info``.

    Example:
        >>> import torch
        >>> from nestopt import hypergrad, linalg
        >>> inner = lambda p, h, b: 0.5 * ((p["w"] - h["c"]) ** 2).sum()   # w* = c, so dw*/dc = I
        >>> res = hypergrad.implicit_vjp(inner, {"w": torch.ones(2)}, {"c": torch.ones(2)}, None,
        ...                              {"w": torch.tensor([3.0, 4.0])}, solver=linalg.CG(steps=5))
        >>> res.hparams["c"]
        tensor([3., 4.])
    """
    params = check_tree(params, "params")
    hparams = check_tree(hparams, "hparams")
    tree.check_like(params, cotangent, "params", "cotangent")
    solver = _check_solver(solver)
    counter = Counter()
    reducer = counted(reduce)
    system = _system(
        inner_loss, params, hparams, inner_batch, solver=solver, hessian_batch=hessian_batch, hvp_mode=hvp_mode,
        counter=counter, seed=seed, curvature=curvature, reduce=reducer,
    )  # fmt: skip
    grads, solution, unused, grad_norm = _pull_back(system, tree.detach(cotangent))
    grads = reducer(grads)
    _check_finite(grads, solution, "vector-Jacobian product")
    info = _info(solution, counter, float("nan"), grad_norm, solver, curvature, reducer)
    return VJPResult(tree.detach(grads), info, solution=solution.value, unused=unused)


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
    seed: int | None = None,
    curvature: Curvature = "hessian",
    reduce: Reduce | None = None,
) -> HypergradResult:
    """The IFT hypergradient of ``outer_loss`` at inner parameters ``params`` (assumed inner-optimal).

    Args:
        inner_loss: ``(params, hparams, batch) -> scalar``, the loss the inner problem minimizes.
        outer_loss: ``(params, hparams, batch) -> scalar``, the loss whose hypergradient is wanted.
        params: the inner solution :math:`w^*` (a tree); it is not modified.
        hparams: the hyperparameters :math:`\\lambda` (a tree).
        inner_batch: batch for the inner gradient (the mixed term).
        outer_batch: batch for the outer loss.
        solver: the inverse-Hessian-vector solver (default :func:`default_solver`, damped CG).
        hessian_batch: batch for the Hessian products; defaults to ``inner_batch``.
        hvp_mode: ``"rev-rev"`` or ``"fwd-rev"`` (see :mod:`nestopt.autodiff`).
        seed: seeds the randomness of the inner loss's evaluations (dropout masks).
        curvature: ``"hessian"`` (exact) or ``"gauss-newton"`` (see :func:`implicit_vjp`).
        reduce: for data-parallel runs (each rank holds a shard of both batches and the losses are means over
            ranks): a function ``tree -> tree`` averaging over the ranks, such as
            :func:`nestopt.distributed.all_reduce_mean`. It is applied to the outer gradient in the weights, to
            every curvature product of the solve, and once to the result (direct plus mixed term): ``K + 1``
            reductions of the weights' size and one of the hyperparameters' for a ``K``-product solve, after
            which every rank holds the global hypergradient and has run the same solver iterations.
            ``None``: one process.

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
    solver = _check_solver(solver)
    counter = Counter()
    reducer = counted(reduce)
    system = _system(
        inner_loss, params, hparams, inner_batch, solver=solver, hessian_batch=hessian_batch, hvp_mode=hvp_mode,
        counter=counter, seed=seed, curvature=curvature, reduce=reducer,
    )  # fmt: skip
    outer_value, g_w, g_direct, outer_unused = outer_gradients(
        outer_loss, params, hparams, outer_batch, counter, drop_unused=True, reduce_params=reducer
    )
    grads, solution, inner_unused, grad_norm = _pull_back(system, g_w)
    unusable = sorted(set(inner_unused) & set(outer_unused))
    if unusable:
        raise UnsupportedError(
            f"hyperparameters {unusable} enter neither the inner loss's gradient nor the outer loss, so the "
            "implicit function theorem gives them no hypergradient. A learning rate (or any other optimizer "
            "setting) acts only through the optimization trajectory: differentiate it with "
            "hypergrad.unrolled or hypergrad.forward"
        )
    for k, g in g_direct.items():  # direct + VJP, in the VJP's buffers: no extra hparams-sized copy
        grads[k].add_(g)
    grads = reducer(grads)  # one reduction of both terms
    _check_finite(grads, solution, "hypergradient")
    info = _info(solution, counter, outer_value, grad_norm, solver, curvature, reducer)
    return HypergradResult(tree.detach(grads), info)


class _ImplicitSolution(torch.autograd.Function):
    """Identity on the solution's values in the forward pass; :func:`implicit_vjp` in the backward pass."""

    @staticmethod
    def forward(ctx: Any, setup: dict[str, Any], *hparam_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.setup = setup
        ctx.save_for_backward(*hparam_values)
        return tuple(v.detach().clone() for v in setup["params"].values())

    @staticmethod
    def backward(ctx: Any, *cotangents: torch.Tensor | None) -> tuple[Any, ...]:
        if torch.is_grad_enabled():  # create_graph=True: a second derivative would silently miss this path
            raise UnsupportedError(
                "implicit_solution is differentiable once: its backward pass cannot be differentiated again "
                "(create_graph=True, a Hessian-vector product through it); for a solution inside the loss of a "
                "higher level use hypergrad.unrolled_solution, which is differentiable to any order"
            )
        setup = ctx.setup
        keys = list(setup["params"])
        hparams = dict(zip(setup["hparam_keys"], ctx.saved_tensors))
        cot = {k: torch.zeros_like(setup["params"][k]) if c is None else c for k, c in zip(keys, cotangents)}
        res = implicit_vjp(setup["inner_loss"], setup["params"], hparams, setup["batch"], cot, **setup["options"])
        setup["report"](res.info)
        return (None, *[res.hparams[k] for k in setup["hparam_keys"]])


def implicit_solution(
    inner_loss: LossFn,
    params: Tree,
    hparams: Tree,
    inner_batch: Any,
    *,
    solver: Solver | None = None,
    hvp_mode: HVPMode = DEFAULT_HVP_MODE,
    seed: int | None = None,
    curvature: Curvature = "hessian",
    reduce: Reduce | None = None,
) -> Tree:
    """The inner solution ``params`` as a function of ``hparams`` in torch's autograd graph.

    The returned tensors equal ``params``; calling ``.backward()`` on anything computed from them sends
    gradients to the ``hparams`` leaves (those with ``requires_grad``) through :func:`implicit_vjp`, so an
    implicit solution composes with any torch code: a loss of several solutions, a hypergradient through a
    later unrolled stage, a penalty on the solution. The last backward pass's diagnostics are in
    ``implicit_solution.last_info``. It is differentiable once: a backward pass with ``create_graph=True``
    through it raises :class:`~nestopt.errors.UnsupportedError` (see :func:`unrolled_solution`).

    Example:
        >>> import torch
        >>> from nestopt import hypergrad, linalg
        >>> inner = lambda p, h, b: 0.5 * ((p["w"] - h["c"]) ** 2).sum() + 0.5 * (p["w"] ** 2).sum()
        >>> c = torch.tensor([2.0, 4.0], requires_grad=True)
        >>> w = hypergrad.implicit_solution(inner, {"w": c.detach() / 2}, {"c": c}, None, solver=linalg.CG())
        >>> (w["w"] ** 2).sum().backward()   # w* = c / 2, so d|w*|^2/dc = c / 2
        >>> c.grad
        tensor([1., 2.])
    """
    params = tree.detach(check_tree(params, "params"))
    hparams = check_tree(hparams, "hparams")
    keys = list(hparams)
    setup = {
        "inner_loss": inner_loss,
        "params": params,
        "hparam_keys": keys,
        "batch": inner_batch,
        "options": {
            "solver": _check_solver(solver),
            "hvp_mode": hvp_mode,
            "seed": seed,
            "curvature": curvature,
            "reduce": reduce,
        },
        "report": lambda info: setattr(implicit_solution, "last_info", info),
    }
    out = _ImplicitSolution.apply(setup, *[hparams[k] for k in keys])
    return dict(zip(params, out))


implicit_solution.last_info = None  # type: ignore[attr-defined]


@dataclass
class Implicit(Strategy):
    """The IFT hypergradient as a strategy: ``Implicit(solver=linalg.Neumann(steps=5, alpha=0.1))``.

    In a training loop, the loop's inner optimizer takes the inner steps and the hypergradient is evaluated
    at the weights it reached, on the next training and validation batches. Calling the strategy directly
    runs :func:`implicit` with its settings.

    **Amortized solves.** Consecutive outer steps solve nearly the same linear system, so the strategy solves
    them as one sequence (:class:`~nestopt.linalg.Amortized`): with ``reuse_solution=True`` each solve starts
    from the previous outer step's solution (a guess worse than zero is discarded), and what the solver
    estimates from the Hessian (the automatic step of ``Neumann(alpha="auto")``, the sketch of
    ``CG(preconditioner=linalg.NystromPreconditioner(...))``) is kept and refreshed every ``refresh`` outer
    steps. With few iterations per outer step the iterates accumulate across outer steps: the single-loop
    methods (SOBA, AmIGO) are :meth:`single_loop`. This state lives in the strategy (created by
    :meth:`reset`, checkpointed by :meth:`state_dict`).

    Args:
        solver: the linear solver (default :func:`default_solver`).
        hvp_mode: how Hessian-vector products are formed.
        curvature: ``"hessian"`` (exact, default) or ``"gauss-newton"`` (positive semi-definite; see
            :func:`implicit_vjp`).
        reduce: the data-parallel reduction (see :func:`implicit`); in a training loop, ``None`` takes the
            loop's (:attr:`Problem.reduce <nestopt.hypergrad.Problem>`), so that the strategy gives the exact
            data-parallel hypergradient under :class:`nestopt.distributed.DataParallel`.
        reuse_solution: warm-start each outer step's solve from the previous one's solution.
        refresh: outer steps between re-estimates of what the solver estimates from the Hessian.

    Example:
        >>> from nestopt import hypergrad, linalg
        >>> strategy = hypergrad.Implicit(solver=linalg.Neumann(steps=5, alpha=0.1))
        >>> strategy.solver.steps, sorted(strategy.differentiates)
        (5, ['loss'])
        >>> hypergrad.Implicit.single_loop().solver
        Neumann(steps=0, alpha='auto', tol=None, residual=False, on_growth='continue', check_every=1, estimate_steps=10, seed=0, throw=False)
    """

    solver: Solver = field(default_factory=default_solver)
    hvp_mode: HVPMode = DEFAULT_HVP_MODE
    curvature: Curvature = "hessian"
    reduce: Reduce | None = None
    reuse_solution: bool = False
    refresh: int = 10
    name = "implicit"
    exact_data_parallel = True
    _session: Solver = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_solver(self.solver)
        counted(self.reduce)  # checks it
        if self.curvature not in CURVATURES:
            raise InvalidArgumentError(f"curvature must be one of {CURVATURES}, got {self.curvature!r}")
        positive_int("refresh", self.refresh)
        self.reset()

    @classmethod
    def single_loop(
        cls,
        iterations: int = 1,
        *,
        alpha: float | Literal["auto"] = "auto",
        curvature: Curvature = "hessian",
        refresh: int = 10,
        hvp_mode: HVPMode = DEFAULT_HVP_MODE,
    ) -> Implicit:
        """The single-loop mode: ``iterations`` Richardson steps per outer step on :math:`H x = g`, continuing
        from the previous outer step's iterate (SOBA, Dagreou et al. 2022; AmIGO, Arbel & Mairal 2022).

        One step, :math:`x \\leftarrow x + \\alpha (g - H x)`, costs one Hessian-vector product: a
        hypergradient then costs about what two training steps cost, and the iterate converges over the run.
        ``alpha="auto"`` is :math:`1/\\lambda_{\\max}` estimated by Lanczos every ``refresh`` outer steps.
        This is ``Implicit(solver=linalg.Neumann(steps=iterations - 1, alpha=alpha, on_growth="continue"),
        reuse_solution=True)``.
        """
        steps = positive_int("iterations", iterations) - 1
        solver = Neumann(steps=steps, alpha=alpha, on_growth="continue")
        return cls(solver=solver, hvp_mode=hvp_mode, curvature=curvature, reuse_solution=True, refresh=refresh)

    def reset(self) -> None:
        """Forget the previous solution and the solver's estimates (a new run, or re-initialized weights)."""
        amortize = self.reuse_solution or not self.solver.prepared
        self._session = (
            Amortized(self.solver, reuse_solution=self.reuse_solution, refresh=self.refresh)
            if amortize
            else self.solver
        )

    def state_dict(self) -> dict[str, Any]:
        return {"solver": self._session.state_dict()} if isinstance(self._session, Amortized) else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if isinstance(self._session, Amortized) and "solver" in state:
            self._session.load_state_dict(state["solver"])

    def hypergradient(self, problem: Problem) -> HypergradResult:
        if isinstance(self._session, Amortized):
            self._session.seed = problem.seed % 2**31  # the refreshes' randomness follows the run's seed
        return implicit(
            problem.inner_loss, problem.outer_loss, tree.detach(problem.params), problem.hparams,
            problem.next_train(), problem.next_val(), solver=self._session, hvp_mode=self.hvp_mode, seed=problem.seed,
            curvature=self.curvature, reduce=self.reduce if self.reduce is not None else problem.reduce,
        )  # fmt: skip

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
            inner_loss, outer_loss, params, hparams, inner_batch, outer_batch,
            solver=self._session, hessian_batch=hessian_batch, hvp_mode=self.hvp_mode, curvature=self.curvature,
            reduce=self.reduce,
        )  # fmt: skip
