"""Common PyTorch idioms work with the trainer, or fail with an error that shows what to write instead."""

from __future__ import annotations

import functools

import pytest
import torch

import nestopt
from nestopt import hparams, hypergrad, linalg
from nestopt.bilevel import Callback, TensorBoardLogger
from nestopt.errors import InvalidArgumentError, ShapeMismatchError, UnsupportedError
from tests.bilevel.conftest import loaders, regularized_net, task

CE = torch.nn.functional.cross_entropy
GN = functools.partial(hypergrad.Implicit, solver=linalg.CG(steps=5, damping=0.1), curvature="gauss-newton")


def test_a_loss_module_is_a_criterion_and_gives_the_same_numbers():
    d = task()
    runs = []
    for criterion in (CE, torch.nn.CrossEntropyLoss()):
        net = regularized_net()
        fams = [hparams.WeightDecay(net), hparams.LossReweighting(per="class", size=3)]
        trainer = nestopt.BilevelTrainer(net, criterion, fams, hypergrad=GN(), inner_steps_per_outer=2)
        runs.append(trainer.fit(*loaders(d)[:2], outer_steps=2, progress=False).column("outer_loss"))
    assert runs[0] == runs[1]


def test_optimizer_instances_are_refused_with_the_factory_form():
    net = regularized_net()
    with pytest.raises(InvalidArgumentError, match=r"inner_optimizer=functools.partial\(torch.optim.SGD"):
        nestopt.BilevelTrainer(net, CE, [hparams.WeightDecay(net)], inner_optimizer=torch.optim.SGD(net.parameters()))
    with pytest.raises(InvalidArgumentError, match="outer_optimizer"):
        nestopt.BilevelTrainer(net, CE, [hparams.WeightDecay(net)], outer_optimizer=torch.optim.Adam(net.parameters()))
    with pytest.raises(InvalidArgumentError, match="nothing to tune"):
        nestopt.BilevelTrainer(net, CE, [])
    with pytest.raises(InvalidArgumentError, match="hypergradient strategy"):
        nestopt.BilevelTrainer(net, CE, [hparams.WeightDecay(net)], hypergrad=linalg.CG())
    with pytest.raises(UnsupportedError, match="cannot differentiate"):
        nestopt.BilevelTrainer(net, CE, [hparams.LearningRate()])


def test_dtype_mismatches_name_both_dtypes():
    d, net = task(), regularized_net()
    trainer = nestopt.BilevelTrainer(net, CE, [hparams.WeightDecay(net)], hypergrad=GN(), inner_steps_per_outer=2)
    double = nestopt.data.Split(d.train.x.double(), d.train.y)
    with pytest.raises(ShapeMismatchError, match="torch.float64 but the model's parameters are torch.float32"):
        trainer.fit(nestopt.data.Loader(double, 32), loaders(d)[1], outer_steps=1, progress=False)
    x, y = d.train.x.double(), d.train.y
    inner = lambda p, h, b: CE(b[0] @ p["w"], b[1]) + (h["l2"] * p["w"] ** 2).sum()
    with pytest.raises(ShapeMismatchError, match="params are torch.float32, hparams torch.float32 and the batch"):
        hypergrad.implicit(inner, inner, {"w": torch.zeros(6, 3)}, {"l2": torch.ones(())}, (x, y), (x, y))


def test_schedulers_step_the_inner_and_outer_learning_rates():
    d, net = task(), regularized_net()
    trainer = nestopt.BilevelTrainer(
        net, CE, [hparams.WeightDecay(net)], hypergrad=GN(), inner_steps_per_outer=3,
        inner_optimizer=functools.partial(torch.optim.SGD, lr=0.1),
        inner_scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=4, gamma=0.1),
        outer_scheduler=functools.partial(torch.optim.lr_scheduler.ExponentialLR, gamma=0.5),
    )  # fmt: skip
    trainer.fit(*loaders(d)[:2], outer_steps=2, progress=False)
    assert trainer.inner_opt.param_groups[0]["lr"] == pytest.approx(0.01)  # 6 inner steps: one decay
    assert trainer.outer_opt.param_groups[0]["lr"] == pytest.approx(0.01 * 0.25)
    with pytest.raises(InvalidArgumentError, match="inner_scheduler must be a factory"):
        nestopt.BilevelTrainer(net, CE, [hparams.WeightDecay(net)],
                               inner_scheduler=torch.optim.lr_scheduler.StepLR(trainer.inner_opt, 1))  # fmt: skip


def test_callbacks_functions_objects_and_their_hooks():
    d, net = task(), regularized_net()
    events: list[str] = []

    class Recorder(Callback):
        def on_fit_start(self, trainer):
            events.append("start")

        def on_outer_step(self, trainer, record):
            events.append(f"step {record['outer_step']}")

        def on_fit_end(self, trainer):
            events.append("end")

    trainer = nestopt.BilevelTrainer(net, CE, [hparams.WeightDecay(net)], hypergrad=GN(), inner_steps_per_outer=1,
                                     callbacks=[Recorder()])  # fmt: skip
    trainer.fit(*loaders(d)[:2], outer_steps=2, progress=False, callback=lambda t, r: events.append("fn"))
    assert events == ["start", "step 1", "fn", "step 2", "fn", "end"]
    with pytest.raises(InvalidArgumentError, match="a callback must be"):
        nestopt.BilevelTrainer(net, CE, [hparams.WeightDecay(net)], callbacks=[42])


def test_tensorboard_logger_writes_the_records(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    d, net = task(), regularized_net()
    trainer = nestopt.BilevelTrainer(net, CE, [hparams.WeightDecay(net, per="global")], hypergrad=GN(),
                                     inner_steps_per_outer=1, callbacks=[TensorBoardLogger(tmp_path)])  # fmt: skip
    history = trainer.fit(*loaders(d)[:2], outer_steps=3, progress=False)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    logged = [e.value for e in events.Scalars("outer_loss")]
    assert logged == pytest.approx(history.column("outer_loss"))
    assert "hparams/weight_decay/global" in events.Tags()["scalars"]


def test_small_hyperparameters_are_recorded_as_a_schedule():
    d, net = task(), regularized_net()
    trainer = nestopt.BilevelTrainer(net, CE, [hparams.WeightDecay(net, per="global"), hparams.WeightDecay(
        net, per="parameter", name="big")], hypergrad=GN(), inner_steps_per_outer=1)  # fmt: skip
    history = trainer.fit(*loaders(d)[:2], outer_steps=3, progress=False)
    schedule = history.column("hparams/weight_decay/global")
    assert (
        len(schedule) == 3
        and len(set(schedule)) == 3
        and schedule[-1] == float(trainer.hparams["weight_decay/global"].detach())
    )
    assert not any(k.startswith("hparams/big/") for k in history[0])  # per-weight decays are not recorded
