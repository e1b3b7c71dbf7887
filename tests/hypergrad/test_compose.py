"""The composable primitives: implicit_vjp and unrolled_vjp chained into a two-stage hypergradient, implicit
solutions inside torch graphs, and custom_root under vmap; all against independent references in float64."""

from __future__ import annotations

import pytest
import torch

from nestopt import hypergrad, linalg
from nestopt.errors import ShapeMismatchError
from nestopt.optim import functional

D = torch.float64


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(30, 4, generator=g, dtype=D), torch.randn(30, generator=g, dtype=D)
    c, d = torch.randn(20, 4, generator=g, dtype=D), torch.randn(20, generator=g, dtype=D)
    e, f = torch.randn(25, 4, generator=g, dtype=D), torch.randn(25, generator=g, dtype=D)
    lam = 0.3 * torch.randn(4, generator=g, dtype=D)
    return a, b, c, d, e, f, lam


def pretrain_loss(p, h, batch):  # ridge with one log-penalty per feature
    a, b = batch
    return 0.5 * ((a @ p["w"] - b) ** 2).mean() + 0.5 * (h["lam"].exp() * p["w"] ** 2).sum()


def finetune_loss(p, h, batch):  # another task, with the penalties' mean as a weight decay
    c, d = batch
    return 0.5 * ((c @ p["w"] - d) ** 2).mean() + 0.05 * h["lam"].exp().mean() * (p["w"] ** 2).sum()


def outer_loss(p, h, batch):
    e, f = batch
    return 0.5 * ((e @ p["w"] - f) ** 2).mean()


def _composite(lam, a, b, c, d, e, f, steps=3, lr=0.2):
    """Pre-train in closed form, fine-tune by `steps` explicit SGD steps, evaluate: differentiable by autograd."""
    w = torch.linalg.solve(a.T @ a / len(a) + torch.diag(lam.exp()), a.T @ b / len(a))
    for _ in range(steps):
        w = w - lr * torch.func.grad(lambda w_: finetune_loss({"w": w_}, {"lam": lam}, (c, d)))(w)
    return outer_loss({"w": w}, {}, (e, f))


def test_two_stage_hypergradient_by_hand_matches_finite_differences_and_autograd():
    a, b, c, d, e, f, lam = _data()
    w_star = {"w": torch.linalg.solve(a.T @ a / 30 + torch.diag(lam.exp()), a.T @ b / 30)}
    h = {"lam": lam}
    # stage 2: unroll the fine-tuning, pull the outer gradient back to the hparams and to the pre-trained weights
    stage2 = hypergrad.unrolled_vjp(
        finetune_loss, w_star, h, [(c, d)] * 3, lambda w: {"w": torch.func.grad(lambda w_: outer_loss({"w": w_}, h, (e, f)))(w["w"])},
        optimizer=functional.sgd(lr=0.2), steps=3,
    )  # fmt: skip
    # stage 1: pull the cotangent on the pre-trained weights back through pre-training by the IFT
    stage1 = hypergrad.implicit_vjp(pretrain_loss, w_star, h, (a, b), stage2.params0, solver=linalg.Exact())
    total = stage1.hparams["lam"] + stage2.hparams["lam"]

    reference = torch.func.grad(_composite)(lam, a, b, c, d, e, f)
    torch.testing.assert_close(total, reference, rtol=1e-9, atol=1e-12)
    eps = 1e-6
    fd = torch.stack([(_composite(lam + eps * u, a, b, c, d, e, f) - _composite(lam - eps * u, a, b, c, d, e, f)) / (2 * eps)
                      for u in torch.eye(4, dtype=D)])  # fmt: skip
    torch.testing.assert_close(total, fd, rtol=1e-6, atol=1e-9)
    assert stage1.solution is not None and stage2.params is not None and stage1.unused == ()


def test_unrolled_vjp_cotangent_on_the_initial_weights_matches_finite_differences():
    a, b, *_ = _data(1)
    h = {"lam": torch.zeros(4, dtype=D)}
    w0 = {"w": torch.randn(4, dtype=D, generator=torch.Generator().manual_seed(3))}
    v = {"w": torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=D)}
    opt = functional.sgd(lr=0.1, momentum=0.9)

    def final(w_init):
        res = hypergrad.unrolled_vjp(pretrain_loss, {"w": w_init}, h, [(a, b)] * 5, v, optimizer=opt, steps=5)
        return res.params["w"]

    res = hypergrad.unrolled_vjp(pretrain_loss, w0, h, [(a, b)] * 5, v, optimizer=opt, steps=5)
    eps = 1e-6
    fd = torch.stack(
        [((final(w0["w"] + eps * u) - final(w0["w"] - eps * u)) @ v["w"]) / (2 * eps) for u in torch.eye(4, dtype=D)]
    )
    torch.testing.assert_close(res.params0["w"], fd, rtol=1e-6, atol=1e-9)
    for checkpoint in (False, True):  # the same through the logarithmic-memory reverse pass
        again = hypergrad.unrolled_vjp(
            pretrain_loss, w0, h, [(a, b)] * 5, v, optimizer=opt, steps=5, checkpoint=checkpoint
        )
        torch.testing.assert_close(again.params0["w"], res.params0["w"])
    truncated = hypergrad.unrolled_vjp(pretrain_loss, w0, h, [(a, b)] * 5, v, optimizer=opt, steps=5, truncate=2)
    assert truncated.params0 is None  # the initial weights are not differentiated through a truncated unroll
    with pytest.raises(ShapeMismatchError):
        hypergrad.unrolled_vjp(pretrain_loss, w0, h, [(a, b)] * 5, {"x": v["w"]}, optimizer=opt, steps=5)


def test_implicit_vjp_matches_the_closed_form():
    a, b, *_, lam = _data(2)
    w_star = {"w": torch.linalg.solve(a.T @ a / 30 + torch.diag(lam.exp()), a.T @ b / 30)}
    v = {"w": torch.tensor([0.5, 1.0, -1.0, 2.0], dtype=D)}
    res = hypergrad.implicit_vjp(pretrain_loss, w_star, {"lam": lam}, (a, b), v, solver=linalg.CG(steps=50, tol=1e-14))
    solve = lambda lam_: torch.linalg.solve(a.T @ a / 30 + torch.diag(lam_.exp()), a.T @ b / 30)
    expected = torch.func.vjp(solve, lam)[1](v["w"])[0]
    torch.testing.assert_close(res.hparams["lam"], expected, rtol=1e-9, atol=1e-12)


def test_an_implicit_solution_composes_with_any_torch_graph():
    a, b, c, d, *_, lam = _data(3)
    lam1 = lam.clone().requires_grad_(True)
    solve = lambda lam_, x, y: torch.linalg.solve(x.T @ x / len(x) + torch.diag(lam_.exp()), x.T @ y / len(x))
    w1 = hypergrad.implicit_solution(
        pretrain_loss, {"w": solve(lam, a, b)}, {"lam": lam1}, (a, b), solver=linalg.Exact()
    )
    w2 = hypergrad.implicit_solution(
        pretrain_loss, {"w": solve(lam, c, d)}, {"lam": lam1}, (c, d), solver=linalg.Exact()
    )
    loss = (w1["w"] * w2["w"]).sum() + w1["w"].norm()  # any function of several solutions
    loss.backward()
    expected = torch.func.grad(lambda lam_: (solve(lam_, a, b) * solve(lam_, c, d)).sum() + solve(lam_, a, b).norm())(
        lam
    )
    torch.testing.assert_close(lam1.grad, expected, rtol=1e-9, atol=1e-12)
    assert hypergrad.implicit_solution.last_info.status.value == "converged"


def _ridge_root():
    def optimality(p, h, x, y):
        return {"w": x.T @ (x @ p["w"] - y) + h["l2"].exp() * p["w"]}

    @hypergrad.custom_root(optimality, solver=linalg.CG(steps=20, tol=1e-14))
    def ridge(h, x, y):
        return {"w": torch.linalg.solve(x.T @ x + h["l2"].exp() * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)}

    return ridge


def test_custom_root_under_vmap_solves_a_batch_of_independent_problems():
    ridge = _ridge_root()
    g = torch.Generator().manual_seed(4)
    xs, ys = torch.randn(5, 12, 3, generator=g, dtype=D), torch.randn(5, 12, generator=g, dtype=D)
    l2 = 0.2 * torch.randn(5, generator=g, dtype=D)
    f = lambda lam_, x, y: (ridge({"l2": lam_}, x, y)["w"] ** 2).sum()
    one_by_one = torch.stack([torch.func.grad(f)(l2[i], xs[i], ys[i]) for i in range(5)])
    closed = lambda lam_, x, y: (torch.linalg.solve(x.T @ x + lam_.exp() * torch.eye(3, dtype=D), x.T @ y) ** 2).sum()
    reference = torch.stack([torch.func.grad(closed)(l2[i], xs[i], ys[i]) for i in range(5)])
    torch.testing.assert_close(one_by_one, reference, rtol=1e-9, atol=1e-12)
    # vmap over grad, and grad (backward) over vmap
    torch.testing.assert_close(torch.func.vmap(torch.func.grad(f))(l2, xs, ys), reference, rtol=1e-9, atol=1e-12)
    leaf = l2.clone().requires_grad_(True)
    torch.func.vmap(f)(leaf, xs, ys).sum().backward()
    torch.testing.assert_close(leaf.grad, reference, rtol=1e-9, atol=1e-12)
