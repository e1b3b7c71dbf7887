"""Implicit differentiation of any solver through its optimality condition (Blondel et al., 2022).

If ``inner_solver(hparams, *args)`` returns :math:`w^*(\\lambda)` with :math:`F(w^*, \\lambda) = 0`, then

.. math::  \\frac{\\partial w^*}{\\partial \\lambda} = -\\left[\\partial_w F\\right]^{-1} \\partial_\\lambda F,

so a cotangent :math:`u` on :math:`w^*` pulls back to
:math:`-(\\partial_\\lambda F)^\\top x` with :math:`(\\partial_w F)^\\top x = u`. The solver runs without a graph;
only its answer and the optimality function are differentiated, in the backward pass.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from nestopt.autodiff import check_tree
from nestopt.errors import InvalidArgumentError, NonFiniteError, ShapeMismatchError, UnsupportedError
from nestopt.linalg import CG, GMRES, LinearOperator, Solver
from nestopt.tree import Tree

__all__ = ["custom_root"]

OptimalityFn = Callable[..., Tree]


@dataclass
class _Setup:
    """What the Function needs besides its tensor inputs (an object, not a dict: functorch must not flatten it)."""

    inner_solver: Callable[..., Tree]
    optimality_fn: OptimalityFn
    solver: Solver
    symmetric: bool
    hparam_keys: list[str]
    args: list[tuple[bool, Any]]  # (is a tensor input, the value otherwise) for each positional argument
    kwargs: dict[str, Any]
    report: Callable[[Any], None]
    param_keys: list[str] = field(default_factory=list)

    def split(self, inputs: tuple[Any, ...]) -> tuple[Tree, list[Any]]:
        """The hyperparameter tree and the solver's positional arguments from the Function's inputs."""
        n_h = len(self.hparam_keys)
        tensors = iter(inputs[n_h:])
        args = [next(tensors) if is_tensor else value for is_tensor, value in self.args]
        return dict(zip(self.hparam_keys, inputs[:n_h])), args


def _implicit_gradient(setup: _Setup, n_inputs: int, saved: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """:math:`-(\\partial_\\lambda F)^\\top x` with :math:`(\\partial_w F)^\\top x = u` for one problem."""
    h_in, args = setup.split(saved[:n_inputs])
    p_keys, h_keys = setup.param_keys, setup.hparam_keys
    n_p = len(p_keys)
    w = dict(zip(p_keys, saved[n_inputs : n_inputs + n_p]))
    cotangent = dict(zip(p_keys, saved[n_inputs + n_p :]))

    def residual(w_: Tree, h_: Tree) -> Tree:
        out = setup.optimality_fn(w_, h_, *args, **setup.kwargs)
        if not isinstance(out, dict) or set(out) != set(p_keys):
            raise ShapeMismatchError(
                f"optimality_fn must return a tree with the keys of the solution {sorted(p_keys)}, "
                f"got {sorted(out) if isinstance(out, dict) else type(out).__name__}"
            )
        return {k: out[k] for k in p_keys}

    # torch.func.vjp rather than autograd.grad, so that the backward pass also runs under torch.func.grad
    vjp_w = torch.func.vjp(lambda w_: residual(w_, h_in), w)[1]
    vjp_h = torch.func.vjp(lambda h_: residual(w, h_), h_in)[1]

    def jacobian_product(v: Tree) -> Tree:  # (dF/dw) v: the transpose of the adjoint operator, for NormalCG
        return torch.func.jvp(lambda w_: residual(w_, h_in), (w,), (v,))[1]

    op = LinearOperator(
        lambda v: vjp_w(v)[0],  # (dF/dw)^T v, the operator of the adjoint system
        like=w,
        rmatvec=None if setup.symmetric else jacobian_product,
        symmetric=setup.symmetric,
    )
    solution = setup.solver.solve(op, cotangent)
    setup.report(solution.info)
    grads = vjp_h(solution.value)[0]
    out = tuple(-grads[k] for k in h_keys)
    if not all(bool(torch.isfinite(g).all()) for g in out):
        raise NonFiniteError(f"custom_root: the implicit gradient is not finite ({solution.info.message})")
    return out


class _ImplicitBackward(torch.autograd.Function):
    """The backward pass of :class:`_RootFunction` as a Function of its own, so that under ``vmap`` it loops
    over the batch too (the solver's convergence checks cannot run on batched tensors)."""

    @staticmethod
    def forward(setup: _Setup, n_inputs: int, *saved: Tensor) -> tuple[Tensor, ...]:
        return _implicit_gradient(setup, n_inputs, saved)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Any, ...]:
        raise UnsupportedError("custom_root hypergradients cannot be differentiated a second time")

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], setup: _Setup, n_inputs: int, *saved: Tensor) -> Any:
        dims = in_dims[2:]
        rows = [
            _ImplicitBackward.apply(setup, n_inputs, *[x if d is None else x.select(d, i) for x, d in zip(saved, dims)])
            for i in range(info.batch_size)
        ]
        stacked = tuple(torch.stack([row[j] for row in rows]) for j in range(len(rows[0])))
        return stacked, tuple(0 for _ in stacked)


class _RootFunction(torch.autograd.Function):
    """The inner solution in the forward pass; the IFT in the backward pass; a loop over the batch under vmap."""

    @staticmethod
    def forward(setup: _Setup, *inputs: Tensor) -> tuple[Tensor, ...]:
        h, args = setup.split(inputs)
        with torch.no_grad():
            solution = check_tree(setup.inner_solver(h, *args, **setup.kwargs), "the inner solver's result")
        setup.param_keys = list(solution)
        return tuple(solution[k].detach() for k in solution)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        setup, *values = inputs
        ctx.setup = setup
        ctx.n_inputs = len(values)
        ctx.save_for_backward(*values, *output)

    @staticmethod
    def backward(ctx: Any, *cotangents: Tensor) -> tuple[Any, ...]:
        saved = ctx.saved_tensors
        cots = [torch.zeros_like(w) if c is None else c for c, w in zip(cotangents, saved[ctx.n_inputs :])]
        grads = _ImplicitBackward.apply(ctx.setup, ctx.n_inputs, *saved, *cots)
        return (None, *grads, *[None] * (ctx.n_inputs - len(ctx.setup.hparam_keys)))

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], setup: _Setup, *inputs: Tensor) -> Any:
        """A batch of independent problems: one solve (and, in the backward pass, one IFT solve) each."""
        dims = in_dims[1:]
        rows = [
            _RootFunction.apply(setup, *[x if d is None else x.select(d, i) for x, d in zip(inputs, dims)])
            for i in range(info.batch_size)
        ]
        stacked = tuple(torch.stack([row[j] for row in rows]) for j in range(len(rows[0])))
        return stacked, tuple(0 for _ in stacked)


def custom_root(
    optimality_fn: OptimalityFn, *, solver: Solver | None = None, symmetric: bool = True
) -> Callable[[Callable[..., Tree]], Callable[..., Tree]]:
    """Make ``inner_solver(hparams, *args, **kwargs) -> params`` differentiable w.r.t. ``hparams`` by the IFT.

    Args:
        optimality_fn: ``F(params, hparams, *args, **kwargs) -> tree`` (keys of ``params``), zero at the
            solution; typically the inner loss's gradient.
        solver: solves :math:`(\\partial_w F)^\\top x = u`. Default ``linalg.CG()`` (20 iterations) when ``symmetric``,
            else ``linalg.GMRES(steps=200, restart=50)``; for a non-symmetric ``F`` any of ``linalg.GMRES``,
            ``linalg.BiCGSTAB``, ``linalg.NormalCG`` or ``linalg.Exact`` (NormalCG's transpose products
            :math:`(\\partial_w F) v` are double backward passes).
        symmetric: whether :math:`\\partial_w F` is symmetric (true when ``F`` is a gradient).

    Returns:
        A decorator. The decorated solver returns parameters through which autograd differentiates; the
        last backward pass's solve diagnostics are in ``decorated.last_info``. Under ``torch.func.vmap`` it
        solves a batch of independent problems (the hyperparameters and the tensor positional arguments may
        carry the batch dimension), one solve and one implicit backward solve per problem.

    Example:
        >>> import torch
        >>> from nestopt import hypergrad, linalg
        >>> x = torch.randn(20, 3, dtype=torch.float64); y = torch.randn(20, dtype=torch.float64)
        >>> def optimality(p, h, x, y):  # gradient of 0.5|xw - y|^2 + 0.5 * exp(l2) |w|^2
        ...     return {"w": x.T @ (x @ p["w"] - y) + h["l2"].exp() * p["w"]}
        >>> @hypergrad.custom_root(optimality, solver=linalg.CG(steps=20))
        ... def ridge(h, x, y):
        ...     return {"w": torch.linalg.solve(x.T @ x + h["l2"].exp() * torch.eye(3, dtype=x.dtype), x.T @ y)}
        >>> l2 = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
        >>> ridge({"l2": l2}, x, y)["w"].sum().backward()
        >>> l2.grad.shape
        torch.Size([])
    """
    if solver is None:
        solver = CG() if symmetric else GMRES(steps=200, restart=50)
    if not isinstance(solver, Solver):
        raise InvalidArgumentError(f"solver must be a nestopt.linalg solver, got {solver!r}")

    def decorate(inner_solver: Callable[..., Tree]) -> Callable[..., Tree]:
        @functools.wraps(inner_solver)
        def wrapped(hparams: Tree, *args: Any, **kwargs: Any) -> Tree:
            hparams = check_tree(hparams, "hparams")
            h_keys = list(hparams)
            setup = _Setup(
                inner_solver=inner_solver,
                optimality_fn=optimality_fn,
                solver=solver,
                symmetric=symmetric,
                hparam_keys=h_keys,
                args=[(isinstance(a, Tensor), None if isinstance(a, Tensor) else a) for a in args],
                kwargs=kwargs,
                report=lambda info: setattr(wrapped, "last_info", info),
            )
            tensor_args = [a for a in args if isinstance(a, Tensor)]
            outs = _RootFunction.apply(setup, *[hparams[k] for k in h_keys], *tensor_args)
            return dict(zip(setup.param_keys, outs))

        setattr(wrapped, "last_info", None)  # noqa: B010 (documented attribute of the decorated function)
        return wrapped

    return decorate
