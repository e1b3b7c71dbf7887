"""Warm and cold start reach the solutions their definitions say, on a problem where the two provably differ.

The inner problem fits one learned input z (the hyperparameter) to the target 1 with a linear model:
(z^T w - 1)^2. Its solutions form the hyperplane {w : z^T w = 1}, and gradient descent from a point reaches
the point of the hyperplane closest to it. So after each outer step, cold start (from w0 every time) is at
the projection of w0 onto the current hyperplane, and warm start at the projection of its previous weights:
as soon as z turns, the two differ, and warm start's weights keep a trace of the earlier hyperplanes.
"""

import functools

import pytest
import torch

import nestopt
from nestopt import data, hypergrad, linalg, tree
from nestopt.hparams import Family

D = torch.float64
DIM = 4


class OneInput(Family):
    """One learned input with the fixed target 1."""

    name = "point"

    def init(self):
        return {"z": torch.tensor([1.0, 0.2, -0.3, 0.1], dtype=D)}

    def transform_batch(self, hparams, batch):
        return self.own(hparams)["z"][None], torch.ones(1, dtype=D)


def _project(w, z):
    """The point of {v : z^T v = 1} closest to w."""
    return w + z * (1 - z @ w) / (z @ z)


def _run(warm_start):
    gen = torch.Generator().manual_seed(0)
    xv = torch.randn(16, DIM, generator=gen, dtype=D)
    val = data.Split(xv, xv @ torch.tensor([0.5, -1.0, 2.0, 0.3], dtype=D))
    net = torch.nn.Linear(DIM, 1, bias=False).double()
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.3, -0.2, 0.4, 0.1]], dtype=D))
    w0 = net.weight.detach().flatten().clone()
    mse = lambda out, y: ((out.squeeze(-1) - y) ** 2).mean()
    trainer = nestopt.BilevelTrainer(
        net, mse, [OneInput()], hypergrad=hypergrad.Implicit(solver=linalg.Exact()),
        inner_optimizer=functools.partial(torch.optim.SGD, lr=0.3), inner_steps_per_outer=60,
        outer_optimizer=functools.partial(torch.optim.SGD, lr=0.01), warm_start=warm_start,
    )  # fmt: skip
    z_used, weights = [trainer.hparams["point/z"].detach().clone()], []

    def snapshot(t, record):
        z_used.append(t.hparams["point/z"].detach().clone())
        weights.append(t.params["weight"].detach().flatten().clone())

    train = data.Split(torch.zeros(1, DIM, dtype=D), torch.zeros(1, dtype=D))  # replaced by the family
    trainer.fit(data.Loader(train, 1), data.Loader(val, 16), outer_steps=6, progress=False, callback=snapshot)
    return w0, z_used[:-1], weights


def test_cold_start_is_the_solution_closest_to_the_initialization():
    w0, zs, ws = _run(warm_start=False)
    for z, w in zip(zs, ws):
        torch.testing.assert_close(w, _project(w0, z), rtol=1e-10, atol=1e-12)


def test_warm_start_is_the_solution_closest_to_the_previous_weights_and_differs():
    w0, zs, ws = _run(warm_start=True)
    previous = w0
    for z, w in zip(zs, ws):
        torch.testing.assert_close(w, _project(previous, z), rtol=1e-10, atol=1e-12)
        previous = w
    # the hyperplanes turn, so the warm-start weights leave the cold-start ones behind
    gaps = [float((w - _project(w0, z)).norm()) for z, w in zip(zs, ws)]
    assert gaps[0] == pytest.approx(0.0, abs=1e-12) and min(gaps[2:]) > 1e-2
    assert float(tree.norm({"z": zs[-1] - zs[0]})) > 0.1
