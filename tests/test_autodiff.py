import pytest
import torch

from nestopt import autodiff, tree
from nestopt.errors import InvalidArgumentError, NonFiniteError, UnsupportedError
from nestopt.profile import PeakMemory


def _problem():
    torch.manual_seed(0)
    x = torch.randn(16, 3, dtype=torch.float64)
    y = torch.randn(16, dtype=torch.float64)
    params = {"w1": torch.randn(4, 3, dtype=torch.float64), "w2": torch.randn(4, dtype=torch.float64)}
    hparams = {"wd": torch.rand(4, 3, dtype=torch.float64), "scale": torch.tensor(0.7, dtype=torch.float64)}

    def loss(p, h, batch):
        xb, yb = batch
        pred = torch.tanh(xb @ p["w1"].T) @ p["w2"] * h["scale"]
        return ((pred - yb) ** 2).mean() + (h["wd"] * p["w1"] ** 2).sum()

    return loss, params, hparams, (x, y)


def _flat_fn(loss, params, hparams, batch):
    _, pspec = tree.flatten(params)
    _, hspec = tree.flatten(hparams)
    return lambda wv, hv: loss(tree.unflatten(wv, pspec), tree.unflatten(hv, hspec), batch)


@pytest.mark.parametrize("mode", ["rev-rev", "fwd-rev"])
def test_second_order_products_match_dense_derivatives(mode):
    loss, params, hparams, batch = _problem()
    f = _flat_fn(loss, params, hparams, batch)
    wv, hv = tree.flatten(params)[0], tree.flatten(hparams)[0]
    hess = torch.autograd.functional.hessian(lambda w: f(w, hv), wv)
    mixed = torch.autograd.functional.jacobian(
        lambda h: torch.autograd.functional.jacobian(lambda w: f(w, h), wv, create_graph=True), hv
    )  # d(grad_w)/d(lambda): P x H
    v = {k: torch.randn_like(p) for k, p in params.items()}
    u = {k: torch.randn_like(h) for k, h in hparams.items()}
    vv, uv = tree.flatten(v)[0], tree.flatten(u)[0]

    lin = autodiff.linearize(loss, params, hparams, batch, mode=mode)
    assert torch.allclose(tree.flatten(lin.hvp(v))[0], hess @ vv)
    assert torch.allclose(tree.flatten(lin.mixed_vjp(v))[0], mixed.T @ vv)
    batched = lin.hvp_batched({k: torch.stack([t, 2 * t]) for k, t in v.items()})
    assert torch.allclose(batched["w1"][1], 2 * lin.hvp(v)["w1"])
    assert torch.allclose(tree.flatten(autodiff.mixed_jvp(loss, params, hparams, batch, u))[0], mixed @ uv)
    assert lin.counter.hvps == 4 and lin.counter.mixed == 1 and lin.counter.grads == 1
    value, g = autodiff.grad(loss, params, hparams, batch)
    assert torch.allclose(tree.flatten(g)[0], tree.flatten(lin.grad)[0])
    assert torch.allclose(value, f(wv, hv))


@pytest.fixture
def _on_the_cpu():
    """Allocator byte counts are exact on the CPU (CUDA's caching allocator rounds its blocks)."""
    with torch.device("cpu"):
        yield


@pytest.mark.parametrize("curvature", ["hessian", "gauss-newton"])
@pytest.mark.usefixtures("_on_the_cpu")
def test_a_linearization_without_the_gradients_value_gives_the_same_products(curvature):
    torch.manual_seed(0)
    x, y = torch.randn(32, 5, dtype=torch.float64), torch.randn(32, dtype=torch.float64)
    loss = autodiff.GaussNewtonLoss(
        outputs=lambda p, h, b: torch.tanh(b[0] @ p["w1"].T) @ p["w2"],
        head=lambda z, h, b: ((z - b[1]) ** 2).mean(),
        rest=lambda p, h, b: (h["wd"] * p["w1"] ** 2).sum(),
    )
    params = {"w1": torch.randn(64, 5, dtype=torch.float64), "w2": torch.randn(64, dtype=torch.float64)}
    hparams = {"wd": torch.rand(64, 5, dtype=torch.float64)}
    v = {k: torch.randn_like(p) for k, p in params.items()}
    kept = autodiff.linearize(loss, params, hparams, (x, y), curvature=curvature)
    with PeakMemory() as lean_mem:
        lean = autodiff.linearize(loss, params, hparams, (x, y), curvature=curvature, keep_grad=False)
    with PeakMemory() as full_mem:
        full = autodiff.linearize(loss, params, hparams, (x, y), curvature=curvature)
    # what each holds after it is built: the same graph, and the gradient's value only in the full one
    assert full_mem.current - lean_mem.current == sum(p.numel() * 8 for p in params.values())
    for got, want in ((lean.hvp(v), kept.hvp(v)), (lean.mixed_vjp(v), kept.mixed_vjp(v))):
        assert all(torch.equal(got[k], want[k]) for k in want)
    assert lean.grad_norm == pytest.approx(float(tree.norm(kept.grad)), rel=1e-15)
    with pytest.raises(UnsupportedError, match="keep_grad=False"):
        _ = lean.grad
    del full


def test_unused_hyperparameter_is_reported():
    loss = lambda p, h, b: (p["w"] ** 2).sum() * h["a"]
    lin = autodiff.linearize(loss, {"w": torch.ones(2)}, {"a": torch.tensor(1.0), "lr": torch.tensor(0.1)}, None)
    out = lin.mixed_vjp({"w": torch.ones(2)})
    assert lin.last_unused == ("lr",)
    assert float(out["lr"]) == 0.0 and float(out["a"]) == 4.0


def test_loss_must_be_a_finite_scalar():
    params = {"w": torch.ones(3)}
    with pytest.raises(InvalidArgumentError, match="scalar"):
        autodiff.linearize(lambda p, h, b: p["w"] * 2, params, {}, None)
    with pytest.raises(NonFiniteError, match="inner_loss"):
        autodiff.linearize(lambda p, h, b: (p["w"] / 0.0).sum(), params, {}, None)
    with pytest.raises(InvalidArgumentError, match="mode"):
        autodiff.linearize(lambda p, h, b: p["w"].sum(), params, {}, None, mode="bogus")  # type: ignore[arg-type]


@pytest.mark.parametrize("curvature", ["hessian", "gauss-newton"])
def test_a_gradient_with_nan_or_inf_is_refused_and_a_huge_finite_one_is_not(curvature):
    """The gradient's finiteness is read from its leaves' norms (one host read with the norm itself): an infinite
    gradient of a finite loss raises, and a finite one whose norm overflows float32 is checked entry by entry."""
    x = torch.ones(4, 2)

    def loss(rest):  # the network's part is zero; the rest gives the gradient (both pieces under Gauss-Newton)
        return autodiff.GaussNewtonLoss(outputs=lambda p, h, b: x @ p["w"], head=lambda z, h, b: 0.0 * z.sum(),
                                        rest=lambda p, h, b: rest(p["w"]))  # fmt: skip

    root = loss(lambda w: w.abs().sqrt().sum())  # d sqrt|w| / dw is infinite at w = 0, the loss is finite
    with pytest.raises(NonFiniteError, match="gradient of inner_loss"):
        autodiff.linearize(root, {"w": torch.tensor([0.0, 1.0])}, {}, None, curvature=curvature)
    huge = autodiff.linearize(loss(lambda w: 1e30 * w.sum()), {"w": torch.ones(2)}, {}, None, curvature=curvature)
    assert huge.grad["w"].isfinite().all() and huge.grad_norm > 1e30  # inf where the float32 norm overflows


def test_check_tree_rejects_bad_trees():
    with pytest.raises(InvalidArgumentError, match="params must be a dict"):
        autodiff.check_tree([torch.ones(1)], "params")
    with pytest.raises(InvalidArgumentError, match="floating"):
        autodiff.check_tree({"n": torch.ones(2, dtype=torch.long)}, "hparams")
    with pytest.raises(InvalidArgumentError, match="empty"):
        autodiff.check_tree({}, "hparams")
