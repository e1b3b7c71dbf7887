"""hypergrad.BestResponse: its hypergradient against the IFT's where the best response is known in closed form
(float64), exact checkpoint/resume, alternation, warm-up, Delta-STN steps, and the errors that name the problem."""

from __future__ import annotations

import functools
import math

import pytest
import torch

import nestopt
from nestopt import bestresponse, data, hparams, hypergrad, linalg
from nestopt.errors import InvalidArgumentError, UnsupportedError
from nestopt.hypergrad import Problem
from tests.bilevel.conftest import loaders, regularized_net, task


def _mse(out, y, reduction="mean"):
    return torch.nn.functional.mse_loss(out.squeeze(-1), y, reduction=reduction)


class PriorMean(hparams.Family):
    """A penalty c |w - lambda|^2 toward a learned mean: the best response is affine in lambda."""

    name = "mean"

    def __init__(self, d: int, c: float) -> None:
        self.d, self.c = d, c

    def init(self):
        return {"mean": torch.zeros(self.d)}

    def intervals(self):
        return {"mean": hparams.Interval(-math.inf, math.inf, transform="identity")}

    def penalty(self, params, h):
        return self.c * ((params["weight"].reshape(-1) - self.own(h)["mean"]) ** 2).sum()


def _problem(obj, params, hp, train, val, opt, families, steps=1):
    def inner_step(batch, h):
        loss = obj.step_loss(params, h, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach())

    return Problem(obj.inner_loss, obj.outer_loss, obj.step_loss, params, hp, lambda: train, lambda: val, inner_step,
                   steps, 0, 0, families)  # fmt: skip


def _regression(n=20, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, xv = torch.randn(n, d, generator=g), torch.randn(30, d, generator=g)
    w = torch.randn(d, generator=g)
    return (x, x @ w + 0.3 * torch.randn(n, generator=g)), (xv, xv @ w)


def test_a_trained_local_hypernet_reaches_an_affine_best_response_and_the_ift_hypergradient(f64):
    """With an affine best response, local training (sigma = 0.5) converges to it exactly (every sampled
    lambda's training gradient vanishes there); the hypergradient through it is then the IFT's."""
    (x, y), (xv, yv) = train, val = _regression()
    d, n, c = x.shape[1], x.shape[0], 0.5
    net, fam = torch.nn.Linear(d, 1, bias=False), PriorMean(d, c)
    model = bestresponse.hypernet(net, [fam], "linear")
    obj = hparams.Objective(model, _mse, model.families)
    params = obj.params()
    lam = {"mean/mean": torch.tensor([0.3, -0.2, 0.5], requires_grad=True)}
    strategy = hypergrad.BestResponse(scale=0.5, learn_scale=False, train_steps=1, per_example=False)
    problem = _problem(obj, params, lam, train, val, torch.optim.SGD(list(params.values()), lr=0.1), model.families)
    for _ in range(500):
        strategy.inner_phase(problem)
    w_star = torch.linalg.solve(x.T @ x / n + c * torch.eye(d), x.T @ y / n + c * lam["mean/mean"].detach())
    response = model.response_weights(params, lam)["weight"].reshape(-1)
    torch.testing.assert_close(response, w_star, rtol=1e-10, atol=0)
    slope = model.hypernet.slope.detach()  # dw*/dlambda = c (G + c I)^-1
    torch.testing.assert_close(slope, c * torch.linalg.inv(x.T @ x / n + c * torch.eye(d)), rtol=1e-9, atol=0)
    base = hparams.Objective(net, _mse, [fam])
    ift = hypergrad.implicit(base.inner_loss, base.outer_loss, {"weight": w_star.reshape(1, d)},
                             {"mean/mean": lam["mean/mean"].detach()}, train, val, solver=linalg.Exact())  # fmt: skip
    torch.testing.assert_close(
        strategy.hypergradient(problem).grads["mean/mean"], ift.grads["mean/mean"], rtol=1e-9, atol=1e-12
    )


def test_the_hypergradient_through_the_ridge_best_response_tangent_is_the_ift_hypergradient(f64):
    """Ridge with one log-L2 decay per weight: a linear hypernetwork set to the closed-form best response and
    its Jacobian at lambda (w* = (G + diag e^lambda)^-1 b, dw*/dlambda = -(G + D)^-1 diag(e^lambda w*))."""
    (x, y), val = _regression(n=8, d=4, seed=3)
    n, d = x.shape
    net = torch.nn.Linear(d, 1, bias=False)
    wd = hparams.WeightDecay(net, per="parameter", init=0.1)
    model = bestresponse.hypernet(net, [wd], "linear")
    lam = torch.tensor([[-1.0, 0.5, -2.0, 0.0]])
    a = x.T @ x / n + torch.diag(lam.reshape(-1).exp())
    w_star = torch.linalg.solve(a, x.T @ y / n)
    jac = -torch.linalg.solve(a, torch.diag(lam.reshape(-1).exp() * w_star))
    with torch.no_grad():
        model.hypernet.slope.copy_(jac)
        model.hypernet.base.copy_(w_star - jac @ (lam.reshape(-1) - model.origin))
    obj = hparams.Objective(model, _mse, model.families)
    hp = {"weight_decay/weight": lam.clone().requires_grad_(True)}
    problem = _problem(obj, obj.params(), hp, (x, y), val, None, model.families)
    got = hypergrad.BestResponse(scale=None, learn_scale=False).hypergradient(problem).grads["weight_decay/weight"]
    base = hparams.Objective(net, _mse, [wd])
    ift = hypergrad.implicit(base.inner_loss, base.outer_loss, {"weight": w_star.reshape(1, d)},
                             {"weight_decay/weight": lam}, (x, y), val, solver=linalg.Exact())  # fmt: skip
    torch.testing.assert_close(got, ift.grads["weight_decay/weight"], rtol=1e-10, atol=1e-13)
    assert float(got.abs().min()) > 1e-4  # a real test: every component is non-zero


def _stn_trainer(strategy, **kw):
    net = regularized_net(seed=3)
    fams = [hparams.Dropout(net, init=0.1), hparams.Cutout(length=(0, 3), holes=1, init_length=1)]
    model = bestresponse.stn(net, fams, delta=strategy.delta)
    return nestopt.BilevelTrainer(
        model, torch.nn.functional.cross_entropy, model.families, hypergrad=strategy, seed=5,
        inner_optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9),
        outer_optimizer=functools.partial(torch.optim.Adam, lr=3e-3), **kw,
    )  # fmt: skip


@pytest.mark.parametrize("delta", [False, True])
def test_checkpoint_and_resume_of_a_best_response_run_is_bit_identical(tmp_path, delta):
    strategy = hypergrad.BestResponse(train_steps=2, val_steps=2, warmup=3, delta=delta)
    d = task()
    straight = _stn_trainer(strategy)
    straight.fit(*loaders(d)[:2], outer_steps=7, progress=False)
    first = _stn_trainer(strategy)
    first.fit(*loaders(d)[:2], outer_steps=4, checkpoint=tmp_path / "run.pt", checkpoint_every=4, progress=False)
    resumed = _stn_trainer(strategy)
    resumed.fit(*loaders(d)[:2], outer_steps=7, checkpoint=tmp_path / "run.pt", resume=True, progress=False)
    a, b = straight.state_dict(), resumed.state_dict()
    for group in ("params", "buffers", "hparams"):
        assert all(torch.equal(a[group][k], b[group][k]) for k in a[group]), group
    assert a["strategy"] == b["strategy"] == {"cycle": 1, "warm": True}
    same = lambda u, v: u == v or (isinstance(u, float) and math.isnan(u) and math.isnan(v))
    assert all(same(r[k], s[k]) for r, s in zip(a["history"], b["history"], strict=True) for k in r if k != "seconds")


def test_alternation_warmup_and_delta_steps_are_counted():
    d = task()
    trainer = _stn_trainer(hypergrad.BestResponse(train_steps=2, val_steps=3, warmup=4))
    history = trainer.fit(*loaders(d)[:2], outer_steps=6, progress=False)
    # the first outer step trains warmup + T_train steps, then every third one trains T_train steps
    assert history.column("inner_steps") == [6, 6, 6, 8, 8, 8]
    delta = _stn_trainer(hypergrad.BestResponse(train_steps=2, delta=True))
    assert delta.fit(*loaders(d)[:2], outer_steps=2, progress=False).column("inner_steps") == [4, 8]  # base + response


def test_learned_scales_are_outer_variables_and_the_schedule_is_in_the_history():
    d = task()
    trainer = _stn_trainer(hypergrad.BestResponse(scale=0.5, train_steps=2))
    history = trainer.fit(*loaders(d)[:2], outer_steps=3, progress=False)
    scale_keys = sorted(k for k in trainer.hparams if k.startswith("best_response/scale/"))
    assert scale_keys == ["best_response/scale/cutout/length", "best_response/scale/dropout/3"]
    fams = trainer.objective.families
    sched = bestresponse.schedule(history, fams)
    assert set(sched) == {"dropout/3", "cutout/length"} and len(sched["dropout/3"]) == 3
    final = {f.key(k): float(v.detach()) for f in fams for k, v in f.project(trainer.hparams).items()}
    assert sched["dropout/3"][-1] == pytest.approx(final["dropout/3"], rel=1e-6)
    assert sched["cutout/length"][-1] in (0.0, 1.0, 2.0, 3.0)


def test_a_global_hypernet_trains_on_its_prior():
    seen = []
    prior = bestresponse.UniformPrior((-3.0, -1.0))
    strategy = bestresponse.hypernet_strategy("global", prior=(-3.0, -1.0), warmup=5)
    strategy.sample = lambda values: seen.append(prior(values)) or seen[-1]
    d = data.synthetic_regression(n_train=30, n_val=20, n_test=20, dim=4, seed=0)
    net = torch.nn.Linear(4, 1, bias=False).double()
    model = bestresponse.hypernet(net, [hparams.WeightDecay(net, per="global")], "mlp", hidden=8)
    trainer = nestopt.BilevelTrainer(model, _mse, model.families, hypergrad=strategy,
                                     inner_optimizer=functools.partial(torch.optim.Adam, lr=0.01))  # fmt: skip
    trainer.fit(data.Loader(d.train, 30), data.Loader(d.val, 20), outer_steps=3, progress=False)
    values = torch.stack([s["weight_decay/global"] for s in seen])
    assert len(seen) == 5 + 3 and bool(((values >= -3) & (values <= -1)).all()) and float(values.std()) > 0.1


def test_bad_strategy_arguments_raise_named_errors():
    with pytest.raises(InvalidArgumentError, match="scale .* must be a finite positive number, got 0"):
        hypergrad.BestResponse(scale=0)
    with pytest.raises(InvalidArgumentError, match="got -0.5"):
        hypergrad.BestResponse(scale=-0.5)
    with pytest.raises(InvalidArgumentError, match="train_steps must be a positive integer, got 0"):
        hypergrad.BestResponse(train_steps=0)
    with pytest.raises(InvalidArgumentError, match="val_steps must be a positive integer, got 0"):
        hypergrad.BestResponse(val_steps=0)
    with pytest.raises(InvalidArgumentError, match="learn_scale=True"):
        hypergrad.BestResponse(scale=None)
    with pytest.raises(InvalidArgumentError, match="entropy_weight"):
        hypergrad.BestResponse(entropy_weight=-1.0)
    with pytest.raises(InvalidArgumentError, match="prior"):
        bestresponse.hypernet_strategy("global")


def test_sampling_families_are_refused_by_strategies_that_cannot_differentiate_them():
    net = regularized_net()
    for strategy in (hypergrad.Implicit(), hypergrad.Unrolled(optimizer=nestopt.optim.functional.sgd(lr=0.1), steps=2)):
        with pytest.raises(UnsupportedError, match=r"\['sampling'\].*hypergrad.BestResponse"):
            nestopt.BilevelTrainer(net, torch.nn.functional.cross_entropy, [hparams.Dropout(net)], hypergrad=strategy)
        with pytest.raises(UnsupportedError, match="sampling"):
            nestopt.BilevelTrainer(net, torch.nn.functional.cross_entropy, [hparams.Cutout()], hypergrad=strategy)


def test_a_model_that_does_not_condition_on_a_family_is_refused():
    d = task()
    net = regularized_net()
    trainer = nestopt.BilevelTrainer(net, torch.nn.functional.cross_entropy, [hparams.WeightDecay(net, per="global")],
                                     hypergrad=hypergrad.BestResponse())  # fmt: skip
    with pytest.raises(UnsupportedError, match="does not condition on them"):
        trainer.fit(*loaders(d)[:2], outer_steps=1, progress=False)
    lin = torch.nn.Linear(6, 3)
    fams = [hparams.WeightDecay(lin, per="global"), hparams.Cutout(length=(0, 2), init_length=1)]
    model = bestresponse.hypernet(lin, fams[:1])
    unconditioned = nestopt.BilevelTrainer(model, torch.nn.functional.cross_entropy, [*model.families, fams[1]],
                                           hypergrad=hypergrad.BestResponse())  # fmt: skip
    with pytest.raises(UnsupportedError, match=r"\['cutout/length'\]: the model does not condition on them"):
        unconditioned.fit(*loaders(d)[:2], outer_steps=1, progress=False)
    model = bestresponse.hypernet(lin, fams)  # a hypernetwork generates one set of weights per batch
    per_example = nestopt.BilevelTrainer(model, torch.nn.functional.cross_entropy, model.families,
                                         hypergrad=hypergrad.BestResponse())  # fmt: skip
    with pytest.raises(UnsupportedError, match="per_example=False"):
        per_example.fit(*loaders(d)[:2], outer_steps=1, progress=False)


def test_a_simplified_hypernet_learns_the_best_response_at_the_current_value(f64):
    from nestopt.experiments._br_common import ridge  # the closed form w*(lambda) = (G + e^lambda I)^-1 b

    problem = ridge(0, n_train=15, n_val=20, dim=4, noise=0.5)
    net = torch.nn.Linear(4, 1, bias=False)
    model = bestresponse.hypernet(net, [hparams.WeightDecay(net, per="global", init=math.exp(-1.0))], "linear")
    trainer = nestopt.BilevelTrainer(
        model, _mse, model.families, hypergrad=bestresponse.hypernet_strategy("simplified"),
        inner_optimizer=functools.partial(torch.optim.Adam, lr=0.05),
        outer_optimizer=functools.partial(torch.optim.SGD, lr=0.0),  # lambda stays at its initial value
    )  # fmt: skip
    trainer.fit(data.Loader(problem.train, 15), data.Loader(problem.val, 20), outer_steps=600, progress=False)
    lam = trainer.hparams["weight_decay/global"].detach()
    assert float(lam) == pytest.approx(-1.0)
    w = model(None, {"weight_decay/global": lam}, weights=True)["weight"].detach().reshape(-1)
    assert torch.allclose(w, problem.w_star(lam), atol=1e-4)
