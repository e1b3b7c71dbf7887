"""The fused weight-decay penalty: every derivative against the elementwise formula, in float64."""

import pytest
import torch

from nestopt import autodiff, hparams, tree
from nestopt.hparams._penalty import decay_penalty
from nestopt.profile import PeakMemory

D = torch.float64


def _reference(lam, w):
    return (lam.exp() * w * w).sum()


def _inputs(shared):
    gen = torch.Generator().manual_seed(0)
    lam = torch.randn(() if shared else (4, 3), generator=gen, dtype=D).requires_grad_(True)
    return lam, torch.randn(4, 3, generator=gen, dtype=D).requires_grad_(True)


@pytest.mark.parametrize("shared", [False, True], ids=["per-weight", "one coefficient"])
def test_first_second_and_third_derivatives(shared):
    lam, w = _inputs(shared)
    assert torch.autograd.gradcheck(decay_penalty, (lam, w))
    assert torch.autograd.gradgradcheck(decay_penalty, (lam, w))
    assert torch.autograd.gradcheck(decay_penalty, (lam, w), check_forward_ad=True, check_backward_ad=False,
                                    check_undefined_grad=False, check_batched_grad=False)  # fmt: skip
    g = torch.autograd.grad(decay_penalty(lam, w), w, create_graph=True)[0]
    g_ref = torch.autograd.grad(_reference(lam, w), w, create_graph=True)[0]
    torch.testing.assert_close(g, g_ref)
    v = torch.randn_like(w)
    h = torch.autograd.grad(g, [w, lam], v, create_graph=True)  # the HVP and the mixed term
    h_ref = torch.autograd.grad(g_ref, [w, lam], v, create_graph=True)
    for a, b in zip(h, h_ref):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(torch.autograd.grad(h[0].sum(), lam)[0], torch.autograd.grad(h_ref[0].sum(), lam)[0])


@pytest.mark.parametrize("shared", [False, True], ids=["per-weight", "one coefficient"])
def test_function_transforms_and_batched_products(shared):
    lam, w = _inputs(shared)
    lam0, w0 = lam.detach(), w.detach()
    vs = torch.randn(5, 4, 3, dtype=D)
    mine = torch.func.grad(lambda x: decay_penalty(lam0, x))
    ref = torch.func.grad(lambda x: _reference(lam0, x))
    hvp = lambda f: torch.func.vmap(lambda v: torch.func.jvp(f, (w0,), (v,))[1])(vs)  # forward over reverse
    torch.testing.assert_close(hvp(mine), hvp(ref))
    mixed = lambda pen: torch.func.jvp(
        lambda l_: torch.func.grad(lambda x: pen(l_, x))(w0), (lam0,), (torch.ones_like(lam0),)
    )[1]
    torch.testing.assert_close(mixed(decay_penalty), mixed(_reference))
    g = torch.autograd.grad(decay_penalty(lam, w), w, create_graph=True)[0]
    g_ref = torch.autograd.grad(_reference(lam, w), w, create_graph=True)[0]
    batched = torch.autograd.grad(g, [w, lam], vs, retain_graph=True, is_grads_batched=True)
    batched_ref = torch.autograd.grad(g_ref, [w, lam], vs, retain_graph=True, is_grads_batched=True)
    for a, b in zip(batched, batched_ref):
        torch.testing.assert_close(a, b)


def test_weight_decay_products_need_less_memory_than_the_elementwise_penalty():
    torch.manual_seed(0)
    net = torch.nn.Linear(200, 100)
    params = {k: v.detach() for k, v in net.named_parameters()}
    family = hparams.WeightDecay(net, per="parameter", init=1e-3)
    h = {family.key(k): v.requires_grad_(True) for k, v in family.init().items()}
    P = 4 * sum(v.numel() for v in params.values())

    def peaks(penalty):
        with PeakMemory() as built:
            lin = autodiff.linearize(lambda p, hp, b: penalty(p, hp), params, h, None)
        v = tree.clone(lin.grad)
        with PeakMemory() as product:
            out = lin.hvp(v)
        with PeakMemory() as mixed:
            lin.mixed_vjp(v)
        torch.testing.assert_close(out["weight"], 2 * h[family.key("weight")].detach().exp() * v["weight"])
        return built.current / P, product.extra / P, mixed.extra / P

    lean = peaks(family.penalty)
    naive = peaks(lambda p, hp: sum((hp[family.key(k)].exp() * p[k] * p[k]).sum() for k in p))
    # the graph keeps only the gradient; a product or mixed term allocates its output alone
    assert lean[0] <= 1.0 + 1e-3 < naive[0]
    assert lean[1] <= 1.0 + 1e-3 < naive[1] and lean[2] <= 1.0 + 1e-3 < naive[2]


def test_the_decays_gradient_has_its_own_forward_and_backward_derivatives():
    lam, w = _inputs(shared=False)
    lam0, w0 = lam.detach(), w.detach()
    grad_lam = lambda pen: torch.func.grad(lambda l_: pen(l_, w0))
    for direction in (torch.ones_like(lam0), torch.randn_like(lam0)):
        mine = torch.func.jvp(grad_lam(decay_penalty), (lam0,), (direction,))[1]
        ref = torch.func.jvp(grad_lam(_reference), (lam0,), (direction,))[1]
        torch.testing.assert_close(mine, ref)
    dlam = torch.autograd.grad(decay_penalty(lam, w), lam, create_graph=True)[0]
    u = torch.randn_like(lam)
    got = torch.autograd.grad(dlam, [lam, w], u)
    want = torch.autograd.grad(torch.autograd.grad(_reference(lam, w), lam, create_graph=True)[0], [lam, w], u)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_a_gradient_with_create_graph_allocates_its_outputs_and_no_product_graph():
    # the gradient in w with create_graph, per-weight decays requiring grad (a linearization): one fused buffer,
    # and not the decays' gradient, which this pass does not ask for
    lam = torch.zeros(200_000, dtype=D, requires_grad=True)
    w = torch.ones(200_000, dtype=D, requires_grad=True)
    size = 8 * 200_000
    with PeakMemory(count=[lam, w]) as mem:
        value = decay_penalty(lam, w)
        (g,) = torch.autograd.grad(value, w, create_graph=True)
    assert mem.extra <= size + 4096  # the gradient alone
    assert mem.current - mem.baseline <= size + 4096  # afterwards: the gradient (its graph saves only inputs)
    del g


def test_a_product_skips_the_decays_derivative_that_it_does_not_ask_for():
    lam = torch.randn(100_000, dtype=D, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    w = torch.randn(100_000, dtype=D, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    size, c = 8 * 100_000, lam.detach().exp()
    g = torch.autograd.grad(decay_penalty(lam, w), w, create_graph=True)[0]
    v = torch.randn_like(w)
    # a Hessian-vector product: the weights' derivative alone (the decays' is skipped); a mixed product also
    # computes the weights' derivative, since the engine cannot say whether a pass reaches a leaf
    for inputs, want, buffers in (
        ([w], [2 * c * v], 1),
        ([lam], [2 * c * w.detach() * v], 2),
        ([w, lam], [2 * c * v, 2 * c * w.detach() * v], 2),
    ):
        with PeakMemory() as mem:
            got = torch.autograd.grad(g, inputs, v, retain_graph=True)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)
        assert mem.extra <= buffers * size + 4096, inputs
    # a pass without inputs (``backward``) reaches every leaf: both gradients accumulate
    (g * v).sum().backward()
    torch.testing.assert_close(w.grad, 2 * c * v)
    torch.testing.assert_close(lam.grad, 2 * c * w.detach() * v)


def test_the_weights_gradient_from_the_network_and_the_penalty_is_summed_in_place():
    # plain training: the penalty's gradient and the network's meet in one buffer per weight (a view in front of
    # the weights would make autograd sum them out of place: a third buffer)
    torch.manual_seed(0)
    net = torch.nn.Linear(1000, 500)
    x, lam = torch.randn(8, 1000), torch.tensor(-3.0)
    size = 4 * sum(p.numel() for p in net.parameters())
    with PeakMemory(count=[*net.parameters(), x]) as mem:
        loss = net(x).square().mean() + sum(decay_penalty(lam, p) for p in net.parameters())
        loss.backward()
    assert mem.extra <= 2 * size + 65536  # the gradients and one transient product per weight


def test_constant_per_weight_decays_take_the_cheaper_path_with_the_same_derivatives():
    # the inner steps of a training run: decays without a gradient, so e^lam w is kept from the forward pass
    lam, w = _inputs(shared=False)
    lam0 = lam.detach()
    value = decay_penalty(lam0, w)
    assert type(value.grad_fn).__name__.startswith("_FixedDecayPenalty")
    torch.testing.assert_close(value, _reference(lam0, w))
    (g,) = torch.autograd.grad(value, w, create_graph=True)
    torch.testing.assert_close(g, torch.autograd.grad(_reference(lam0, w), w)[0])
    v = torch.randn_like(w)
    torch.testing.assert_close(torch.autograd.grad(g, w, v)[0], 2.0 * lam0.exp() * v)  # the HVP
    assert torch.autograd.gradcheck(lambda x: decay_penalty(lam0, x), (w,))
    assert torch.autograd.gradgradcheck(lambda x: decay_penalty(lam0, x), (w,))
    assert torch.autograd.gradcheck(lambda x: decay_penalty(lam0, x), (w,), check_forward_ad=True,
                                    check_backward_ad=False, check_undefined_grad=False,
                                    check_batched_grad=False)  # fmt: skip
    with torch.autograd.forward_ad.dual_level():  # a tangent on the decays too
        dual = torch.autograd.forward_ad.make_dual(lam0, torch.ones_like(lam0))
        tangent = torch.autograd.forward_ad.unpack_dual(decay_penalty(dual, w.detach())).tangent
    torch.testing.assert_close(tangent, _reference(lam0, w.detach()))  # d/dt sum e^(lam + t) w^2 at t = 0
