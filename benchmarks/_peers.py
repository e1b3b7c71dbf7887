"""Every system the benchmarks compare, behind one signature: a builder returns ``run() -> {name: grad}``.

A builder takes the problem (``inner``/``outer`` losses, ``params``, ``hparams``, batches) and the method's
settings, prepares everything that is not part of a hypergradient (modules, optimizers, engines), and
returns a closure that computes one hypergradient from scratch. Timing and memory measure that closure.

Peers are imported lazily; :func:`peer_status` tells, for each, its version or why it cannot be used, and
a benchmark turns an unavailable peer into a row that says so.

What each system computes (the same mathematics in every row of a group):

* implicit, Neumann ``K``: :math:`\\alpha \\sum_{j=0}^{K} (I - \\alpha H)^j g` then the mixed product.
  nestopt ``hypergrad.implicit(solver=linalg.Neumann(K, alpha))``; TorchOpt ``custom_root`` with
  ``linear_solve.solve_inv(ns=True, maxiter=K, alpha=alpha)`` and the optimality condition
  ``torch.func.grad(inner_loss)`` (as ``ImplicitMetaGradientModule`` derives it); Betty ``Config(type="neumann",
  neumann_iterations=K, neumann_alpha=alpha)`` through ``Problem.backward`` (what ``Engine`` runs).
* implicit, CG ``K``: ``K`` conjugate-gradient iterations. nestopt ``linalg.CG(K, tol=0)``; TorchOpt
  ``solve_cg(maxiter=K, rtol=0, atol=0)``; Betty ``Config(type="cg", cg_iterations=K, cg_alpha=1)``.
* unrolled ``T``: reverse-mode through ``T`` steps of SGD with momentum, one mini-batch per step. nestopt
  ``hypergrad.unrolled(optimizer=functional.sgd(lr, momentum))``; higher ``innerloop_ctx`` with
  ``torch.optim.SGD(lr, momentum)``; TorchOpt ``MetaSGD(lr, momentum)``.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import logging
import warnings
from collections.abc import Callable
from typing import Any

import torch

from nestopt import hypergrad, linalg
from nestopt.optim import functional
from nestopt.tree import Tree

__all__ = ["PEERS", "Unavailable", "build", "peer_status"]

PEERS = {"torchopt": ("torchopt", "0.7.3"), "betty": ("betty-ml", "0.1.1"), "higher": ("higher", "0.2.1")}


class Unavailable(Exception):
    """A system that cannot run here; the message says why."""


def peer_status(name: str) -> tuple[str | None, str | None]:
    """``(version, None)`` for a usable peer, ``(None, reason)`` otherwise."""
    if name == "nestopt":
        import nestopt

        return nestopt.__version__, None
    if name == "optuna":
        dist, module = "optuna", "optuna"
    else:
        dist, _ = PEERS[name]
        module = "betty" if name == "betty" else name
    try:
        version = md.version(dist)
    except md.PackageNotFoundError:
        return None, f"{dist} is not installed (run `python benchmarks/install_peers.py`)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module(module)
            if name == "betty":
                importlib.import_module("betty.engine")
    except Exception as err:  # any import failure is a reason to report, not to crash
        return None, f"{dist} {version} is installed but `import {module}` fails: {type(err).__name__}: {err}"
    return version, None


def _require(name: str) -> None:
    version, reason = peer_status(name)
    if version is None:
        raise Unavailable(reason)


# -- nestopt ---------------------------------------------------------------------------------------


def nestopt_implicit(p: Any, solver: str, steps: int) -> Callable[[], Tree]:
    if solver == "neumann":
        s: linalg.Solver = linalg.Neumann(steps=steps, alpha=p.alpha)
    else:
        s = linalg.CG(steps=steps, tol=0.0)
    return nestopt_solver(p, s)


def nestopt_solver(p: Any, solver: linalg.Solver, curvature: str = "hessian", named: bool = True) -> Callable[[], Tree]:
    """nestopt's implicit hypergradient with any solver, on ``p.inner_split`` (the inner loss with its weight
    decays and proximal term named, as nestopt's users write it; the peers get the same function as
    ``p.inner``), or on ``p.inner`` itself when not ``named``."""
    inner = p.inner_split if named else p.inner

    def run() -> Tree:
        return hypergrad.implicit(inner, p.outer, p.params, p.hparams, p.train, p.val, solver=solver,
                                  curvature=curvature).grads  # fmt: skip

    return run


def nestopt_unrolled(p: Any, steps: int, checkpoint: bool = False) -> Callable[[], Tree]:
    opt = functional.sgd(lr=p.lr, momentum=p.momentum)

    def run() -> Tree:
        return hypergrad.unrolled(
            p.inner, p.outer, p.params, p.hparams, p.batch, p.val, optimizer=opt, steps=steps, checkpoint=checkpoint
        ).grads

    return run


# -- TorchOpt --------------------------------------------------------------------------------------


def torchopt_implicit(p: Any, solver: str, steps: int) -> Callable[[], Tree]:
    _require("torchopt")
    import torchopt

    keys, hkeys = list(p.params), list(p.hparams)

    def objective(w: tuple[torch.Tensor, ...], h: tuple[torch.Tensor, ...], batch: Any) -> torch.Tensor:
        return p.inner(dict(zip(keys, w)), dict(zip(hkeys, h)), batch)

    optimality = torch.func.grad(objective, argnums=0)  # what ImplicitMetaGradientModule derives
    if solver == "neumann":
        solve = torchopt.linear_solve.solve_inv(ns=True, maxiter=steps, alpha=p.alpha)
    else:
        solve = torchopt.linear_solve.solve_cg(maxiter=steps, rtol=0.0, atol=0.0)

    @torchopt.diff.implicit.custom_root(optimality, argnums=1, solve=solve)
    def solved(w: tuple[torch.Tensor, ...], h: tuple[torch.Tensor, ...], batch: Any) -> tuple[torch.Tensor, ...]:
        return w  # the inner problem is already solved: the point is p.params

    w_star = tuple(p.params[k] for k in keys)

    def run() -> Tree:
        h = tuple(p.hparams[k].detach().requires_grad_(True) for k in hkeys)
        w = solved(w_star, h, p.train)
        loss = p.outer(dict(zip(keys, w)), dict(zip(hkeys, h)), p.val)
        return dict(zip(hkeys, torch.autograd.grad(loss, h)))

    return run


def torchopt_unrolled(p: Any, steps: int) -> Callable[[], Tree]:
    _require("torchopt")
    import torchopt

    net, hkeys = p.net, list(p.hparams)
    names = [k for k, _ in net.named_parameters()]
    init = {k: v.detach().clone() for k, v in p.params.items()}

    def run() -> Tree:
        with torch.no_grad():
            for k, param in net.named_parameters():
                param.copy_(init[k])
        for param in net.parameters():
            param.requires_grad_(True)
        h = {k: p.hparams[k].detach().requires_grad_(True) for k in hkeys}
        opt = torchopt.MetaSGD(net, lr=p.lr, momentum=p.momentum)
        state = torchopt.extract_state_dict(net)
        try:
            for t in range(steps):
                w = dict(net.named_parameters())
                opt.step(p.inner(w, h, p.batch(t)))
            loss = p.outer(dict(net.named_parameters()), h, p.val)
            grads = torch.autograd.grad(loss, list(h.values()))
        finally:
            torchopt.recover_state_dict(net, state)
            for param in net.parameters():
                param.requires_grad_(False)
        assert set(names) == set(init)
        return dict(zip(hkeys, grads))

    return run


# -- higher ----------------------------------------------------------------------------------------


def higher_unrolled(p: Any, steps: int) -> Callable[[], Tree]:
    _require("higher")
    import higher

    net, hkeys = p.net, list(p.hparams)
    init = {k: v.detach().clone() for k, v in p.params.items()}

    def run() -> Tree:
        with torch.no_grad():
            for k, param in net.named_parameters():
                param.copy_(init[k])
                param.requires_grad_(True)
        h = {k: p.hparams[k].detach().requires_grad_(True) for k in hkeys}
        opt = torch.optim.SGD(net.parameters(), lr=p.lr, momentum=p.momentum)
        try:
            with higher.innerloop_ctx(net, opt, copy_initial_weights=True) as (fnet, diffopt):
                names = [k for k, _ in net.named_parameters()]
                for t in range(steps):
                    w = dict(zip(names, fnet.parameters()))
                    diffopt.step(p.inner(w, h, p.batch(t)))
                loss = p.outer(dict(zip(names, fnet.parameters())), h, p.val)
                grads = torch.autograd.grad(loss, list(h.values()))
        finally:
            for param in net.parameters():
                param.requires_grad_(False)
        return dict(zip(hkeys, grads))

    return run


# -- Betty -----------------------------------------------------------------------------------------


def betty_implicit(p: Any, solver: str, steps: int) -> Callable[[], Tree]:
    _require("betty")
    from betty.configs import Config, EngineConfig
    from betty.engine import Engine
    from betty.problems import ImplicitProblem

    logging.getLogger("betty").setLevel(logging.ERROR)
    keys, hkeys = list(p.params), list(p.hparams)

    class Weights(torch.nn.Module):
        """The inner parameters as a module (Betty trains modules)."""

        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.ParameterList([torch.nn.Parameter(p.params[k].detach().clone()) for k in keys])

    class HParams(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.h = torch.nn.ParameterList([torch.nn.Parameter(p.hparams[k].detach().clone()) for k in hkeys])

    class Inner(ImplicitProblem):
        def training_step(self, batch: Any) -> torch.Tensor:
            w = dict(zip(keys, self.module.w))
            h = dict(zip(hkeys, self.outer.module.h))
            return p.inner(w, h, batch)

    class Outer(ImplicitProblem):
        def training_step(self, batch: Any) -> torch.Tensor:
            w = dict(zip(keys, self.inner.module.w))
            h = dict(zip(hkeys, self.module.h))
            return p.outer(w, h, batch)

    if solver == "neumann":
        inner_config = Config(type="neumann", neumann_iterations=steps, neumann_alpha=p.alpha)
    else:
        inner_config = Config(type="cg", cg_iterations=steps, cg_alpha=1.0)
    w_mod, h_mod = Weights(), HParams()
    device = p.train[0].device
    inner = Inner(
        name="inner",
        config=inner_config,
        module=w_mod,
        optimizer=torch.optim.SGD(w_mod.parameters(), lr=0.0),
        train_data_loader=[p.train],
        device=device,
    )
    outer = Outer(
        name="outer",
        config=Config(retain_graph=True),
        module=h_mod,
        optimizer=torch.optim.SGD(h_mod.parameters(), lr=0.0),
        train_data_loader=[p.val],
        device=device,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Engine(
            problems=[outer, inner],
            config=EngineConfig(train_iters=1, logger_type="none"),
            dependencies={"u2l": {outer: [inner]}, "l2u": {inner: [outer]}},
        )
    inner.cur_batch = p.train  # the batch Betty's hypergradient uses for the inner loss

    def run() -> Tree:
        # exactly what Problem.one_step_descent does for the upper level, minus its optimizer step
        loss, _ = outer.get_loss(p.val)
        outer.backward(
            loss=loss,
            params=outer.trainable_parameters(),
            paths=outer.paths,
            create_graph=False,
            retain_graph=True,
            allow_unused=True,
        )
        grads = {k: t.grad for k, t in zip(hkeys, outer.trainable_parameters())}
        outer.zero_grad()
        return grads

    return run


def build(system: str, method: str, p: Any, steps: int, **kw: Any) -> Callable[[], Tree]:
    """The closure of ``system`` (nestopt, torchopt, betty, higher) for ``method`` (neumann, cg, unrolled)."""
    if method == "unrolled":
        if system == "betty":
            raise Unavailable(
                "betty-ml 0.1.1 has no reverse-mode unrolled hypergradient (its types are darts, neumann, cg, reinforce)"
            )
        return {"nestopt": nestopt_unrolled, "higher": higher_unrolled, "torchopt": torchopt_unrolled}[system](
            p, steps, **kw
        )
    if system == "higher":
        raise Unavailable("higher differentiates through unrolled loops only (no implicit differentiation)")
    return {"nestopt": nestopt_implicit, "torchopt": torchopt_implicit, "betty": betty_implicit}[system](
        p, method, steps, **kw
    )


# -- hypergradients inside a training loop -----------------------------------------------------------------
# A loop builder returns ``hypergradient(params, hparams, train_batch, val_batch) -> {name: grad}`` for the live
# tensors of a training loop (updated in place between calls); everything that is not part of a hypergradient
# (modules, engines, decorated solvers) is built once. nestopt's strategies are called directly
# (``Implicit.__call__``), which keeps their state across outer steps.

LoopHypergradient = Callable[[Tree, Tree, Any, Any], Tree]


def nestopt_loop(strategy: hypergrad.Implicit, inner: Any, outer: Any) -> LoopHypergradient:
    strategy.reset()

    def run(params: Tree, hparams: Tree, train: Any, val: Any) -> Tree:
        return strategy(inner, outer, {k: v.detach() for k, v in params.items()}, hparams, train, val).grads

    return run


def torchopt_loop(inner: Any, outer: Any, keys: list[str], hkeys: list[str], solver: str, steps: int,
                  ridge: float | None = None, *, alpha: float) -> LoopHypergradient:  # fmt: skip
    """TorchOpt's ``custom_root`` in the training loop; ``ridge`` is ``solve_cg``'s damping (CG only)."""
    _require("torchopt")
    import torchopt

    def objective(w: tuple[torch.Tensor, ...], h: tuple[torch.Tensor, ...], batch: Any) -> torch.Tensor:
        return inner(dict(zip(keys, w)), dict(zip(hkeys, h)), batch)

    optimality = torch.func.grad(objective, argnums=0)  # what ImplicitMetaGradientModule derives
    if solver == "neumann":
        solve = torchopt.linear_solve.solve_inv(ns=True, maxiter=steps, alpha=alpha)
    else:
        solve = torchopt.linear_solve.solve_cg(maxiter=steps, rtol=0.0, atol=0.0, ridge=ridge)

    @torchopt.diff.implicit.custom_root(optimality, argnums=1, solve=solve)
    def solved(w: tuple[torch.Tensor, ...], h: tuple[torch.Tensor, ...], batch: Any) -> tuple[torch.Tensor, ...]:
        return w

    def run(params: Tree, hparams: Tree, train: Any, val: Any) -> Tree:
        h = tuple(hparams[k].detach().requires_grad_(True) for k in hkeys)
        w = solved(tuple(params[k].detach() for k in keys), h, train)
        loss = outer(dict(zip(keys, w)), dict(zip(hkeys, h)), val)
        return dict(zip(hkeys, torch.autograd.grad(loss, h)))

    return run


def betty_loop(inner: Any, outer: Any, params: Tree, hparams: Tree, solver: str, steps: int,
               alpha: float) -> LoopHypergradient:  # fmt: skip
    _require("betty")
    from betty.configs import Config, EngineConfig
    from betty.engine import Engine
    from betty.problems import ImplicitProblem

    logging.getLogger("betty").setLevel(logging.ERROR)
    keys, hkeys = list(params), list(hparams)

    class Weights(torch.nn.Module):
        def __init__(self, tensors: Tree, names: list[str]) -> None:
            super().__init__()
            self.w = torch.nn.ParameterList([torch.nn.Parameter(tensors[k].detach().clone()) for k in names])

    class Inner(ImplicitProblem):
        def training_step(self, batch: Any) -> torch.Tensor:
            return inner(dict(zip(keys, self.module.w)), dict(zip(hkeys, self.outer.module.w)), batch)

    class Outer(ImplicitProblem):
        def training_step(self, batch: Any) -> torch.Tensor:
            return outer(dict(zip(keys, self.inner.module.w)), dict(zip(hkeys, self.module.w)), batch)

    if solver == "neumann":
        config = Config(type="neumann", neumann_iterations=steps, neumann_alpha=alpha)
    else:
        config = Config(type="cg", cg_iterations=steps, cg_alpha=1.0)
    w_mod, h_mod = Weights(params, keys), Weights(hparams, hkeys)
    device = next(iter(params.values())).device
    low = Inner(name="inner", config=config, module=w_mod, optimizer=torch.optim.SGD(w_mod.parameters(), lr=0.0),
                train_data_loader=[None], device=device)  # fmt: skip
    up = Outer(name="outer", config=Config(retain_graph=True), module=h_mod,
               optimizer=torch.optim.SGD(h_mod.parameters(), lr=0.0), train_data_loader=[None], device=device)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Engine(problems=[up, low], config=EngineConfig(train_iters=1, logger_type="none"),
               dependencies={"u2l": {up: [low]}, "l2u": {low: [up]}})  # fmt: skip

    def run(live: Tree, live_h: Tree, train: Any, val: Any) -> Tree:
        with torch.no_grad():  # Betty trains its own modules: hand them the loop's current tensors
            for p, k in zip(w_mod.w, keys):
                p.copy_(live[k])
            for p, k in zip(h_mod.w, hkeys):
                p.copy_(live_h[k])
        low.cur_batch = train
        loss, _ = up.get_loss(val)  # what Problem.one_step_descent does for the upper level, minus its step
        up.backward(loss=loss, params=up.trainable_parameters(), paths=up.paths, create_graph=False,
                    retain_graph=True, allow_unused=True)  # fmt: skip
        grads = {k: t.grad for k, t in zip(hkeys, up.trainable_parameters())}
        up.zero_grad()
        return grads

    return run
