"""Shared pieces of the implicit-bias experiments: the linear bilevel problem, its closed forms, and its runs.

Private: ``implicit_bias_minnorm`` and ``implicit_bias_hypergrad`` solve the same problem, so that "the same
problem" means the same code.

The problem (Vicol et al., 2022, section 3): an overparameterized linear regression whose training targets
depend linearly on the outer variables :math:`u`, and a validation regression:

.. math::  f(u, w) = \\tfrac1n \\|X w - B u\\|^2 \\;(X \\in \\mathbb{R}^{n \\times d},\\ n < d), \\qquad
           F(w) = \\tfrac1m \\|X_v w - y_v\\|^2.

Gradient descent on :math:`f` from :math:`w_0` stays in :math:`w_0 + \\mathrm{range}(X^\\top)` and reaches
the inner solution closest to :math:`w_0`, :math:`w^*(u) = w_0 + X^{+}(B u - X w_0)`. So the cold-start
outer objective is :math:`F(w^*(u)) = \\tfrac1m \\|M u - t\\|^2` with :math:`M = X_v X^{+} B` and
:math:`t = y_v - X_v (I - X^{+} X) w_0`: a least-squares problem with many minimizers when :math:`m < p`.

Any outer method whose update is :math:`-\\eta\\, G\\, (M u - t)` for a fixed ``p x m`` matrix :math:`G` keeps
:math:`u - u_0 \\in \\mathrm{range}(G)`, so if it converges to a minimizer, it converges to

.. math::  u_G = u_0 + G (M G)^{-1} (t - M u_0),

an oblique projection of :math:`u_0` onto the minimizers. The exact hypergradient has :math:`G \\propto M^\\top`
and gives the minimizer closest to :math:`u_0`; a truncated Neumann series or a truncated unroll has another
:math:`G`, hence another solution (:func:`limit`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nestopt import data, hypergrad
from nestopt.bilevel import BilevelTrainer
from nestopt.hparams import Family
from nestopt.tree import Tree

__all__ = ["PAPER", "LinearBilevel", "Targets", "gradient_descent", "heavy_ball", "limit", "run", "squared_error"]

PAPER = (
    "On Implicit Bias in Overparameterized Bilevel Optimization "
    "(Vicol, Lorraine, Pedregosa, Duvenaud & Grosse, ICML 2022)"
)
D = torch.float64


def squared_error(out: Tensor, y: Tensor) -> Tensor:
    """Mean squared error of a one-output model."""
    return ((out.squeeze(-1) - y) ** 2).mean()


class Targets(Family):
    """The regression targets :math:`B u` of fixed inputs :math:`X`, with :math:`u` the hyperparameters."""

    name = "targets"

    def __init__(self, x: Tensor, b: Tensor, u0: Tensor) -> None:
        self.x, self.b, self.u0 = x, b, u0

    def init(self) -> Tree:
        return {"u": self.u0.clone()}

    def transform_batch(self, hparams: Tree, batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return self.x, self.b @ self.own(hparams)["u"]


@dataclass(frozen=True)
class LinearBilevel:
    """The problem of the module docstring, with its closed forms (float64)."""

    x: Tensor
    b: Tensor
    xv: Tensor
    yv: Tensor
    w0: Tensor
    u0: Tensor

    @staticmethod
    def make(n: int, d: int, p: int, m: int, spread: float, seed: int) -> LinearBilevel:
        """Random data drawn from ``seed``: ``n < d`` training inputs with singular values evenly spaced in
        ``[1, spread]`` (random singular vectors), ``m < p`` Gaussian validation examples."""
        gen = torch.Generator().manual_seed(seed)

        def draw(*shape: int, scale: float = 1.0) -> Tensor:
            return scale * torch.randn(*shape, generator=gen, dtype=D)

        left, right = torch.linalg.qr(draw(n, n))[0], torch.linalg.qr(draw(d, n))[0]
        x = left @ torch.diag(torch.linspace(1.0, spread, n, dtype=D)) @ right.T
        return LinearBilevel(
            x=x,
            b=draw(n, p, scale=p**-0.5),
            xv=draw(m, d, scale=d**-0.5),
            yv=draw(m),
            w0=draw(d, scale=0.5),
            u0=draw(p, scale=0.5),
        )

    @functools.cached_property
    def pinv(self) -> Tensor:
        return torch.linalg.pinv(self.x)

    def closest(self, u: Tensor) -> Tensor:
        """The inner solution closest to :math:`w_0`: :math:`w_0 + X^{+}(B u - X w_0)`."""
        return self.w0 + self.pinv @ (self.b @ u - self.x @ self.w0)

    @functools.cached_property
    def outer_map(self) -> tuple[Tensor, Tensor]:
        """``(M, t)`` with :math:`F(w^*(u)) = \\frac1m \\|M u - t\\|^2`."""
        m = self.xv @ self.pinv @ self.b
        t = self.yv - self.xv @ (self.w0 - self.pinv @ (self.x @ self.w0))
        return m, t

    def min_norm(self) -> Tensor:
        """The minimizer of the cold-start outer objective closest to :math:`u_0`."""
        m, t = self.outer_map
        return self.u0 + torch.linalg.pinv(m) @ (t - m @ self.u0)

    def outer_loss(self, u: Tensor) -> float:
        """:math:`F(w^*(u))`: the validation loss at the cold-start inner solution."""
        return float(((self.xv @ self.closest(u) - self.yv) ** 2).mean())

    @functools.cached_property
    def hessian(self) -> Tensor:
        """The inner Hessian :math:`\\frac2n X^\\top X` (singular: rank ``n``)."""
        return 2.0 / self.x.shape[0] * self.x.T @ self.x

    def curvature(self) -> tuple[float, float]:
        """The largest and the smallest positive eigenvalue of the inner Hessian."""
        return _extreme(self.hessian)

    def outer_curvature(self) -> tuple[float, float]:
        """The same for the cold-start outer objective's Hessian :math:`\\frac2m M^\\top M`."""
        m, _ = self.outer_map
        return _extreme(2.0 / m.shape[0] * m.T @ m)


def _extreme(a: Tensor) -> tuple[float, float]:
    evals = torch.linalg.eigvalsh(a)
    top = float(evals.max())
    return top, float(evals[evals > 1e-10 * top].min())


def heavy_ball(top: float, bottom: float) -> tuple[float, float]:
    """Polyak's step size and momentum for a quadratic with curvatures in ``[bottom, top]``."""
    root = math.sqrt(top / bottom)
    return 4.0 / (math.sqrt(top) + math.sqrt(bottom)) ** 2, ((root - 1) / (root + 1)) ** 2


def limit(problem: LinearBilevel, g: Tensor, m: Tensor | None = None, t: Tensor | None = None) -> Tensor:
    """Where an outer method with updates :math:`-\\eta\\, G (M u - t)` converges: :math:`u_0 + G (M G)^{-1}(t - M u_0)`
    (``M`` and ``t`` default to the cold-start outer map)."""
    if m is None or t is None:
        m, t = problem.outer_map
    return problem.u0 + g @ torch.linalg.solve(m @ g, t - m @ problem.u0)


def run(
    problem: LinearBilevel,
    strategy: hypergrad.Strategy,
    *,
    warm_start: bool,
    inner_steps: int,
    outer_steps: int,
    inner_optimizer: Callable[[list[Tensor]], torch.optim.Optimizer] | None,
    outer: tuple[float, float],
) -> dict[str, Any]:
    """Solve the problem with :class:`~nestopt.BilevelTrainer` (outer: SGD with step and momentum ``outer``).

    Returns ``{"u", "w", "trajectory"}``: the final outer variables and weights, and ``u`` after every outer step.
    """
    n, d = problem.x.shape
    net = torch.nn.Linear(d, 1, bias=False).to(D)
    with torch.no_grad():
        net.weight.copy_(problem.w0[None])
    family = Targets(problem.x, problem.b, problem.u0)
    lr, momentum = outer
    trainer = BilevelTrainer(
        net,
        squared_error,
        [family],
        hypergrad=strategy,
        inner_optimizer=inner_optimizer,
        outer_optimizer=functools.partial(torch.optim.SGD, lr=lr, momentum=momentum),
        inner_steps_per_outer=None if inner_optimizer is None else inner_steps,
        warm_start=warm_start,
    )
    trajectory: list[Tensor] = []
    train = data.Split(problem.x, torch.zeros(n, dtype=D))  # only its shape matters: the family sets the batch
    val = data.Split(problem.xv, problem.yv)
    trainer.fit(
        data.Loader(train, n, shuffle=False),
        data.Loader(val, len(val), shuffle=False),
        outer_steps=outer_steps,
        eval_every=outer_steps,
        progress=False,
        callback=lambda t, r: trajectory.append(t.hparams["targets/u"].detach().clone()),
    )
    return {"u": trajectory[-1], "w": net.weight.detach().flatten().clone(), "trajectory": trajectory}


def gradient_descent(problem: LinearBilevel, u: Tensor, *, steps: int) -> list[Tensor]:
    """Plain gradient descent (step :math:`1/\\lambda_{max}`) on the inner problem at ``u`` from :math:`w_0`,
    with torch's SGD on a linear layer; returns the weights after every step."""
    net = torch.nn.Linear(problem.x.shape[1], 1, bias=False).to(D)
    with torch.no_grad():
        net.weight.copy_(problem.w0[None])
    opt = torch.optim.SGD(net.parameters(), lr=1.0 / problem.curvature()[0])
    target = problem.b @ u
    weights = []
    for _ in range(steps):
        loss = squared_error(net(problem.x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        weights.append(net.weight.detach().flatten().clone())
    return weights
