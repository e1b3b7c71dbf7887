"""Unrolled hypergradients that tell the truth: replayed randomness, last-step diagnostics, no silent zeros,
and divergence reported as such."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch

import nestopt
from nestopt import hparams, hypergrad, tree
from nestopt.errors import SolverDivergedError, SolverWarning, UnsupportedError
from nestopt.optim import functional
from tests.bilevel.conftest import loaders, regularized_net, task

CE = torch.nn.functional.cross_entropy


def _dropout_problem():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Dropout(0.5), torch.nn.Linear(16, 3))
    net = net.double()
    obj = hparams.Objective(net, CE, [hparams.WeightDecay(net, per="parameter", init=1e-2)])
    d = task()
    train = [(d.train.x[i : i + 16].double(), d.train.y[i : i + 16]) for i in range(0, 96, 16)]
    return obj, tree.detach(obj.params()), obj.init_hparams(), train, (d.val.x.double(), d.val.y)


def _unroll(checkpoint: bool, steps: int = 6, **kw):
    obj, w, h, train, val = _dropout_problem()
    return hypergrad.unrolled(
        obj.inner_loss, obj.outer_loss, w, h, train, val, optimizer=functional.sgd(lr=0.3, momentum=0.5),
        steps=steps, checkpoint=checkpoint, seed=11, **kw,
    )  # fmt: skip


def test_checkpointing_replays_the_dropout_masks():
    plain, checkpointed = _unroll(False), _unroll(True)
    assert checkpointed.info.extra["recomputed_steps"] > 0
    for k in plain.grads:
        torch.testing.assert_close(plain.grads[k], checkpointed.grads[k], rtol=1e-10, atol=1e-14)
    # and the masks really are random: another seed gives another hypergradient
    obj, w, h, train, val = _dropout_problem()
    other = hypergrad.unrolled(obj.inner_loss, obj.outer_loss, w, h, train, val,
                               optimizer=functional.sgd(lr=0.3, momentum=0.5), steps=6, seed=12)  # fmt: skip
    assert not torch.allclose(other.grads["weight_decay/0.weight"], plain.grads["weight_decay/0.weight"])


@pytest.mark.parametrize("checkpoint", [False, True])
def test_diagnostics_are_those_of_the_last_step(checkpoint):
    obj, w, h, train, val = _dropout_problem()
    res = _unroll(checkpoint)
    # replay the 6 steps by hand to find the last inner gradient
    opt = functional.sgd(lr=0.3, momentum=0.5)
    state, params = opt.init(w), tree.clone(w)
    for k in range(6):
        with nestopt._rng.fork(nestopt._rng.derive(11, k)):
            g = torch.func.grad(lambda p, b=train[k]: obj.inner_loss(p, h, b))(params)
        params, state = opt.update(g, state, params, h)
    assert res.info.inner_grad_norm == pytest.approx(float(tree.norm(g)), rel=1e-9)
    assert res.info.status.value == "exact" and len(res.inner_losses) == 6


def test_an_unused_hyperparameter_is_an_error_not_a_silent_zero():
    lr = hparams.LearningRate(init=0.1)
    inner = lambda p, h, b: ((p["w"] - 1.0) ** 2).sum()
    outer = lambda p, h, b: ((p["w"] - 2.0) ** 2).sum()
    args = (inner, outer, {"w": torch.zeros(2)}, lr.init(prefixed=True), [None] * 3, None)
    for estimator in (hypergrad.unrolled, hypergrad.forward):
        with pytest.raises(UnsupportedError, match="LearningRate"):
            estimator(*args, optimizer=functional.sgd(lr=0.1), steps=3)  # the family's lr is never read
        res = estimator(*args, optimizer=lr.sgd(), steps=3)  # with the family's optimizer it is
        assert float(res.grads["learning_rate/log_lr"]) != 0.0


def test_an_exploding_unroll_is_diverged():
    inner = lambda p, h, b: (h["c"] * p["w"] ** 2).sum()
    outer = lambda p, h, b: (p["w"] ** 2).sum()
    args = (inner, outer, {"w": torch.ones(2, dtype=torch.float64)}, {"c": torch.tensor(1.0, dtype=torch.float64)},
            [None] * 40, None)  # fmt: skip
    with pytest.warns(SolverWarning, match="unrolled: diverged: the inner loss grew"):
        res = hypergrad.unrolled(*args, optimizer=functional.sgd(lr=3.0), steps=40)  # |1 - 2 lr| = 5 per step
    assert res.info.status.value == "diverged" and res.info.outer_loss > 1e50
    with pytest.raises(SolverDivergedError, match="diverged"):
        hypergrad.unrolled(*args, optimizer=functional.sgd(lr=3.0), steps=40, throw=True)
    with pytest.warns(SolverWarning, match="forward: diverged"):
        assert hypergrad.forward(*args, optimizer=functional.sgd(lr=3.0), steps=40).info.status.value == "diverged"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert hypergrad.unrolled(*args, optimizer=functional.sgd(lr=0.1), steps=40).info.status.value == "exact"


def test_the_trainer_records_the_training_loss_in_unrolled_mode():
    d, net = task(), regularized_net()
    trainer = nestopt.BilevelTrainer(
        net, CE, [hparams.WeightDecay(net)],
        hypergrad=hypergrad.Unrolled(optimizer=functional.sgd(lr=0.1), steps=3),
        outer_optimizer=functools.partial(torch.optim.Adam, lr=0.01),
    )  # fmt: skip
    history = trainer.fit(*loaders(d)[:2], outer_steps=2, progress=False)
    losses = history.column("train_loss")
    assert all(0 < v < 5 for v in losses) and history.last("inner_steps") == 6
