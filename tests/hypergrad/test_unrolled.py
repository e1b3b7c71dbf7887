import pytest
import torch

from nestopt import hypergrad, tree
from nestopt.errors import InvalidArgumentError, NonFiniteError, TooLargeError
from nestopt.optim import functional
from tests.hypergrad.conftest import directional_fd, random_direction

OPTIMIZERS = {
    "sgd": functional.sgd(lr=0.1),
    "momentum": functional.sgd(lr=0.05, momentum=0.9),
    "nesterov": functional.sgd(lr=0.05, momentum=0.5, nesterov=True),
    "adam": functional.adam(lr=0.01),
}


def _batches(mlp, steps):
    x, y = mlp.train
    return [(x[(5 * k) % 40 : (5 * k) % 40 + 20], y[(5 * k) % 40 : (5 * k) % 40 + 20]) for k in range(steps)]


def _unrolled_objective(mlp, optimizer, steps, batches):
    def fn(hparams):
        w, state = tree.clone(mlp.params), optimizer.init(mlp.params)
        for k in range(steps):
            g = torch.func.grad(mlp.inner_loss)(w, hparams, batches[k])
            w, state = optimizer.update(g, state, w, hparams)
        return float(mlp.outer_loss(w, hparams, mlp.val))

    return fn


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_unrolled_matches_finite_differences(mlp, name):
    opt, steps = OPTIMIZERS[name], 12
    batches = _batches(mlp, steps)
    res = hypergrad.unrolled(
        mlp.inner_loss, mlp.outer_loss, mlp.params, mlp.hparams, batches, mlp.val, optimizer=opt, steps=steps
    )
    d = random_direction(mlp.hparams)
    fd = directional_fd(_unrolled_objective(mlp, opt, steps, batches), mlp.hparams, d)
    assert float(tree.dot(res.grads, d)) == pytest.approx(fd, rel=1e-6, abs=1e-10)
    assert res.info.iterations == steps and res.info.grad_calls == steps + 1


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("truncate", [None, 5])
def test_checkpointing_gives_the_same_numbers(mlp, name, truncate):
    opt, steps = OPTIMIZERS[name], 11
    batches = _batches(mlp, steps)
    args = (mlp.inner_loss, mlp.outer_loss, mlp.params, mlp.hparams, batches, mlp.val)
    plain = hypergrad.unrolled(*args, optimizer=opt, steps=steps, truncate=truncate)
    ckpt = hypergrad.unrolled(*args, optimizer=opt, steps=steps, truncate=truncate, checkpoint=True)
    for k in plain.grads:
        assert torch.allclose(plain.grads[k], ckpt.grads[k], rtol=1e-10, atol=1e-14)
        assert torch.allclose(plain.params[k], ckpt.params[k])
    differentiated = truncate or steps
    assert ckpt.info.extra["peak_stored_states"] <= differentiated.bit_length() + 1


def test_truncation_differentiates_only_the_last_steps(mlp):
    opt, steps, t = OPTIMIZERS["sgd"], 10, 4
    batches = _batches(mlp, steps)
    args = (mlp.inner_loss, mlp.outer_loss, mlp.params, mlp.hparams)
    full = hypergrad.unrolled(*args, batches, mlp.val, optimizer=opt, steps=steps, truncate=t)
    # the same as a full unroll of the last t steps started from where the first steps left off
    head = hypergrad.unrolled(*args, batches, mlp.val, optimizer=opt, steps=steps - t)
    tail = hypergrad.unrolled(
        mlp.inner_loss, mlp.outer_loss, head.params, mlp.hparams, batches[steps - t :], mlp.val, optimizer=opt, steps=t
    )
    assert all(torch.allclose(full.grads[k], tail.grads[k]) for k in full.grads)
    assert full.info.iterations == t


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_forward_mode_agrees_with_reverse_mode(mlp, name):
    opt, steps = OPTIMIZERS[name], 8
    batches = _batches(mlp, steps)
    args = (mlp.inner_loss, mlp.outer_loss, mlp.params, mlp.hparams, batches, mlp.val)
    rev = hypergrad.unrolled(*args, optimizer=opt, steps=steps)
    fwd = hypergrad.forward(*args, optimizer=opt, steps=steps)
    assert fwd.info.extra["tangents"] == 25
    for k in rev.grads:
        assert torch.allclose(rev.grads[k], fwd.grads[k], rtol=1e-9, atol=1e-13)
        assert torch.allclose(rev.params[k], fwd.params[k])


def test_learning_rate_as_hyperparameter(mlp):
    opt = functional.sgd(lr=lambda h: h["log_lr"].exp(), momentum=0.5)
    hp = {"log_lr": torch.tensor(-2.0, dtype=torch.float64)}
    inner = lambda p, h, b: mlp.inner_loss(p, mlp.hparams, b)
    steps = 10
    batches = _batches(mlp, steps)
    res = hypergrad.unrolled(inner, mlp.outer_loss, mlp.params, hp, batches, mlp.val, optimizer=opt, steps=steps)
    fwd = hypergrad.forward(inner, mlp.outer_loss, mlp.params, hp, batches, mlp.val, optimizer=opt, steps=steps)

    def objective(h):
        w, state = tree.clone(mlp.params), opt.init(mlp.params)
        for k in range(steps):
            w, state = opt.update(torch.func.grad(inner)(w, h, batches[k]), state, w, h)
        return float(mlp.outer_loss(w, h, mlp.val))

    fd = directional_fd(objective, hp, {"log_lr": torch.tensor(1.0, dtype=torch.float64)})
    assert float(res.grads["log_lr"]) == pytest.approx(fd, rel=1e-6)
    assert float(fwd.grads["log_lr"]) == pytest.approx(fd, rel=1e-6)


def test_unrolled_approaches_implicit_as_steps_grow(mlp):
    from nestopt import linalg

    implicit = hypergrad.implicit(
        mlp.inner_loss, mlp.outer_loss, mlp.params, mlp.hparams, mlp.train, mlp.val, solver=linalg.Exact()
    )
    errors = []
    for steps in (5, 20, 80):
        res = hypergrad.unrolled(
            mlp.inner_loss, mlp.outer_loss, mlp.params, mlp.hparams, [mlp.train] * steps, mlp.val,
            optimizer=functional.sgd(lr=0.5), steps=steps,
        )  # fmt: skip
        errors.append(float(tree.norm(tree.sub(res.grads, implicit.grads)) / tree.norm(implicit.grads)))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-3


def test_against_higher(mlp):
    higher = pytest.importorskip("higher")
    steps = 6
    batches = _batches(mlp, steps)
    keys = list(mlp.params)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = torch.nn.Linear(3, 5).double()
            self.l2 = torch.nn.Linear(5, 1, bias=False).double()

        def forward(self, x):
            return self.l2(torch.tanh(self.l1(x)))

    net = Net()
    with torch.no_grad():
        for k, p in net.named_parameters():
            p.copy_(mlp.params[k])
    hp = {k: v.clone().requires_grad_(True) for k, v in mlp.hparams.items()}
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    with higher.innerloop_ctx(net, opt, copy_initial_weights=True) as (fnet, diffopt):
        for xb, yb in batches:
            named = dict(zip(keys, fnet.parameters()))
            loss = ((fnet(xb) - yb) ** 2).mean() + sum((hp[k].exp() * named[k] ** 2).sum() for k in keys)
            diffopt.step(loss)
        val = ((fnet(mlp.val[0]) - mlp.val[1]) ** 2).mean()
        reference = dict(zip(keys, torch.autograd.grad(val, [hp[k] for k in keys])))
    res = hypergrad.unrolled(
        mlp.inner_loss, mlp.outer_loss, mlp.params, mlp.hparams, batches, mlp.val,
        optimizer=functional.sgd(lr=0.05, momentum=0.9), steps=steps,
    )  # fmt: skip
    for k in keys:
        assert torch.allclose(res.grads[k], reference[k], rtol=1e-9, atol=1e-13)


def test_bad_arguments(mlp):
    args = (mlp.inner_loss, mlp.outer_loss, mlp.params, mlp.hparams)
    opt = functional.sgd(lr=0.1)
    with pytest.raises(InvalidArgumentError, match="single batch"):
        hypergrad.unrolled(*args, mlp.train, mlp.val, optimizer=opt, steps=3)
    with pytest.raises(InvalidArgumentError, match="has 2 batches but steps=3"):
        hypergrad.unrolled(*args, [mlp.train] * 2, mlp.val, optimizer=opt, steps=3)
    with pytest.raises(InvalidArgumentError, match="truncate"):
        hypergrad.unrolled(*args, [mlp.train] * 3, mlp.val, optimizer=opt, steps=3, truncate=4)
    with pytest.raises(InvalidArgumentError, match="torch.optim optimizers"):
        hypergrad.unrolled(*args, [mlp.train] * 3, mlp.val, optimizer=torch.optim.SGD, steps=3)
    with pytest.raises(InvalidArgumentError, match="steps must be a positive integer"):
        hypergrad.Unrolled(optimizer=opt, steps=0)
    with pytest.raises(TooLargeError, match="25 exceeds max_hparams=10"):
        hypergrad.forward(*args, [mlp.train] * 3, mlp.val, optimizer=opt, steps=3, max_hparams=10)
    blowup = functional.sgd(lr=1e6)
    with pytest.raises(NonFiniteError, match="inner step"):
        hypergrad.unrolled(*args, [mlp.train] * 30, mlp.val, optimizer=blowup, steps=30)


def test_batches_from_callable_and_iterator(mlp):
    opt = functional.sgd(lr=0.1)
    batches = _batches(mlp, 4)
    args = (mlp.inner_loss, mlp.outer_loss, mlp.params, mlp.hparams)
    a = hypergrad.unrolled(*args, batches, mlp.val, optimizer=opt, steps=4)
    b = hypergrad.unrolled(*args, lambda k: batches[k], mlp.val, optimizer=opt, steps=4)
    c = hypergrad.unrolled(*args, iter(batches), mlp.val, optimizer=opt, steps=4, checkpoint=True)
    for k in a.grads:
        assert torch.equal(a.grads[k], b.grads[k])
        assert torch.allclose(a.grads[k], c.grads[k])
