"""PretrainFinetuneTrainer runs the paper's algorithm: one outer step against the hypergradient written out by
hand (one unrolled head step, a one-term Neumann series with the pre-training learning rate); modes and
buffers; bad inputs."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from nestopt import bilevel, hypergrad, linalg, tree
from nestopt.errors import InvalidArgumentError
from nestopt.optim import functional

D = torch.float64


def _modules(seed=0, bn=False):
    torch.manual_seed(seed)
    encoder = [torch.nn.Linear(3, 2)] + ([torch.nn.BatchNorm1d(2)] if bn else []) + [torch.nn.Tanh()]
    model = torch.nn.Sequential(torch.nn.Sequential(*encoder), torch.nn.Linear(2, 2)).to(D)
    return model, torch.nn.Linear(2, 1).to(D)


def pretrain_loss(net, h, batch):
    x, y = batch
    return (h["logits"].exp() * ((net(x) - y) ** 2).mean(0)).sum()


def finetune_loss(net, head, batch):
    x, y = batch
    return F.mse_loss(head(net[0](x)), y)


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(20, 3, generator=g, dtype=D)
    pt = (x, torch.stack([x[:, 0], torch.randn(20, generator=g, dtype=D)], 1))  # a useful task and a noise task
    xf, xv = torch.randn(10, 3, generator=g, dtype=D), torch.randn(12, 3, generator=g, dtype=D)
    return pt, (xf, xf[:, :1].sin()), (xv, xv[:, :1].sin())


def test_one_outer_step_is_the_papers_hypergradient():
    model, head = _modules()
    pt, ft, val = _data()
    lr, ft_lr = 0.05, 0.1
    h0 = {"logits": torch.tensor([0.1, -0.2], dtype=D)}
    trainer = bilevel.PretrainFinetuneTrainer(
        model, head, pretrain_loss, finetune_loss, h0, pretrain_steps=1, head_steps=0, finetune_lr=ft_lr,
        pretrain_optimizer=functools.partial(torch.optim.SGD, lr=lr),
        outer_optimizer=functools.partial(torch.optim.SGD, lr=1.0),
    )  # fmt: skip
    head0 = tree.clone(dict(head.named_parameters()))
    trainer.fit([pt], [ft], [val], outer_steps=1, progress=False)
    hypergradient = h0["logits"] - trainer.hparams_tree()["logits"]  # SGD with lr 1 on the hyperparameters

    # by hand, on flat vectors: theta = model weights after the pre-training step, psi = head
    theta, spec = tree.flatten(tree.detach(dict(model.named_parameters())))
    psi, hspec = tree.flatten(head0)
    call = lambda v, x: torch.func.functional_call(model, tree.unflatten(v, spec), (x,))
    enc = lambda v, x: torch.func.functional_call(
        model[0], {k[2:]: t for k, t in tree.unflatten(v, spec).items() if k.startswith("0.")}, (x,)
    )
    head_out = lambda u, z: torch.func.functional_call(head, tree.unflatten(u, hspec), (z,))
    l_pt = lambda v, logits: (logits.exp() * ((call(v, pt[0]) - pt[1]) ** 2).mean(0)).sum()
    l_ft = lambda v, u, batch: F.mse_loss(head_out(u, enc(v, batch[0])), batch[1])

    def after_finetuning(v):
        u1 = psi - ft_lr * torch.func.grad(l_ft, argnums=1)(v, psi, ft)
        return l_ft(v, u1, val)

    g = torch.func.grad(after_finetuning)(theta)
    hess = torch.func.hessian(lambda v: l_pt(v, h0["logits"]))(theta)
    v = lr * (g + (g - lr * hess @ g))  # alpha * sum_{j <= 1} (I - alpha H)^j g
    mixed = torch.func.vjp(lambda lg: torch.func.grad(l_pt)(theta, lg), h0["logits"])[1](v)[0]
    torch.testing.assert_close(hypergradient, -mixed, rtol=1e-10, atol=1e-12)
    # the head continues from the fine-tuned head
    u1 = psi - ft_lr * torch.func.grad(l_ft, argnums=1)(theta, psi, ft)
    torch.testing.assert_close(tree.flatten(tree.detach(dict(head.named_parameters())))[0], u1)
    record = trainer.history[-1]
    assert record["stage1"]["iterations"] == 1 and record["stage2"]["iterations"] == 1
    assert abs(record["val_loss"] - float(after_finetuning(theta))) < 1e-12


def test_only_training_steps_change_buffers_and_noise_tasks_lose_weight():
    model, head = _modules(bn=True)
    pt, ft, val = _data()
    seen = {}

    class Watch(hypergrad.TwoStage):
        def hypergradient(self, problem):
            before = tree.clone(dict(model.named_buffers()))
            res = super().hypergradient(problem)
            seen["unchanged"] = all(torch.equal(before[k], b) for k, b in model.named_buffers())
            return res

    strategy = Watch(functional.sgd(lr=0.1), steps=2, solver=linalg.Neumann(steps=3, alpha=0.05, on_growth="continue"))
    start = tree.clone(dict(model.named_buffers()))
    trainer = bilevel.PretrainFinetuneTrainer(
        model, head, pretrain_loss, finetune_loss, {"logits": torch.zeros(2, dtype=D)}, hypergrad=strategy,
        pretrain_steps=3, outer_optimizer=functools.partial(torch.optim.Adam, lr=0.05),
    )  # fmt: skip
    history = trainer.fit([pt], [ft], [val], outer_steps=30, progress=False)
    assert seen["unchanged"]
    assert not torch.equal(start["0.1.running_mean"], dict(model.named_buffers())["0.1.running_mean"])
    logits = history[-1]["hparams/logits"]
    assert logits[0] > logits[1]  # the task that predicts the target's feature gains weight over the noise task
    assert len(history) == 30 and history[-1]["outer_step"] == 30


def test_bad_inputs_name_the_problem():
    model, head = _modules()
    args = (pretrain_loss, finetune_loss)
    h = {"logits": torch.zeros(2, dtype=D)}
    with pytest.raises(InvalidArgumentError, match="share parameters"):
        bilevel.PretrainFinetuneTrainer(model, model[1], *args, h)
    with pytest.raises(InvalidArgumentError, match="hparams must be"):
        bilevel.PretrainFinetuneTrainer(model, head, *args, {})
    with pytest.raises(InvalidArgumentError, match="TwoStage"):
        bilevel.PretrainFinetuneTrainer(model, head, *args, h, hypergrad=hypergrad.Implicit())
    with pytest.raises(InvalidArgumentError, match="pretrain_steps must be a positive integer"):
        bilevel.PretrainFinetuneTrainer(model, head, *args, h, pretrain_steps=0)
    with pytest.raises(InvalidArgumentError, match="factory"):
        bilevel.PretrainFinetuneTrainer(
            model, head, *args, h, pretrain_optimizer=torch.optim.SGD(model.parameters(), lr=0.1)
        )
