import functools

import pytest
import torch

import nestopt
from nestopt import data, hparams, hypergrad, linalg, tree
from nestopt.errors import InvalidArgumentError, NonFiniteError, ShapeMismatchError, UnsupportedError
from nestopt.optim import functional

CE = torch.nn.functional.cross_entropy


def _setup(seed=0):
    torch.manual_seed(seed)
    d = data.synthetic_classification(n_train=96, n_val=64, n_test=64, dim=6, num_classes=3, seed=seed)
    net = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3))
    return d, net


def _loaders(d, bs=32):
    return data.Loader(d.train, bs, seed=1), data.Loader(d.val, bs, seed=2), data.Loader(d.test, 64, shuffle=False)


STRATEGIES = {
    "implicit-neumann": dict(
        hypergrad=hypergrad.Implicit(solver=linalg.Neumann(steps=5, alpha=0.1)), inner_steps_per_outer=5
    ),
    "implicit-cg": dict(hypergrad=hypergrad.Implicit(solver=linalg.CG(steps=10, damping=1.0)), inner_steps_per_outer=5),
    "unrolled": dict(hypergrad=hypergrad.Unrolled(optimizer=functional.sgd(lr=0.1, momentum=0.9), steps=5)),
    "forward": dict(hypergrad=hypergrad.Forward(optimizer=functional.sgd(lr=0.1), steps=5)),
}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_trainer_runs_with_every_strategy(name):
    d, net = _setup()
    per = "global" if name == "forward" else "parameter"
    trainer = nestopt.BilevelTrainer(
        net, CE, [hparams.WeightDecay(net, per=per, init=1e-2)],
        outer_optimizer=functools.partial(torch.optim.Adam, lr=0.05), **STRATEGIES[name],
    )  # fmt: skip
    h_before = tree.clone(trainer.hparams)
    train, val, test = _loaders(d)
    hist = trainer.fit(train, val, test=test, outer_steps=4, eval_every=2, progress=False)
    assert len(hist) == 4 and hist[-1]["inner_steps"] == 20
    assert hist[0]["hypergrad_norm"] > 0
    assert not all(torch.equal(h_before[k], trainer.hparams[k].detach()) for k in h_before)
    assert "test_accuracy" in hist[1] and "test_accuracy" not in hist[0]
    assert hist.last("val_loss") < 1.2  # it learned something (chance is log 3 = 1.10 ... start ~1.1)


def _run_cold_or_warm(warm):
    d, net = _setup()
    full = data.Loader(d.train, 96, shuffle=False)  # the same batch at every step
    trainer = nestopt.BilevelTrainer(
        net, CE, [hparams.WeightDecay(net, per="global")],
        hypergrad=hypergrad.Implicit(solver=linalg.CG(steps=5, damping=1.0)),
        inner_optimizer=functools.partial(torch.optim.SGD, lr=0.2), inner_steps_per_outer=3,
        outer_optimizer=functools.partial(torch.optim.SGD, lr=0.0),  # hyperparameters stay fixed
        warm_start=warm,
    )  # fmt: skip
    init = tree.clone(trainer.params)
    seen = []
    trainer.fit(
        full,
        data.Loader(d.val, 64),
        outer_steps=3,
        progress=False,
        callback=lambda t, r: seen.append(tree.clone(t.params)),
    )
    return init, seen


def test_cold_start_really_reinitializes():
    init, seen = _run_cold_or_warm(warm=False)
    # same hyperparameters and data every outer step: retraining from the same init lands at the same weights
    assert all(torch.equal(seen[0][k], seen[2][k]) for k in init)
    assert not all(torch.equal(init[k], seen[0][k]) for k in init)
    _, warm = _run_cold_or_warm(warm=True)
    assert all(torch.equal(warm[0][k], seen[0][k]) for k in init)  # the first outer step is the same
    assert not all(torch.equal(warm[0][k], warm[2][k]) for k in init)  # warm start keeps training


@pytest.mark.parametrize("name", ["implicit-neumann", "unrolled"])
def test_checkpoint_resume_gives_identical_numbers(tmp_path, name):
    def make():
        d, net = _setup()
        fams = [
            hparams.WeightDecay(net, per="parameter", init=1e-2),
            hparams.AugmentationNet(torch.nn.Linear(6, 6), noise=0.1),
        ]
        return d, nestopt.BilevelTrainer(net, CE, fams, **STRATEGIES[name])

    d, full = make()
    full_hist = full.fit(*_loaders(d)[:2], outer_steps=6, progress=False)

    d, first = make()
    ckpt = tmp_path / "run.pt"
    first.fit(*_loaders(d)[:2], outer_steps=3, checkpoint=ckpt, checkpoint_every=1, progress=False)
    torch.manual_seed(12345)  # anything that happens in between must not matter
    d, resumed = make()
    resumed.load_checkpoint(ckpt)
    hist = resumed.fit(*_loaders(d)[:2], outer_steps=6, progress=False)
    for k in full.params:
        assert torch.equal(full.params[k], resumed.params[k])
    for k in full.hparams:
        assert torch.equal(full.hparams[k], resumed.hparams[k])
    assert [r["outer_loss"] for r in hist.records] == [r["outer_loss"] for r in full_hist.records]


def test_non_finite_loss_names_the_step_and_keeps_the_checkpoint(tmp_path):
    d, net = _setup()
    trainer = nestopt.BilevelTrainer(
        net, CE, [hparams.WeightDecay(net, per="global")],
        hypergrad=hypergrad.Implicit(solver=linalg.Neumann(steps=3, alpha=0.1)),
        inner_optimizer=functools.partial(torch.optim.SGD, lr=0.1), inner_steps_per_outer=4,
    )  # fmt: skip
    ckpt = tmp_path / "ckpt.pt"
    train, val, _ = _loaders(d)
    trainer.fit(train, val, outer_steps=2, checkpoint=ckpt, checkpoint_every=1, progress=False)
    saved = ckpt.read_bytes()
    with torch.no_grad():
        trainer.inner_opt.param_groups[0]["lr"] = float("inf")
    with pytest.raises(NonFiniteError, match="outer step 2, inner step 1"):
        trainer.fit(train, val, outer_steps=4, checkpoint=ckpt, checkpoint_every=1, progress=False)
    assert ckpt.read_bytes() == saved


def test_bad_configurations():
    d, net = _setup()
    with pytest.raises(UnsupportedError, match="cannot differentiate"):
        nestopt.BilevelTrainer(net, CE, [hparams.LearningRate()])
    with pytest.raises(ShapeMismatchError, match="attach the family to the model being trained"):
        nestopt.BilevelTrainer(net, CE, [hparams.WeightDecay(torch.nn.Linear(6, 3))])
    with pytest.raises(InvalidArgumentError, match="leave inner_optimizer"):
        nestopt.BilevelTrainer(
            net, CE, [], hypergrad=STRATEGIES["unrolled"]["hypergrad"], inner_optimizer=torch.optim.SGD
        )
    with pytest.raises(InvalidArgumentError, match="must agree"):
        nestopt.BilevelTrainer(net, CE, [], hypergrad=STRATEGIES["unrolled"]["hypergrad"], inner_steps_per_outer=7)
    trainer = nestopt.BilevelTrainer(net, CE, [hparams.WeightDecay(net)], inner_steps_per_outer=2)
    with pytest.raises(InvalidArgumentError, match="the train loader is empty"):
        trainer.fit([], data.Loader(d.val, 32), outer_steps=1, progress=False)
    with pytest.raises(InvalidArgumentError, match="the val loader is empty"):
        trainer.fit(data.Loader(d.train, 32), [], outer_steps=1, progress=False)


def test_learning_rate_is_tuned_by_unrolling():
    d, net = _setup()
    lr = hparams.LearningRate(init=0.05)
    trainer = nestopt.BilevelTrainer(
        net, CE, [lr], hypergrad=hypergrad.Unrolled(optimizer=lr.sgd(momentum=0.5), steps=5),
        outer_optimizer=functools.partial(torch.optim.Adam, lr=0.1),
    )  # fmt: skip
    trainer.fit(*_loaders(d)[:2], outer_steps=5, progress=False)
    assert float(lr.value(trainer.hparams).detach()) != pytest.approx(0.05)


def _per_weight_trainer(net, loss=CE):
    return nestopt.BilevelTrainer(
        net, loss, [hparams.WeightDecay(net, per="parameter", init=1e-2)],
        hypergrad=hypergrad.Implicit(solver=linalg.Neumann(steps=3, alpha=0.1)), inner_steps_per_outer=3,
    )  # fmt: skip


def test_an_inner_step_frees_the_last_steps_gradients_before_its_forward_pass():
    """Holding them through the forward pass costs a network-sized buffer at every step (the peak of an inner
    step with per-weight decays falls from 12.55 to 11.94 network sizes in ift-cost's run)."""
    d, net = _setup()
    held = []

    def loss(outputs, targets):
        held.append(any(p.grad is not None for p in net.parameters()))
        return CE(outputs, targets)

    trainer = _per_weight_trainer(net, loss)
    train, val, _ = _loaders(d)
    trainer.fit(train, val, outer_steps=2, progress=False)
    assert len(held) >= 6 and not any(held)


def test_warm_start_keeps_no_gradients_or_initial_copy_between_steps():
    d, net = _setup()
    trainer = _per_weight_trainer(net)
    train, val, _ = _loaders(d)
    trainer.fit(train, val, outer_steps=2, progress=False)
    # gradients are freed once used: the weights' before the hypergradient, the hypergradient after its step
    assert all(p.grad is None for p in trainer.params.values())
    assert all(h.grad is None for h in trainer.hparams.values())
    # no copy of the initial weights was kept, so cold start cannot be switched on afterwards without one
    trainer.warm_start = False
    with pytest.raises(InvalidArgumentError, match="cold start needs the initial weights"):
        trainer.fit(train, val, outer_steps=3, progress=False)
