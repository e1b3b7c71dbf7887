"""DARTS: the architecture hypergradient (second order through one unrolled step, and first order) against
central finite differences on a tiny space in float64; deriving the architecture; the search runs."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from nestopt import data, hparams, hypergrad, nas
from nestopt.errors import InvalidArgumentError
from nestopt.hypergrad import Problem
from nestopt.optim import functional

SPACE = nas.CellSpace(nodes=3, ops=("tanh", "relu", "sigmoid"))
LR, MOMENTUM = 0.3, 0.9


def _setup() -> tuple[nas.Supernet, nas.ArchitectureWeights, dict, dict, tuple, tuple]:
    torch.manual_seed(0)
    net = nas.Supernet(SPACE, in_features=4, num_classes=3, width=3)
    family = nas.ArchitectureWeights(SPACE, init_scale=0.7, seed=1)
    g = torch.Generator().manual_seed(2)
    train = (torch.randn(16, 4, generator=g), torch.randint(3, (16,), generator=g))
    val = (torch.randn(16, 4, generator=g), torch.randint(3, (16,), generator=g))
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    h = {family.key(k): v for k, v in family.init().items()}
    return net, family, params, h, train, val


def _loss(net: nas.Supernet, p: dict, h: dict, batch: tuple) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(functional_call(net, p, (batch[0], h)), batch[1])


def _central_differences(fn, h: dict, eps: float = 1e-6) -> dict:
    out = {}
    for k, v in h.items():
        g = torch.zeros_like(v)
        for idx in range(v.numel()):
            plus = {
                **h,
                k: v.clone().reshape(-1).index_add(0, torch.tensor([idx]), torch.tensor([eps])).reshape(v.shape),
            }
            minus = {
                **h,
                k: v.clone().reshape(-1).index_add(0, torch.tensor([idx]), torch.tensor([-eps])).reshape(v.shape),
            }
            g.reshape(-1)[idx] = (fn(plus) - fn(minus)) / (2 * eps)
        out[k] = g
    return out


def _rel(a: dict, b: dict) -> float:
    num = sum(float((a[k] - b[k]).pow(2).sum()) for k in b) ** 0.5
    return num / sum(float(b[k].pow(2).sum()) for k in b) ** 0.5


def test_second_order_hypergradient_matches_finite_differences(f64: torch.dtype) -> None:
    net, family, params, h, train, val = _setup()
    net.double()
    params = {k: v.double() for k, v in params.items()}
    obj = hparams.Objective(net, torch.nn.functional.cross_entropy, [family])

    def unrolled_val(hh: dict) -> float:  # L_val(w - lr * grad L_train(w, a), a): DARTS's one virtual step
        w = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        g = torch.autograd.grad(_loss(net, w, hh, train), list(w.values()))
        stepped = {k: v - LR * gk for (k, v), gk in zip(w.items(), g)}  # momentum buffer starts at the gradient
        return float(_loss(net, stepped, hh, val).detach())

    res = hypergrad.unrolled(obj.inner_loss, obj.outer_loss, params, h, [train], val,
                             optimizer=functional.sgd(lr=LR, momentum=MOMENTUM), steps=1)  # fmt: skip
    fd = _central_differences(unrolled_val, h)
    assert _rel(res.grads, fd) < 1e-6
    # the second-order term matters here: the first-order gradient is a different vector
    first = torch.autograd.grad(
        _loss(net, params, {k: v.requires_grad_(True) for k, v in h.items()}, val), list(h.values())
    )
    assert _rel(dict(zip(h, first)), fd) > 1e-2


def test_first_order_strategy_matches_finite_differences(f64: torch.dtype) -> None:
    net, family, params, h, train, val = _setup()
    net.double()
    params = {k: v.double() for k, v in params.items()}
    obj = hparams.Objective(net, torch.nn.functional.cross_entropy, [family])
    problem = Problem(
        inner_loss=obj.inner_loss, outer_loss=obj.outer_loss, step_loss=obj.step_loss, params=params, hparams=h,
        next_train=lambda: train, next_val=lambda: val, inner_step=lambda b, hh: 0.0, steps=1, outer_step=0, seed=0,
    )  # fmt: skip
    res = nas.FirstOrder().hypergradient(problem)
    fd = _central_differences(lambda hh: float(_loss(net, params, hh, val)), h)
    assert _rel(res.grads, fd) < 1e-7
    assert res.info.method == "first-order" and res.info.grad_calls == 1


def test_architecture_weights_shapes_and_derive() -> None:
    family = nas.ArchitectureWeights(SPACE, seed=0)
    init = family.init()
    assert {k: tuple(v.shape) for k, v in init.items()} == {"node0": (3,), "node1": (1, 3), "node2": (2, 3)}
    assert float(max(v.abs().max() for v in init.values())) < 1e-2  # DARTS's 1e-3 scale
    logits = {"architecture/node0": torch.tensor([0.0, 2.0, 1.0]),
              "architecture/node1": torch.tensor([[3.0, 0.0, 0.0]]),
              "architecture/node2": torch.tensor([[0.0, 0.0, 1.0], [0.0, 4.0, 0.0]])}  # fmt: skip
    assert str(family.derive(logits)) == "relu, 0>tanh, 1>relu"
    probs = family.probabilities(logits)
    assert [tuple(p.shape) for p in probs] == [(3,), (1, 3), (2, 3)]
    assert all(float(p.sum()) == pytest.approx(1.0) for p in probs)
    with pytest.raises(
        InvalidArgumentError, match="no architecture logits for node 0: expected the key 'architecture/node0'"
    ):
        family.derive({"other/node0": torch.zeros(3)})


@pytest.mark.parametrize("order", ["first", "second", "implicit"])
def test_darts_search_runs_and_moves_the_logits(order: str) -> None:
    splits = data.synthetic_classification(n_train=64, n_val=64, n_test=16, dim=4, seed=0)
    cfg = nas.DartsConfig(order=order, steps=4, batch_size=32, width=4, cg_steps=3)
    res = nas.darts(SPACE, splits, cfg, seed=0)
    assert SPACE.check(res.architecture) is res.architecture
    assert res.cost["gradient_evaluations"] == 4 * cfg.passes_per_step
    init = {res.family.key(k): v for k, v in res.family.init().items()}
    assert any(not torch.allclose(res.trainer.hparams[k].detach(), init[k]) for k in init)
    assert len(res.trainer.history) == 4


def test_darts_config_bad_input() -> None:
    with pytest.raises(InvalidArgumentError, match="order must be one of"):
        nas.DartsConfig(order="third")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="steps must be a positive integer"):
        nas.DartsConfig(steps=0)
