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
from typing import Any

import torch
from torch import Tensor

from nestopt import tree
from nestopt.autodiff import check_tree, vjp
from nestopt.errors import InvalidArgumentError, NonFiniteError, ShapeMismatchError
from nestopt.linalg import CG, GMRES, LinearOperator, Solver
from nestopt.tree import Tree

__all__ = ["custom_root"]

OptimalityFn = Callable[..., Tree]


class _RootFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, setup: dict[str, Any], *hparam_values: Tensor) -> tuple[Tensor, ...]:
        ctx.setup = setup
        ctx.save_for_backward(*hparam_values)
        return tuple(setup["solution"][k].detach().clone() for k in setup["param_keys"])

    @staticmethod
    def backward(ctx: Any, *cotangents: Tensor) -> tuple[Any, ...]:
        setup = ctx.setup
        h_values = ctx.saved_tensors
        p_keys, h_keys = setup["param_keys"], setup["hparam_keys"]
        with torch.enable_grad():
            w = {k: setup["solution"][k].detach().requires_grad_(True) for k in p_keys}
            h = {k: v.detach().requires_grad_(True) for k, v in zip(h_keys, h_values)}
            residual = setup["optimality_fn"](w, h, *setup["args"], **setup["kwargs"])
            if not isinstance(residual, dict) or set(residual) != set(p_keys):
                raise ShapeMismatchError(
                    f"optimality_fn must return a tree with the keys of the solution {sorted(p_keys)}, "
                    f"got {sorted(residual) if isinstance(residual, dict) else type(residual).__name__}"
                )
            outs = [residual[k] for k in p_keys]
            w_list = [w[k] for k in p_keys]

            def transpose_jacobian(v: Tree) -> Tree:
                return dict(zip(p_keys, vjp(outs, w_list, [v[k] for k in p_keys], retain_graph=True)))

            rhs = {k: (c if c is not None else torch.zeros_like(w[k])) for k, c in zip(p_keys, cotangents)}
            if setup["symmetric"]:
                op = LinearOperator(transpose_jacobian, like=w, symmetric=True)
            else:
                op = LinearOperator(transpose_jacobian, like=w, rmatvec=_jacobian_product(outs, w_list, p_keys),
                                    symmetric=False)  # fmt: skip
            solution = setup["solver"].solve(op, rhs)
            grads_h = vjp(outs, [h[k] for k in h_keys], [solution.value[k] for k in p_keys], retain_graph=True)
        setup["report"](solution.info)
        out = [-g for g in grads_h]
        if not all(bool(torch.isfinite(g).all()) for g in out):
            raise NonFiniteError(f"custom_root: the implicit gradient is not finite ({solution.info.message})")
        return (None, *out)


def _jacobian_product(outs: list[Tensor], w_list: list[Tensor], keys: list[str]) -> Callable[[Tree], Tree]:
    """``v -> (d F / d w) v`` by differentiating the linear map ``u -> (dF/dw)^T u`` (built once, lazily)."""
    graph: list[Any] = []

    def product(v: Tree) -> Tree:
        with torch.enable_grad():
            if not graph:
                dummy = [torch.zeros_like(o).requires_grad_(True) for o in outs]
                graph.extend([dummy, vjp(outs, w_list, dummy, retain_graph=True, create_graph=True)])
            dummy, jt_dummy = graph
            got = vjp(jt_dummy, dummy, [v[k] for k in keys], retain_graph=True)
        return {k: g.detach() for k, g in zip(keys, got)}

    return product


def custom_root(
    optimality_fn: OptimalityFn, *, solver: Solver | None = None, symmetric: bool = True
) -> Callable[[Callable[..., Tree]], Callable[..., Tree]]:
    """Make ``inner_solver(hparams, *args, **kwargs) -> params`` differentiable w.r.t. ``hparams`` by the IFT.

    Args:
        optimality_fn: ``F(params, hparams, *args, **kwargs) -> tree`` (keys of ``params``), zero at the
            solution; typically the inner loss's gradient.
        solver: solves :math:`(\\partial_w F)^\\top x = u`. Default ``linalg.CG(steps=50)`` when ``symmetric``,
            else ``linalg.GMRES(steps=200, restart=50)``; for a non-symmetric ``F`` any of ``linalg.GMRES``,
            ``linalg.BiCGSTAB``, ``linalg.NormalCG`` or ``linalg.Exact`` (NormalCG's transpose products
            :math:`(\\partial_w F) v` are double backward passes).
        symmetric: whether :math:`\\partial_w F` is symmetric (true when ``F`` is a gradient).

    Returns:
        A decorator. The decorated solver returns parameters through which autograd differentiates; the
        last backward pass's solve diagnostics are in ``decorated.last_info``.

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
        solver = CG(steps=50) if symmetric else GMRES(steps=200, restart=50)
    if not isinstance(solver, Solver):
        raise InvalidArgumentError(f"solver must be a nestopt.linalg solver, got {solver!r}")

    def decorate(inner_solver: Callable[..., Tree]) -> Callable[..., Tree]:
        @functools.wraps(inner_solver)
        def wrapped(hparams: Tree, *args: Any, **kwargs: Any) -> Tree:
            hparams = check_tree(hparams, "hparams")
            with torch.no_grad():
                solution = inner_solver(tree.detach(hparams), *args, **kwargs)
            solution = check_tree(solution, "the inner solver's result")
            h_keys = list(hparams)
            setup = {
                "solution": solution,
                "param_keys": list(solution),
                "hparam_keys": h_keys,
                "optimality_fn": optimality_fn,
                "args": args,
                "kwargs": kwargs,
                "solver": solver,
                "symmetric": symmetric,
                "report": lambda info: setattr(wrapped, "last_info", info),
            }
            outs = _RootFunction.apply(setup, *[hparams[k] for k in h_keys])
            return dict(zip(list(solution), outs))

        setattr(wrapped, "last_info", None)  # noqa: B010 (documented attribute of the decorated function)
        return wrapped

    return decorate
