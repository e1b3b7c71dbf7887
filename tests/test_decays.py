"""Weight decays with written-out derivatives (``autodiff.DecayTerms``) against autograd through the penalty,
and against closed forms, in float64, for the exact Hessian and the Gauss-Newton matrix."""

from __future__ import annotations

import pytest
import torch

from nestopt import autodiff, hparams, tree

D = torch.float64
CURVATURES = ["hessian", "gauss-newton"]


def _decay_problem(per):
    """An MLP objective with a weight decay (``per`` global, layer or parameter) and random log-coefficients."""
    torch.manual_seed(5)
    net = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Tanh(), torch.nn.Linear(6, 4)).double()
    obj = hparams.Objective(net, torch.nn.functional.cross_entropy, [hparams.WeightDecay(net, per=per, init=1e-1)])
    h = {k: v + 0.5 * torch.randn_like(v) for k, v in obj.init_hparams().items()}
    batch = (torch.randn(10, 3, dtype=D), torch.randint(0, 4, (10,)))
    return obj, tree.detach(obj.params()), h, batch


def _through_autograd(obj):
    """The objective's inner loss with its penalty as a plain tensor: the decays differentiated by autograd."""

    def parts(p, hh, b):
        z, head, rest = obj.inner_loss.gauss_newton_parts(p, hh, b)
        return z, head, rest.total()

    loss = autodiff.GaussNewtonLoss(outputs=None, head=None)
    loss.gauss_newton_parts = parts
    return loss


def _assert_same(got, want, rtol=1e-12):
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=rtol, atol=1e-14)


@pytest.mark.parametrize("curvature", CURVATURES)
@pytest.mark.parametrize("per", ["global", "layer", "parameter"])
def test_an_objectives_decays_equal_autograd_through_its_penalty(per, curvature, monkeypatch):
    obj, w, h, batch = _decay_problem(per)
    ref = autodiff.linearize(_through_autograd(obj), w, h, batch, curvature=curvature)
    monkeypatch.setattr(hparams.Objective, "penalty", lambda *a: pytest.fail("the penalty's graph was built"))
    lin = autodiff.linearize(obj.inner_loss, w, h, batch, curvature=curvature)
    g = torch.Generator().manual_seed(6)
    v = {k: torch.randn(t.shape, generator=g, dtype=D) for k, t in w.items()}
    vs = tree.map(lambda t: torch.stack([t, -2.0 * t]), v)
    assert float(lin.value) == pytest.approx(float(ref.value), rel=1e-13)
    assert lin.grad_norm == pytest.approx(ref.grad_norm, rel=1e-13)
    _assert_same(lin.grad, ref.grad)
    _assert_same(lin.hvp(v), ref.hvp(v))
    _assert_same(lin.hvp_batched(vs), ref.hvp_batched(vs))
    _assert_same(lin.mixed_vjp(v), ref.mixed_vjp(v))
    assert lin.last_unused == ref.last_unused == ()


def _linear_problem():
    """A linear least-squares model (G = H) with a decay on w whose log-coefficient is a map of the
    hyperparameters (lam = 2 a) and another penalty c |w|^4 beside it."""
    g = torch.Generator().manual_seed(8)
    x, y = torch.randn(9, 4, generator=g, dtype=D), torch.randn(9, generator=g, dtype=D)
    h = {"a": torch.randn(4, generator=g, dtype=D), "c": torch.tensor(0.2, dtype=D)}
    outputs, head = lambda p, hh, b: b[0] @ p["w"], lambda z, hh, b: 0.5 * ((z - b[1]) ** 2).mean()

    def rest(p, hh, b):
        lam, other = 2.0 * hh["a"], hh["c"] * (p["w"] ** 4).sum()
        return autodiff.DecayTerms([(lam, p["w"])], total=lambda: (lam.exp() * p["w"] ** 2).sum() + other, other=other)

    named = autodiff.GaussNewtonLoss(outputs, head, rest)
    plain = autodiff.GaussNewtonLoss(outputs, head, lambda p, hh, b: rest(p, hh, b).total())
    w = {"w": torch.randn(4, generator=g, dtype=D)}
    return named, plain, w, h, (x, y), {"w": torch.randn(4, generator=g, dtype=D)}


@pytest.mark.parametrize("curvature", CURVATURES)
def test_decays_beside_other_terms_and_through_a_map_of_the_hyperparameters(curvature):
    named, plain, w, h, batch, v = _linear_problem()
    lin = autodiff.linearize(named, w, h, batch, curvature=curvature)
    ref = autodiff.linearize(plain, w, h, batch, curvature=curvature)
    for got, want in [(lin.hvp(v), ref.hvp(v)), (lin.mixed_vjp(v), ref.mixed_vjp(v)), (lin.grad, ref.grad)]:
        _assert_same(got, want)
    x, a, c, ww = batch[0], h["a"], h["c"], w["w"]
    # closed forms: H = X^T X / n + diag(2 e^{2a} + 12 c w^2); d/da (v . 2 e^{2a} w) = 4 e^{2a} w v and
    # d/dc (v . 4 c w^3) = 4 w^3 . v
    dense = x.T @ x / 9 + torch.diag(2.0 * (2.0 * a).exp() + 12.0 * c * ww**2)
    torch.testing.assert_close(lin.hvp(v)["w"], dense @ v["w"], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(lin.mixed_vjp(v)["a"], 4.0 * (2.0 * a).exp() * ww * v["w"])
    torch.testing.assert_close(lin.mixed_vjp(v)["c"], 4.0 * (ww**3 * v["w"]).sum())


@pytest.mark.parametrize("curvature", CURVATURES)
def test_decays_on_weights_the_products_do_not_differentiate_fall_back_to_autograd(curvature):
    # a decay on a weight computed from the leaves (2 p) cannot use the formulas in p: the rest is total()
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(8, 3, generator=g, dtype=D), torch.randn(8, generator=g, dtype=D)
    h = {"lam": torch.randn(3, generator=g, dtype=D)}
    calls = []

    def rest(p, hh, b):
        scaled = 2.0 * p["w"]
        total = lambda: calls.append(1) or (hh["lam"].exp() * scaled**2).sum()
        return autodiff.DecayTerms([(hh["lam"], scaled)], total=total)

    loss = autodiff.GaussNewtonLoss(lambda p, hh, b: b[0] @ p["w"], lambda z, hh, b: 0.5 * ((z - b[1]) ** 2).mean(),
                                    rest)  # fmt: skip
    w, v = {"w": torch.randn(3, generator=g, dtype=D)}, {"w": torch.randn(3, generator=g, dtype=D)}
    lin = autodiff.linearize(loss, w, h, (x, y), curvature=curvature)
    assert calls  # the fallback ran
    dense = x.T @ x / 8 + torch.diag(8.0 * h["lam"].exp())  # the decay in 2p: 4 (2 e^lam) on the diagonal
    torch.testing.assert_close(lin.hvp(v)["w"], dense @ v["w"], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(lin.mixed_vjp(v)["lam"], 8.0 * h["lam"].exp() * w["w"] * v["w"])


def test_forward_over_reverse_products_see_the_whole_loss():
    # fwd-rev re-evaluates the loss in forward mode: the decays are in it, as in rev-rev's written-out form
    obj, w, h, batch = _decay_problem("parameter")
    v = tree.map(torch.ones_like, w)
    rev = autodiff.linearize(obj.inner_loss, w, h, batch).hvp(v)
    fwd = autodiff.linearize(obj.inner_loss, w, h, batch, mode="fwd-rev").hvp(v)
    _assert_same(fwd, rev, rtol=1e-10)


def _centred_problem():
    """A linear least-squares model with three decays towards centres: ``u`` towards a hyperparameter ``c``
    with a constant coefficient (iMAML's proximal term), ``w`` towards a constant anchor with a hyperparameter
    log-coefficient (L2-SP), and ``w`` again towards ``2 m``, a map of the hyperparameters."""
    g = torch.Generator().manual_seed(9)
    x, y = torch.randn(11, 5, generator=g, dtype=D), torch.randn(11, generator=g, dtype=D)
    h = {"c": torch.randn(2, generator=g, dtype=D), "lam": torch.randn(3, generator=g, dtype=D),
         "m": torch.randn(3, generator=g, dtype=D)}  # fmt: skip
    anchor, log_prox = torch.randn(3, generator=g, dtype=D), torch.tensor(0.3, dtype=D).log()
    outputs = lambda p, hh, b: b[0] @ torch.cat([p["u"], p["w"]])
    head = lambda z, hh, b: 0.5 * ((z - b[1]) ** 2).mean()

    calls = []

    def rest(p, hh, b):
        decays = [(log_prox, p["u"], hh["c"]), (hh["lam"], p["w"], anchor), (log_prox, p["w"], 2.0 * hh["m"])]
        total = lambda: calls.append(1) or sum((lam.exp() * (wt - ct) ** 2).sum() for lam, wt, ct in decays)
        return autodiff.DecayTerms(decays, total=total)

    named = autodiff.GaussNewtonLoss(outputs, head, rest)
    plain = autodiff.GaussNewtonLoss(outputs, head, lambda p, hh, b: rest(p, hh, b).total())
    w = {"u": torch.randn(2, generator=g, dtype=D), "w": torch.randn(3, generator=g, dtype=D)}
    v = {"u": torch.randn(2, generator=g, dtype=D), "w": torch.randn(3, generator=g, dtype=D)}
    return named, plain, w, h, (x, y), v, anchor, calls


@pytest.mark.parametrize("curvature", CURVATURES)
def test_decays_towards_centres_equal_autograd_and_their_closed_forms(curvature):
    named, plain, w, h, batch, v, anchor, calls = _centred_problem()
    ref = autodiff.linearize(plain, w, h, batch, curvature=curvature)
    calls.clear()
    lin = autodiff.linearize(named, w, h, batch, curvature=curvature)
    assert not calls  # the formulas served everything: no graph through the penalty
    vs = tree.map(lambda t: torch.stack([t, 3.0 * t]), v)
    assert float(lin.value) == pytest.approx(float(ref.value), rel=1e-13)
    _assert_same(lin.grad, ref.grad)
    _assert_same(lin.hvp(v), ref.hvp(v))
    _assert_same(lin.hvp_batched(vs), ref.hvp_batched(vs))
    _assert_same(lin.mixed_vjp(v), ref.mixed_vjp(v))
    # closed forms, with k = 2 * 0.3 the proximal curvature: d/dc (v_u . k (u - c)) = -k v_u;
    # d/dlam (v_w . 2 e^lam (w - anchor)) = 2 e^lam (w - anchor) v_w; d/dm (v_w . k (w - 2 m)) = -2 k v_w
    x, k, lam, ww = batch[0], 0.6, h["lam"], w["w"]
    mixed = lin.mixed_vjp(v)
    torch.testing.assert_close(mixed["c"], -k * v["u"], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(mixed["lam"], 2.0 * lam.exp() * (ww - anchor) * v["w"], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(mixed["m"], -2.0 * k * v["w"], rtol=1e-12, atol=1e-14)
    diag = torch.cat([torch.full((2,), k, dtype=D), 2.0 * lam.exp() + k])
    dense = x.T @ x / 11 + torch.diag(diag)
    got = torch.cat([lin.hvp(v)["u"], lin.hvp(v)["w"]])
    torch.testing.assert_close(got, dense @ torch.cat([v["u"], v["w"]]), rtol=1e-12, atol=1e-14)
    residual = x @ torch.cat([w["u"], w["w"]]) - batch[1]
    grad_w = x[:, 2:].T @ residual / 11 + 2.0 * lam.exp() * (ww - anchor) + k * (ww - 2.0 * h["m"])
    torch.testing.assert_close(lin.grad["w"], grad_w, rtol=1e-12, atol=1e-14)


def test_a_centre_shaped_unlike_its_weight_falls_back_to_autograd():
    # a centre that only broadcasts against its weight is outside the formulas' shapes: total() serves
    x, y = torch.randn(6, 3, dtype=D), torch.randn(6, dtype=D)
    h, calls = {"c": torch.tensor([0.5], dtype=D)}, []

    def rest(p, hh, b):
        lam = torch.tensor(0.0, dtype=D)
        total = lambda: calls.append(1) or (lam.exp() * (p["w"] - hh["c"]) ** 2).sum()
        return autodiff.DecayTerms([(lam, p["w"], hh["c"])], total=total)

    loss = autodiff.GaussNewtonLoss(lambda p, hh, b: b[0] @ p["w"], lambda z, hh, b: 0.5 * ((z - b[1]) ** 2).mean(),
                                    rest)  # fmt: skip
    w, v = {"w": torch.randn(3, dtype=D)}, {"w": torch.randn(3, dtype=D)}
    lin = autodiff.linearize(loss, w, h, (x, y))
    assert calls
    torch.testing.assert_close(lin.mixed_vjp(v)["c"], -2.0 * v["w"].sum().reshape(1), rtol=1e-12, atol=1e-14)
