"""The converter and STN models: outputs, response weights, Delta-STN's base / response split and its
linearization (against central finite differences in float64), and the errors that name the problem."""

from __future__ import annotations

import pytest
import torch

from nestopt import bestresponse, hparams
from nestopt.errors import InvalidArgumentError, ShapeMismatchError, UnsupportedError
from nestopt.hypergrad.best_response import centre_key


class Net(torch.nn.Module):
    """A user's model with its own forward: convolution, pooling, dropout, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.drop = torch.nn.Dropout(0.5)
        self.head = torch.nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.head(self.drop(z.flatten(1)))


def _tree(families, batch: int | None = None, shift: float = 0.0) -> dict[str, torch.Tensor]:
    h = {f.key(k): v.double() + shift for f in families for k, v in f.init().items()}
    return {k: v.expand(batch).clone() if batch and v.dim() == 0 else v for k, v in h.items()}


def test_a_converted_model_with_zero_gates_computes_the_original(f64):
    net = Net()
    fams = [hparams.Dropout(net), hparams.Cutout(length=(0, 4))]
    model = bestresponse.stn(net, fams, init_std=0.0)
    assert isinstance(model.net.conv, bestresponse.StnConv2d) and isinstance(model.net.head, bestresponse.StnLinear)
    assert isinstance(model.net.drop, bestresponse.HyperDropout)
    x = torch.randn(5, 1, 8, 8)
    model.eval(), net.eval()
    torch.testing.assert_close(model(x, _tree(fams)), net(x), rtol=0, atol=1e-14)
    torch.testing.assert_close(model(x, _tree(fams, batch=5)), net(x), rtol=0, atol=1e-14)
    assert all(
        torch.equal(p, q)
        for p, q in zip(net.parameters(), [net.conv.weight, net.conv.bias, net.head.weight, net.head.bias])
    )


def test_dropout_in_train_mode_reads_one_rate_per_example(f64):
    net = torch.nn.Sequential(torch.nn.Dropout(), torch.nn.Linear(200, 200, bias=False))
    fam = hparams.Dropout(net, init=0.5, max_rate=0.9)
    model = bestresponse.stn(net, [fam], init_std=0.0)
    model.net[1].weight.data = torch.eye(200)  # the output is the dropped input
    h = {"dropout/0": torch.tensor([fam.interval.unproject(p) for p in (0.1, 0.8)])}
    out = model.train()(torch.ones(2, 200), h)
    zeros = (out == 0).double().mean(1)
    assert abs(float(zeros[0]) - 0.1) < 0.06 and abs(float(zeros[1]) - 0.8) < 0.06
    assert torch.allclose(out[1][out[1] != 0], torch.tensor(5.0))  # survivors scaled by 1 / (1 - p)


def test_response_weights_are_the_effective_weights_under_the_original_names(f64):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    wd = hparams.WeightDecay(net, per="global")
    model = bestresponse.stn(net, [wd], init_std=0.5)
    params = dict(model.named_parameters())
    h = {"weight_decay/global": torch.tensor(-1.5)}
    w = model.response_weights(params, h)
    assert set(w) == {k for k, _ in net.named_parameters()}
    x = torch.randn(6, 3)
    model.eval(), net.eval()
    ref = torch.func.functional_call(net, {**w, **dict(net.named_buffers())}, (x,))
    torch.testing.assert_close(model(x, h), ref)


def test_delta_stn_base_and_response_steps_train_disjoint_parameters(f64):
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    wd = hparams.WeightDecay(net, per="global")
    model = bestresponse.stn(net, [wd], delta=True, init_std=0.3)
    obj = hparams.Objective(model, torch.nn.functional.cross_entropy, model.families)
    params, h0 = obj.params(), _tree([wd])
    batch = (torch.randn(5, 4), torch.randint(3, (5,)))
    response = set(model.response_parameter_names())
    assert response and response < set(params)

    def trained(h):
        grads = torch.autograd.grad(obj.inner_loss(params, h, batch), list(params.values()), allow_unused=True)
        return {k for k, g in zip(params, grads) if g is not None}

    assert trained(h0) == set(params) - response  # at the centre: the base weights alone
    centred = {
        "weight_decay/global": h0["weight_decay/global"] + 0.7,
        centre_key("weight_decay/global"): h0["weight_decay/global"],
    }
    assert trained(centred) == response  # a response step holds the base weights fixed (penalty included)


def test_delta_stn_linearizes_its_response_in_train_mode(f64):
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    wd = hparams.WeightDecay(net, per="global")
    model = bestresponse.stn(net, [wd], delta=True, init_std=0.3)
    x, c, d = torch.randn(5, 4), torch.tensor(-2.0), 0.7

    def out(t: float, train: bool) -> torch.Tensor:
        model.train(train)
        return model(x, {"weight_decay/global": c + t, centre_key("weight_decay/global"): c})

    eps = 1e-6
    slope = (out(eps, False) - out(-eps, False)) / (2 * eps)
    torch.testing.assert_close(out(d, True), out(0.0, False) + d * slope, rtol=0, atol=1e-8)
    assert float((out(d, False) - out(d, True)).detach().abs().max()) > 1e-3  # eval mode: the exact response


def test_converter_errors_name_the_problem():
    with pytest.raises(UnsupportedError, match="no layer the converter can turn into an STN layer"):
        bestresponse.stn(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Dropout()), [hparams.Dropout(["1"])])
    net = torch.nn.Sequential(torch.nn.Linear(3, 3))
    with pytest.raises(UnsupportedError, match="cannot condition on DistilledData"):
        bestresponse.stn(net, [hparams.DistilledData(2, (3,), 3)])
    with pytest.raises(UnsupportedError, match="cannot condition on LearningRate"):
        bestresponse.stn(net, [hparams.LearningRate()])
    with pytest.raises(InvalidArgumentError, match="not a torch.nn.Dropout"):
        bestresponse.stn(net, [hparams.Dropout(["0"])])
    with pytest.raises(InvalidArgumentError, match="at least one hyperparameter family"):
        bestresponse.stn(net, [])
    model = bestresponse.stn(net, [hparams.WeightDecay(net, per="global")])
    with pytest.raises(ShapeMismatchError, match="lack"):
        model(torch.randn(2, 3), {"other/key": torch.tensor(0.0)})
    with pytest.raises(ShapeMismatchError, match="has shape"):
        model(torch.randn(2, 3), {"weight_decay/global": torch.zeros(2, 2)})
    with pytest.raises(UnsupportedError, match="not centred"):
        model(
            torch.randn(2, 3),
            {"weight_decay/global": torch.tensor(0.0), centre_key("weight_decay/global"): torch.tensor(0.0)},
        )
