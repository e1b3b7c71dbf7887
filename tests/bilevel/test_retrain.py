"""Diagnostics of solution concepts: retraining from scratch on the final hyperparameters, and distances."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

import nestopt
from nestopt import _rng, hparams, hypergrad, linalg, tree
from nestopt.bilevel.retrain import fresh_initialization
from tests.bilevel.conftest import loaders, regularized_net, task

CE = torch.nn.functional.cross_entropy
GN = functools.partial(hypergrad.Implicit, solver=linalg.CG(steps=5, damping=0.1), curvature="gauss-newton")


def _trained(**kw):
    d, net = task(), regularized_net()
    trainer = nestopt.BilevelTrainer(net, CE, [hparams.WeightDecay(net)], hypergrad=GN(), inner_steps_per_outer=3,
                                     inner_optimizer=functools.partial(torch.optim.SGD, lr=0.1), **kw)  # fmt: skip
    trainer.fit(*loaders(d)[:2], outer_steps=3, progress=False)
    return d, trainer


def test_retrain_really_starts_from_a_fresh_initialization_and_leaves_the_run_alone():
    d, trainer = _trained()
    before = {**tree.clone(trainer.params), **tree.clone(trainer.buffers), **tree.clone(trainer.hparams)}
    rng = torch.get_rng_state()
    trainer.inner_factory = functools.partial(torch.optim.SGD, lr=0.0)  # no learning: the copy keeps its init
    seen = {}
    real_fresh = fresh_initialization

    def spy(model, seed):
        real_fresh(model, seed)
        seen.update(tree.clone(dict(model.named_parameters())))

    import nestopt.bilevel.retrain as module

    module.fresh_initialization = spy
    try:
        result = trainer.retrain(loaders(d)[0], steps=2, test=loaders(d)[2], seed=5)
    finally:
        module.fresh_initialization = real_fresh
    # the copy started from torch's default initialization drawn from the seed: not from the trained weights
    reference = copy.deepcopy(trainer.model)
    fresh_initialization(reference, _rng.derive(5, "init"))
    assert all(torch.equal(seen[k], v) for k, v in reference.named_parameters())
    assert not any(torch.equal(seen[k], trainer.params[k]) for k in trainer.params if k.endswith("weight"))
    assert result["distance_from_init"] == 0.0 and result["steps"] == 2 and "test_accuracy" in result
    after = {**tree.clone(trainer.params), **tree.clone(trainer.buffers), **tree.clone(trainer.hparams)}
    assert all(torch.equal(before[k], after[k]) for k in before) and torch.equal(rng, torch.get_rng_state())
    assert trainer.history.retrains == [result]


def test_retrain_trains_on_the_final_hyperparameters_and_is_reproducible():
    d, trainer = _trained()
    a = trainer.retrain(loaders(d)[0], val=loaders(d)[1], seed=1)
    b = trainer.retrain(loaders(d)[0], val=loaders(d)[1], seed=1)
    assert a == b and a["steps"] == trainer.inner_step == 9 and a["distance_from_init"] > 0
    # with a huge weight decay the retrained network is pulled to zero: the hyperparameters are really used
    with torch.no_grad():
        for h in trainer.hparams.values():
            h.fill_(1.5)
    heavy = trainer.retrain(loaders(d)[0], steps=50, val=loaders(d)[1], seed=1)
    assert heavy["val_loss"] == pytest.approx(float(torch.log(torch.tensor(3.0))), abs=0.05)


def test_retrain_uses_the_unrolling_strategy_optimizer():
    d, net = task(), regularized_net()
    lr = hparams.LearningRate(init=0.1)
    trainer = nestopt.BilevelTrainer(net, CE, [lr], hypergrad=hypergrad.Unrolled(optimizer=lr.sgd(), steps=3))
    trainer.fit(*loaders(d)[:2], outer_steps=2, progress=False)
    with torch.no_grad():
        trainer.hparams["learning_rate/log_lr"].fill_(-30.0)  # a vanishing learning rate: nothing moves
    assert trainer.retrain(loaders(d)[0], steps=3)["distance_from_init"] < 1e-9


def test_distances_from_the_initialization_and_the_previous_step():
    d, net = task(), regularized_net()
    init = tree.clone(dict(net.named_parameters()))
    snapshots = []
    trainer = nestopt.BilevelTrainer(net, CE, [hparams.WeightDecay(net)], hypergrad=GN(), inner_steps_per_outer=2,
                                     track_distances=True)  # fmt: skip
    history = trainer.fit(*loaders(d)[:2], outer_steps=3, progress=False,
                          callback=lambda t, r: snapshots.append(tree.clone(t.params)))  # fmt: skip
    for i, record in enumerate(history.records):
        previous = init if i == 0 else snapshots[i - 1]
        assert record["distance_from_init"] == pytest.approx(float(tree.norm(tree.sub(snapshots[i], init))))
        assert record["distance_from_previous"] == pytest.approx(float(tree.norm(tree.sub(snapshots[i], previous))))
    cold = nestopt.BilevelTrainer(regularized_net(), CE, [hparams.WeightDecay(net)], hypergrad=GN(),
                                  inner_steps_per_outer=2, warm_start=False, track_distances=True)  # fmt: skip
    cold_history = cold.fit(*loaders(d)[:2], outer_steps=3, progress=False)
    # cold start measures from each step's re-initialization: always the same few steps away
    assert max(cold_history.column("distance_from_init")) < 2 * min(cold_history.column("distance_from_init"))
    with pytest.raises(nestopt.errors.InvalidArgumentError, match="steps"):
        nestopt.BilevelTrainer(regularized_net(), CE, [hparams.WeightDecay(net)]).retrain(loaders(d)[0])
