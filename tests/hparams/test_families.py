"""Every family's hyperparameters get non-zero hypergradients that match finite differences (float64)."""

import pytest
import torch

from nestopt import hparams, hypergrad, tree
from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.optim import functional

D = torch.float64


def _net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()


def _data(n=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen, dtype=D)
    y = torch.randint(3, (n,), generator=gen)
    return x, y, torch.arange(n)


def _unrolled_check(objective, h0, batches, val, steps=6, lr=0.3):
    opt = functional.sgd(lr=lr, momentum=0.5)
    params = tree.clone(objective.params())
    res = hypergrad.unrolled(
        objective.inner_loss, objective.outer_loss, params, h0, batches, val, optimizer=opt, steps=steps
    )

    def objective_value(h):
        w, s = tree.clone(params), opt.init(params)
        for k in range(steps):
            g = torch.func.grad(objective.inner_loss)(w, h, batches[k])
            w, s = opt.update(g, s, w, h)
        return float(objective.outer_loss(w, h, val))

    gen = torch.Generator().manual_seed(5)
    d = {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in h0.items()}
    eps = 1e-6
    fd = (objective_value(tree.axpy(eps, d, h0)) - objective_value(tree.axpy(-eps, d, h0))) / (2 * eps)
    assert float(tree.dot(res.grads, d)) == pytest.approx(fd, rel=1e-5, abs=1e-10)
    for k, g in res.grads.items():
        assert float(g.abs().max()) > 0, f"zero hypergradient for {k}"
    return res


@pytest.mark.parametrize("per", ["global", "layer", "parameter"])
def test_weight_decay(per):
    net = _net()
    obj = hparams.Objective(net, torch.nn.functional.cross_entropy, [hparams.WeightDecay(net, per=per, init=1e-2)])
    h0 = obj.init_hparams()
    expected = {"global": 1, "layer": 4, "parameter": 4}[per]
    assert len(h0) == expected
    x, y, i = _data()
    _unrolled_check(obj, h0, [(x, y)] * 6, _data(seed=1)[:2])


def test_weight_decay_penalty_value():
    net = _net()
    wd = hparams.WeightDecay(net, per="layer", init=0.5)
    obj = hparams.Objective(net, torch.nn.functional.cross_entropy, [wd])
    params = obj.params()
    expected = 0.5 * sum(float((p.detach() ** 2).sum()) for p in params.values())
    assert float(wd.penalty(params, obj.init_hparams()).detach()) == pytest.approx(expected)


def test_distilled_data_with_learned_labels():
    net = _net()
    dd = hparams.DistilledData(2, (4,), 3, learn_labels=True, seed=1)
    obj = hparams.Objective(net, torch.nn.functional.cross_entropy, [dd])
    h0 = obj.init_hparams()
    assert h0["distilled/x"].shape == (6, 4) and h0["distilled/label_logits"].shape == (6, 3)
    # the inner loss ignores the real batch: it trains on the distilled examples
    x, y, _ = _data()
    a = obj.inner_loss(obj.params(), h0, (x, y))
    b = obj.inner_loss(obj.params(), h0, (x[:3], y[:3]))
    assert torch.equal(a, b)
    _unrolled_check(obj, h0, [(x, y)] * 6, _data(seed=1)[:2])
    xs, ys = dd.dataset(h0)
    assert xs.shape == (6, 4) and ys.tolist() == [0, 0, 1, 1, 2, 2]


def test_augmentation_net_composes_with_weight_decay():
    net = _net()
    aug_net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4)).double()
    fams = [hparams.WeightDecay(net, per="global", init=1e-2), hparams.AugmentationNet(aug_net)]
    obj = hparams.Objective(net, torch.nn.functional.cross_entropy, fams)
    h0 = obj.init_hparams()
    assert {k.split("/")[0] for k in h0} == {"weight_decay", "augment"}
    x, y, _ = _data()
    _unrolled_check(obj, h0, [(x, y)] * 6, _data(seed=1)[:2])


@pytest.mark.parametrize("per", ["example", "class"])
def test_loss_reweighting(per):
    net = _net()
    x, y, idx = _data()
    size = 24 if per == "example" else 3
    rw = hparams.LossReweighting(per=per, size=size)
    obj = hparams.Objective(net, torch.nn.functional.cross_entropy, [rw])
    h0 = {
        k: v + 0.1 * torch.randn(v.shape, generator=torch.Generator().manual_seed(2), dtype=D)
        for k, v in obj.init_hparams().items()
    }
    _unrolled_check(obj, h0, [(x, y, idx)] * 6, _data(seed=1)[:2])


def test_per_example_reweighting_needs_indices():
    net = _net()
    obj = hparams.Objective(net, torch.nn.functional.cross_entropy, [hparams.LossReweighting(per="example", size=24)])
    x, y, _ = _data()
    with pytest.raises(InvalidArgumentError, match="needs batches \\(x, y, index\\)"):
        obj.inner_loss(obj.params(), obj.init_hparams(), (x, y))


def test_learning_rate_family_by_unrolling():
    net = _net()
    lr = hparams.LearningRate(init=0.2)
    obj = hparams.Objective(net, torch.nn.functional.cross_entropy, [lr])
    h0 = obj.init_hparams()
    x, y, _ = _data()
    opt = lr.sgd(momentum=0.5)
    params = tree.clone(obj.params())
    res = hypergrad.unrolled(
        obj.inner_loss, obj.outer_loss, params, h0, [(x, y)] * 5, _data(seed=1)[:2], optimizer=opt, steps=5
    )
    fwd = hypergrad.forward(
        obj.inner_loss, obj.outer_loss, params, h0, [(x, y)] * 5, _data(seed=1)[:2], optimizer=opt, steps=5
    )
    assert torch.allclose(res.grads["learning_rate/log_lr"], fwd.grads["learning_rate/log_lr"])
    assert float(res.grads["learning_rate/log_lr"].abs()) > 0


def test_implicit_hypergradient_of_weight_decay_at_the_optimum():
    """A linear model (convex inner problem) solved to machine precision: IFT vs finite differences."""
    from nestopt import linalg

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3).double()
    obj = hparams.Objective(
        net, torch.nn.functional.cross_entropy, [hparams.WeightDecay(net, per="parameter", init=0.05)]
    )
    x, y, _ = _data(40)
    val = _data(30, seed=3)[:2]

    def solve(h):
        vec, spec = tree.flatten(tree.clone(obj.params()))
        f = lambda v: obj.inner_loss(tree.unflatten(v, spec), h, (x, y))
        for _ in range(30):
            vec = vec - torch.linalg.solve(torch.func.hessian(f)(vec), torch.func.grad(f)(vec))
        return tree.unflatten(vec, spec)

    h0 = obj.init_hparams()
    res = hypergrad.implicit(obj.inner_loss, obj.outer_loss, solve(h0), h0, (x, y), val, solver=linalg.Exact())
    d = {k: torch.randn_like(v) for k, v in h0.items()}
    eps = 1e-5
    fd = (
        float(obj.outer_loss(solve(tree.axpy(eps, d, h0)), h0, val))
        - float(obj.outer_loss(solve(tree.axpy(-eps, d, h0)), h0, val))
    ) / (2 * eps)
    assert float(tree.dot(res.grads, d)) == pytest.approx(fd, rel=1e-6)


def test_family_attached_to_another_model():
    wd = hparams.WeightDecay(torch.nn.Linear(5, 3))
    with pytest.raises(ShapeMismatchError, match="WeightDecay was built for 'weight' of shape \\(3, 5\\)"):
        hparams.Objective(torch.nn.Linear(4, 3), torch.nn.functional.cross_entropy, [wd])
    wd = hparams.WeightDecay(torch.nn.Sequential(torch.nn.Linear(4, 3)))
    with pytest.raises(ShapeMismatchError, match="parameter '0.weight', which the trained model lacks"):
        hparams.Objective(torch.nn.Linear(4, 3), torch.nn.functional.cross_entropy, [wd])


def test_bad_family_arguments():
    net = _net()
    with pytest.raises(InvalidArgumentError, match="per must be"):
        hparams.WeightDecay(net, per="neuron")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="init must be a positive"):
        hparams.WeightDecay(net, init=-1.0)
    with pytest.raises(InvalidArgumentError, match="distinct names"):
        hparams.Objective(net, torch.nn.functional.cross_entropy, [hparams.WeightDecay(net), hparams.WeightDecay(net)])
    with pytest.raises(InvalidArgumentError, match="init must have shape"):
        hparams.DistilledData(1, (4,), 3, init=torch.zeros(2, 4))
    with pytest.raises(InvalidArgumentError, match="keep the shape"):
        aug = hparams.AugmentationNet(torch.nn.Linear(4, 2).double())
        obj = hparams.Objective(net, torch.nn.functional.cross_entropy, [aug])
        obj.inner_loss(obj.params(), obj.init_hparams(), _data()[:2])


def test_centered_augmentation_is_a_pure_perturbation():
    aug_net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4)).double()
    x, y, _ = _data()
    h = {f"augment/{k}": v.detach() for k, v in aug_net.named_parameters()}
    # no noise: no augmentation at all, whatever the network
    still = hparams.AugmentationNet(aug_net, centered=True)
    assert torch.equal(still.transform_batch(h, (x, y))[0], x)
    # with noise: x + T(x + sigma eps) - T(x), eps from the family's generator
    aug = hparams.AugmentationNet(aug_net, noise=0.5, centered=True, seed=3)
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=D)
    expected = x + aug_net(x + 0.5 * eps) - aug_net(x)
    torch.testing.assert_close(aug.transform_batch(h, (x, y))[0], expected.detach())
    with pytest.raises(InvalidArgumentError, match="needs residual=True"):
        hparams.AugmentationNet(aug_net, residual=False, centered=True)


def test_centered_augmentation_gradient_matches_finite_differences():
    net = _net()
    aug = hparams.AugmentationNet(
        torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4)).double(),
        noise=0.5, centered=True, seed=3,
    )  # fmt: skip
    obj = hparams.Objective(net, torch.nn.functional.cross_entropy, [aug])
    h0 = obj.init_hparams()
    start = aug.state_dict()
    batch = _data()[:2]

    def loss(h):
        aug.load_state_dict(start)  # the same noise at every evaluation
        return obj.inner_loss(obj.params(), h, batch)

    grads = tree.detach(torch.func.grad(loss)(h0))
    d = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(4), dtype=D) for k, v in h0.items()}
    eps = 1e-6
    with torch.no_grad():
        fd = (float(loss(tree.axpy(eps, d, h0))) - float(loss(tree.axpy(-eps, d, h0)))) / (2 * eps)
    assert float(tree.dot(grads, d)) == pytest.approx(fd, rel=1e-6)
    # the output bias cancels in T(x + sigma eps) - T(x); every other weight moves the loss
    assert float(grads["augment/2.bias"].abs().max()) == 0
    assert all(float(g.abs().max()) > 0 for k, g in grads.items() if k != "augment/2.bias")
