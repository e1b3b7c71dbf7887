"""Bilevel training on a real model (BatchNorm and Dropout): modes, buffers, randomness and resume."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch

import nestopt
from nestopt import hparams, hypergrad, linalg, tree
from nestopt.errors import SolverWarning
from nestopt.optim import functional
from tests.bilevel.conftest import loaders, regularized_net, task

CE = torch.nn.functional.cross_entropy

STRATEGIES = {
    "implicit": lambda: hypergrad.Implicit(solver=linalg.CG(steps=5, damping=0.1), curvature="gauss-newton"),
    "unrolled": lambda: hypergrad.Unrolled(optimizer=functional.sgd(lr=0.1, momentum=0.9), steps=4),
    "unrolled-checkpointed": lambda: hypergrad.Unrolled(optimizer=functional.sgd(lr=0.1), steps=4, checkpoint=True),
}


def _trainer(name: str, net: torch.nn.Module, **kw) -> nestopt.BilevelTrainer:
    extra = {"inner_steps_per_outer": 4, "inner_optimizer": functools.partial(torch.optim.SGD, lr=0.1)}
    return nestopt.BilevelTrainer(
        net, CE, [hparams.WeightDecay(net, per="parameter", init=1e-2)], hypergrad=STRATEGIES[name](),
        **(extra if name == "implicit" else {}), **kw,
    )  # fmt: skip


def _state(trainer: nestopt.BilevelTrainer) -> dict[str, torch.Tensor]:
    return {**tree.clone(trainer.params), **tree.clone(trainer.buffers), **tree.clone(trainer.hparams)}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_evaluate_is_eval_mode_no_grad_and_free_of_side_effects():
    d, net = task(), regularized_net(p=0.5)
    trainer = _trainer("implicit", net)
    trainer.fit(*loaders(d)[:2], outer_steps=1, progress=False)
    net.train()  # a user leaves the model in train mode
    buffers, rng = tree.clone(trainer.buffers), torch.get_rng_state()
    first = trainer.evaluate(loaders(d)[2])
    second = trainer.evaluate(loaders(d)[2])
    assert first == second  # no dropout: the same numbers every time
    assert _equal(buffers, tree.clone(trainer.buffers))  # the running statistics did not see the test data
    assert torch.equal(rng, torch.get_rng_state())  # and no random number was drawn
    assert net.training  # the model's mode is left as it was
    with torch.no_grad():  # what eval mode computes by hand
        net.eval()
        expected = float(CE(net(d.test.x), d.test.y))
    assert first["loss"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_only_inner_steps_update_batchnorm_statistics(name):
    d, net = task(), regularized_net()
    trainer = _trainer(name, net)
    trainer.fit(*loaders(d)[:2], test=loaders(d)[2], outer_steps=3, progress=False)
    # one update per inner step: Hessian-vector products, mixed terms, recomputed checkpointed steps,
    # the validation loss and evaluation never move the statistics
    assert int(net[1].num_batches_tracked) == trainer.inner_step == 12


def test_modes_whatever_mode_the_model_was_left_in():
    d, net = task(), regularized_net()
    seen: list[tuple[bool, bool]] = []
    net[3].register_forward_pre_hook(lambda m, _: seen.append((m.training, torch.is_grad_enabled())))
    net.eval()
    trainer = _trainer("implicit", net)
    trainer.fit(*loaders(d)[:2], outer_steps=1, progress=False)
    modes = [training for training, _ in seen]
    # 4 inner steps in train mode, the linearization of the inner loss in train mode, the validation loss of the
    # hypergradient in eval mode, then the evaluation of the validation set in eval mode
    assert modes[:6] == [True] * 5 + [False] and not any(modes[6:])
    assert not net.training  # restored


def test_outer_loss_is_eval_mode_by_default_and_train_mode_on_request():
    d = task()
    params_batch = (d.val.x, d.val.y)
    eval_trainer = _trainer("implicit", regularized_net(p=0.9))
    train_trainer = _trainer("implicit", regularized_net(p=0.9), outer_mode="train")
    w, h = tree.detach(eval_trainer.params), tree.detach(eval_trainer.hparams)
    assert float(eval_trainer.outer_loss(w, h, params_batch)) == float(eval_trainer.outer_loss(w, h, params_batch))
    a, b = (float(train_trainer.outer_loss(w, h, params_batch)) for _ in range(2))
    assert a != b  # dropout on: two draws differ


@pytest.mark.parametrize("name", ["implicit", "unrolled"])
def test_trajectory_does_not_depend_on_evaluation(name):
    d = task()
    runs = []
    for eval_every in (1, 100):
        trainer = _trainer(name, regularized_net())
        trainer.fit(*loaders(d)[:2], test=loaders(d)[2], outer_steps=4, eval_every=eval_every, progress=False)
        runs.append(_state(trainer))
    assert _equal(*runs)


@pytest.mark.parametrize("name", ["implicit", "unrolled-checkpointed"])
def test_checkpoint_resume_is_bit_identical(tmp_path, name):
    d = task()
    straight = _trainer(name, regularized_net())
    straight.fit(*loaders(d)[:2], outer_steps=4, progress=False)
    first = _trainer(name, regularized_net())
    ckpt = tmp_path / "run.pt"
    first.fit(*loaders(d)[:2], outer_steps=2, checkpoint=ckpt, progress=False)
    torch.manual_seed(1234)  # anything that happens in between must not matter
    torch.rand(100)
    resumed = _trainer(name, regularized_net(seed=99))  # even a differently initialized model
    resumed.fit(*loaders(d)[:2], outer_steps=4, checkpoint=ckpt, resume=True, progress=False)
    assert _equal(_state(straight), _state(resumed))
    assert [r["outer_loss"] for r in straight.history] == [r["outer_loss"] for r in resumed.history]


def test_existing_checkpoint_needs_resume(tmp_path):
    d = task()
    ckpt = tmp_path / "run.pt"
    _trainer("implicit", regularized_net()).fit(*loaders(d)[:2], outer_steps=1, checkpoint=ckpt, progress=False)
    with pytest.raises(nestopt.errors.InvalidArgumentError, match="resume=True"):
        _trainer("implicit", regularized_net()).fit(*loaders(d)[:2], outer_steps=2, checkpoint=ckpt, progress=False)
    fresh = _trainer("implicit", regularized_net())
    fresh.fit(*loaders(d)[:2], outer_steps=2, checkpoint=tmp_path / "new.pt", resume=True, progress=False)
    assert fresh.outer_step == 2  # resume=True without a file starts afresh


def test_default_strategy_meets_no_negative_curvature():
    d = task()
    net = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32), torch.nn.Tanh(),
                              torch.nn.Linear(32, 3))  # fmt: skip
    trainer = nestopt.BilevelTrainer(net, CE, [hparams.WeightDecay(net)], inner_steps_per_outer=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SolverWarning)
        history = trainer.fit(*loaders(d)[:2], outer_steps=8, progress=False)
    assert "negative_curvature" not in history.column("status")
    # the same network with the exact Hessian meets negative curvature: the default is what avoids it
    hessian = nestopt.BilevelTrainer(net, CE, [hparams.WeightDecay(net)], inner_steps_per_outer=5,
                                     hypergrad=hypergrad.Implicit(solver=linalg.CG(steps=20)))  # fmt: skip
    with pytest.warns(SolverWarning, match="negative_curvature"):
        hessian.fit(*loaders(d)[:2], outer_steps=8, progress=False)


def test_solver_warnings_are_summarized_once_per_fit():
    d, net = task(), regularized_net()
    trainer = nestopt.BilevelTrainer(
        net, CE, [hparams.WeightDecay(net)], hypergrad=hypergrad.Implicit(solver=linalg.Neumann(steps=3, alpha=50.0)),
        inner_steps_per_outer=2,
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(*loaders(d)[:2], outer_steps=5, progress=False)
    solver = [str(w.message) for w in caught if issubclass(w.category, SolverWarning)]
    assert len(solver) == 1 and "in 5 of 5 outer steps" in solver[0], solver
