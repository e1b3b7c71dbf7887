"""A small MLP regression problem with one weight-decay hyperparameter per parameter, in float64."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch

from nestopt import tree


@dataclass
class Problem:
    inner_loss: Any
    outer_loss: Any
    params: dict  # an (almost exact) inner optimum
    hparams: dict
    train: tuple
    val: tuple

    def solve_inner(self, hparams, start=None, iters=30):
        """Newton's method on the inner loss to machine precision (tiny problem: dense Hessian)."""
        w = tree.clone(self.params if start is None else start)
        vec, spec = tree.flatten(w)
        hvec = tree.detach(hparams)

        def f(v):
            return self.inner_loss(tree.unflatten(v, spec), hvec, self.train)

        for _ in range(iters):
            g = torch.func.grad(f)(vec)
            if float(g.norm()) < 1e-14:
                break
            h = torch.func.hessian(f)(vec)
            vec = vec - torch.linalg.solve(h, g)
        return tree.unflatten(vec, spec)

    def outer_at_optimum(self, hparams):
        return float(self.outer_loss(self.solve_inner(hparams), hparams, self.val))


def mlp_problem(seed: int = 0) -> Problem:
    gen = torch.Generator().manual_seed(seed)
    d = torch.float64
    x = torch.randn(40, 3, generator=gen, dtype=d)
    y = torch.sin(x.sum(1, keepdim=True))
    xv = torch.randn(30, 3, generator=gen, dtype=d)
    yv = torch.sin(xv.sum(1, keepdim=True))
    params = {
        "l1.weight": 0.5 * torch.randn(5, 3, generator=gen, dtype=d),
        "l1.bias": torch.zeros(5, dtype=d),
        "l2.weight": 0.5 * torch.randn(1, 5, generator=gen, dtype=d),
    }
    hparams = {
        k: torch.full_like(v, -1.5) + 0.3 * torch.randn(v.shape, generator=gen, dtype=d) for k, v in params.items()
    }

    def net(p, xb):
        return torch.tanh(xb @ p["l1.weight"].T + p["l1.bias"]) @ p["l2.weight"].T

    def inner_loss(p, h, batch):
        xb, yb = batch
        penalty = sum((h[k].exp() * p[k] ** 2).sum() for k in p)
        return ((net(p, xb) - yb) ** 2).mean() + penalty

    def outer_loss(p, h, batch):
        xb, yb = batch
        return ((net(p, xb) - yb) ** 2).mean()

    prob = Problem(inner_loss, outer_loss, params, hparams, (x, y), (xv, yv))
    # warm start by gradient descent, then Newton
    w = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.LBFGS(list(w.values()), lr=1.0, max_iter=200, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = inner_loss(w, hparams, (x, y))
        value.backward()
        return value

    opt.step(closure)
    prob.params = prob.solve_inner(hparams, start=tree.detach(w))
    return prob


@pytest.fixture(scope="session")
def mlp():
    return mlp_problem()


def directional_fd(fn, hparams, direction, eps=1e-5):
    plus = {k: hparams[k] + eps * direction[k] for k in hparams}
    minus = {k: hparams[k] - eps * direction[k] for k in hparams}
    return (fn(plus) - fn(minus)) / (2 * eps)


def random_direction(like, seed=1):
    gen = torch.Generator().manual_seed(seed)
    d = {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in like.items()}
    n = float(tree.norm(d))
    return {k: v / n for k, v in d.items()}
