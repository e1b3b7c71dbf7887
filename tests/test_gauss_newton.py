"""The generalized Gauss-Newton products against dense references, in float64."""

from __future__ import annotations

import contextlib
import gc

import pytest
import torch

from nestopt import _rng, autodiff, hparams, hypergrad, linalg, profile, tree
from nestopt.errors import InvalidArgumentError, UnsupportedError

D = torch.float64


def _mlp_problem():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 3, generator=g, dtype=D), torch.randint(0, 4, (12,), generator=g)
    params = {"w1": torch.randn(3, 5, generator=g, dtype=D), "w2": torch.randn(5, 4, generator=g, dtype=D)}
    h = {"wd": torch.tensor(0.1, dtype=D)}
    net = lambda p, xb: torch.tanh(xb @ p["w1"]) @ p["w2"]
    loss = autodiff.GaussNewtonLoss(
        outputs=lambda p, hh, b: net(p, b[0]),
        head=lambda z, hh, b: torch.nn.functional.cross_entropy(z, b[1]),
        rest=lambda p, hh, b: hh["wd"] * sum((v**4).sum() for v in p.values()),  # not quadratic: its Hessian counts
    )
    return loss, net, params, h, (x, y)


def _dense_gauss_newton(net, params, h, batch):
    vec, spec = tree.flatten(params)
    z_of = lambda v: net(tree.unflatten(v, spec), batch[0]).reshape(-1)
    jac = torch.func.jacrev(z_of)(vec)
    z = z_of(vec)
    head = lambda zz: torch.nn.functional.cross_entropy(zz.reshape(batch[0].shape[0], -1), batch[1])
    h_out = torch.func.hessian(head)(z)
    rest = lambda v: h["wd"] * (v**4).sum()
    return jac.T @ h_out @ jac + torch.func.hessian(rest)(vec)


def test_products_match_the_dense_gauss_newton_matrix_and_are_psd():
    loss, net, params, h, batch = _mlp_problem()
    lin = autodiff.linearize(loss, params, h, batch, curvature="gauss-newton")
    op = linalg.LinearOperator.hessian(lin)
    dense = linalg.materialize(op)  # batched products, column by column
    reference = _dense_gauss_newton(net, params, h, batch)
    torch.testing.assert_close(dense, reference, rtol=1e-10, atol=1e-12)
    v = tree.map(torch.ones_like, params)
    single = tree.flatten(lin.hvp(v))[0]
    torch.testing.assert_close(single, reference @ tree.flatten(v)[0], rtol=1e-10, atol=1e-12)
    assert float(torch.linalg.eigvalsh(reference).min()) > -1e-10
    # the exact Hessian at this (non-stationary) point is indefinite: that is what Gauss-Newton avoids
    exact = linalg.materialize(linalg.LinearOperator.hessian(autodiff.linearize(loss, params, h, batch)))
    assert float(torch.linalg.eigvalsh(0.5 * (exact + exact.T)).min()) < -1e-3
    # the gradient and the mixed products stay exact
    torch.testing.assert_close(lin.grad["w1"], autodiff.linearize(loss, params, h, batch).grad["w1"])


def test_gauss_newton_equals_the_hessian_for_a_linear_least_squares_model():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(20, 4, generator=g, dtype=D), torch.randn(20, generator=g, dtype=D)
    loss = autodiff.GaussNewtonLoss(outputs=lambda p, h, b: b[0] @ p["w"], head=lambda z, h, b: 0.5 * ((z - b[1]) ** 2).mean(),
                                    rest=lambda p, h, b: 0.5 * (h["l2"].exp() * p["w"] ** 2).sum())  # fmt: skip
    h = {"l2": torch.zeros(4, dtype=D)}
    w = {"w": torch.linalg.solve(x.T @ x / 20 + torch.eye(4, dtype=D), x.T @ y / 20)}
    args = (loss, loss, w, h, (x, y), (x, y))
    exact = hypergrad.implicit(*args, solver=linalg.Exact())
    gn = hypergrad.implicit(*args, solver=linalg.Exact(), curvature="gauss-newton")
    torch.testing.assert_close(gn.grads["l2"], exact.grads["l2"], rtol=1e-10, atol=1e-13)
    assert gn.info.extra["curvature"] == "gauss-newton"


def test_an_objective_exposes_its_split_with_batchnorm_and_dropout():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.BatchNorm1d(6), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                              torch.nn.Linear(6, 4)).double()  # fmt: skip
    obj = hparams.Objective(net, torch.nn.functional.cross_entropy, [hparams.WeightDecay(net, init=1e-2)])
    batch = (torch.randn(10, 3, dtype=D), torch.randint(0, 4, (10,)))
    w, h = tree.detach(obj.params()), obj.init_hparams()
    buffers = tree.clone(obj.buffers)
    lin = autodiff.linearize(obj.inner_loss, w, h, batch, curvature="gauss-newton", seed=3)
    dense = linalg.materialize(linalg.LinearOperator.hessian(lin))
    torch.testing.assert_close(dense, dense.T, rtol=1e-10, atol=1e-12)
    assert float(torch.linalg.eigvalsh(0.5 * (dense + dense.T)).min()) > -1e-10
    assert all(torch.equal(buffers[k], obj.buffers[k]) for k in buffers)  # products never move the statistics
    with _rng.fork(3):  # the parts reproduce the loss, with the same dropout masks
        z, head, rest = obj.inner_loss.gauss_newton_parts(w, h, batch)
        assert isinstance(rest, autodiff.DecayTerms)  # a weight decay's derivatives are written out
        parts_value = head(z) + rest.total()
    assert float(parts_value) == pytest.approx(float(lin.value), rel=1e-12)


def test_bad_requests_name_the_problem():
    plain = lambda p, h, b: (p["w"] ** 2).sum()
    w = {"w": torch.ones(2, dtype=D)}
    with pytest.raises(UnsupportedError, match="gauss_newton_parts"):
        autodiff.linearize(plain, w, {}, None, curvature="gauss-newton")
    loss, _, params, h, batch = _mlp_problem()
    with pytest.raises(InvalidArgumentError, match="rev-rev"):
        autodiff.linearize(loss, params, h, batch, curvature="gauss-newton", mode="fwd-rev")
    with pytest.raises(InvalidArgumentError, match="curvature must be one of"):
        hypergrad.Implicit(curvature="fisher")


@pytest.mark.parametrize("where", ["rest", "head", "outputs", "everywhere"])
def test_the_mixed_product_and_the_gradient_are_exact_wherever_the_hyperparameters_enter(where):
    # G replaces only the curvature: the gradient and d/dlambda (grad . x) are those of the exact loss, whether
    # lambda enters the penalty, the head (per-example weights) or the outputs (a scaling inside the model)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(10, 3, generator=g, dtype=D), torch.randint(0, 4, (10,), generator=g)
    params = {"w1": torch.randn(3, 6, generator=g, dtype=D), "w2": torch.randn(6, 4, generator=g, dtype=D)}
    h = {
        "wd": torch.rand(3, 6, generator=g, dtype=D),
        "weights": torch.rand(10, generator=g, dtype=D),
        "scale": torch.rand(6, generator=g, dtype=D) + 0.5,
        "unused": torch.tensor(1.0, dtype=D),
    }
    on = lambda part: where in (part, "everywhere")

    def outputs(p, hh, b):
        hidden = torch.tanh(b[0] @ p["w1"])
        return (hidden * hh["scale"] if on("outputs") else hidden) @ p["w2"]

    def head(z, hh, b):
        per_example = torch.nn.functional.cross_entropy(z, b[1], reduction="none")
        return (per_example * hh["weights"]).mean() if on("head") else per_example.mean()

    def rest(p, hh, b):
        return (hh["wd"] * p["w1"] ** 2).sum() if on("rest") else (p["w1"] ** 4).sum() * 1e-3

    loss = autodiff.GaussNewtonLoss(outputs=outputs, head=head, rest=rest)
    v = {k: torch.randn(p.shape, generator=g, dtype=D) for k, p in params.items()}
    gn = autodiff.linearize(loss, params, h, (x, y), curvature="gauss-newton")
    exact = autodiff.linearize(loss, params, h, (x, y))
    got, want = gn.mixed_vjp(v), exact.mixed_vjp(v)
    for k in h:
        torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=1e-12)
    assert gn.last_unused == exact.last_unused and "unused" in gn.last_unused
    for k in params:
        torch.testing.assert_close(gn.grad[k], exact.grad[k], rtol=1e-12, atol=1e-14)
    assert gn.grad_norm == pytest.approx(exact.grad_norm, rel=1e-12)
    lean = autodiff.linearize(loss, params, h, (x, y), curvature="gauss-newton", keep_grad=False)
    assert lean.grad_norm == pytest.approx(exact.grad_norm, rel=1e-12)
    for k, t in lean.mixed_vjp(v).items():
        torch.testing.assert_close(t, want[k], rtol=1e-10, atol=1e-12)


def _deep_problem():
    """A tanh/ReLU MLP (batch 64, width 50, three hidden layers) with a Gauss-Newton split and weight decay."""
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(64, 6, generator=g, dtype=D), torch.randint(0, 3, (64,), generator=g)
    sizes = [(6, 50), (50, 50), (50, 50), (50, 3)]
    params = {f"w{i}": torch.randn(*s, generator=g, dtype=D) / s[0] ** 0.5 for i, s in enumerate(sizes)}

    def outputs(p, hh, b):
        a = b[0]
        for i in range(3):
            a = (torch.tanh if i % 2 else torch.relu)(a @ p[f"w{i}"])
        return a @ p["w3"]

    loss = autodiff.GaussNewtonLoss(outputs, head=lambda z, hh, b: torch.nn.functional.cross_entropy(z, b[1]),
                                    rest=lambda p, hh, b: hh["wd"] * sum((v**2).sum() for v in p.values()))  # fmt: skip
    return loss, params, {"wd": torch.tensor(0.1, dtype=D)}, (x, y)


def _held_and_products(problem):
    """The bytes a Gauss-Newton linearization holds after one product, and its products."""
    loss, params, h, batch = problem
    v = {k: torch.randn(t.shape, generator=torch.Generator().manual_seed(4), dtype=D) for k, t in params.items()}
    with profile.PeakMemory() as mem:
        lin = autodiff.linearize(loss, params, h, batch, curvature="gauss-newton", keep_grad=False)
        hvp = lin.hvp(v)  # anything the graph needed and lacked would show in these products
    batched = lin.hvp_batched(tree.map(lambda t: torch.stack([t, 2 * t]), v))
    return mem.current, {"hvp": hvp, "mixed": lin.mixed_vjp(v), "batched": batched}


def test_the_products_graph_keeps_no_value_that_depends_on_its_cotangent(monkeypatch):
    """J^T u is linear in u, so J v (its derivative in u) reads none of the values in its graph that depend on
    u: the backward signals of the hidden layers (64 x 50 each) are dropped, and every product is unchanged."""
    from nestopt.autodiff import _gauss_newton

    problem = _deep_problem()
    trimmed, got = _held_and_products(problem)
    with monkeypatch.context() as m:
        m.setattr(_gauss_newton, "_keeping_no_value_of", lambda u: contextlib.nullcontext())
        full, want = _held_and_products(problem)
    for name in want:
        assert tree.flatten(got[name])[0].equal(tree.flatten(want[name])[0]), name
    assert full - trimmed >= 3 * 64 * 50 * 8  # the three hidden layers' signals (float64)


def test_the_trimmed_graph_is_freed_with_its_products():
    loss, params, h, batch = _deep_problem()
    v = tree.map(torch.ones_like, params)
    with profile.PeakMemory() as mem:
        lin = autodiff.linearize(loss, params, h, batch, curvature="gauss-newton", keep_grad=False)
        lin.hvp(v)
        del lin
        gc.collect()
    assert mem.current == 0  # nothing kept alive: the walk's record holds no reference to the graph
