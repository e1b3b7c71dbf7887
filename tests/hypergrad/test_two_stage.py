"""two_stage (implicit through pre-training, unrolled through fine-tuning) against finite differences in float64
on a small nonlinear encoder with a multitask pre-training head and a fine-tuning head; bad inputs; the
strategy; unrolled_solution against autograd and higher-order derivatives."""

from __future__ import annotations

import pytest
import torch

from nestopt import hypergrad, linalg, tree
from nestopt.errors import InvalidArgumentError, NestoptError, UnsupportedError
from nestopt.optim import functional

D = torch.float64


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 3, generator=g, dtype=D)
    y = torch.stack([torch.sin(x[:, 0]), x[:, 1] * x[:, 2], torch.cos(x.sum(1))], 1)  # three pre-training tasks
    xf, xv = torch.randn(12, 3, generator=g, dtype=D), torch.randn(30, 3, generator=g, dtype=D)
    yf, yv = torch.sin(xf[:, 0] + xf[:, 1]), torch.sin(xv[:, 0] + xv[:, 1])  # the target task
    init = {
        "enc": 0.5 * torch.randn(3, 2, generator=g, dtype=D),
        "pt_head": 0.5 * torch.randn(2, 3, generator=g, dtype=D),
    }
    head = {"head": 0.3 * torch.randn(2, generator=g, dtype=D), "bias": torch.zeros((), dtype=D)}
    hp = {"task_logits": 0.2 * torch.randn(3, generator=g, dtype=D), "ft_decay": torch.tensor(-2.0, dtype=D)}
    return (x, y), (xf, yf), (xv, yv), init, head, hp


def pretrain_loss(p, h, batch):
    x, y = batch
    per_task = ((torch.tanh(x @ p["enc"]) @ p["pt_head"] - y) ** 2).mean(0)
    return (h["task_logits"].exp() * per_task).sum() + 0.05 * (p["enc"] ** 2).sum() + 0.05 * (p["pt_head"] ** 2).sum()


def finetune_loss(w, h, batch):
    x, y = batch
    pred = torch.tanh(x @ w["enc"]) @ w["head"] + w["bias"]
    return ((pred - y) ** 2).mean() + h["ft_decay"].exp() * (w["head"] ** 2).sum()


def val_loss(w, h, batch):
    x, y = batch
    return ((torch.tanh(x @ w["enc"]) @ w["head"] + w["bias"] - y) ** 2).mean()


def _pretrain(hp, batch, start):
    """Pre-training to machine precision: L-BFGS, then Newton on the flat parameters."""
    vec, spec = tree.flatten(tree.clone(start))
    f = lambda v: pretrain_loss(tree.unflatten(v, spec), hp, batch)
    v = vec.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([v], lr=1, max_iter=300, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = f(v)
        loss.backward()
        return loss

    opt.step(closure)
    vec = v.detach()
    for _ in range(20):
        g = torch.func.grad(f)(vec)
        if float(g.norm()) < 1e-13:
            break
        vec = vec - torch.linalg.solve(torch.func.hessian(f)(vec), g)
    return tree.unflatten(vec, spec)


def _finetune(pretrained, head, hp, batch, steps, lr, finetune_all):
    w = {**pretrained, **head}
    for _ in range(steps):
        g = torch.func.grad(finetune_loss)(w, hp, batch)
        w = {k: w[k] - lr * g[k] if (finetune_all or k in head) else w[k] for k in w}
    return w


@pytest.fixture(scope="module")
def problem():
    pt, ft, val, init, head, hp = _data()
    return pt, ft, val, _pretrain(hp, pt, init), init, head, hp


@pytest.mark.parametrize("finetune", ["head", "all"])
def test_two_stage_matches_finite_differences(problem, finetune):
    pt, ft, val, theta, init, head, hp = problem
    steps, lr = 3, 0.3
    res = hypergrad.two_stage(
        pretrain_loss, finetune_loss, val_loss, theta, head, hp, pt, [ft] * steps, val,
        optimizer=functional.sgd(lr=lr), steps=steps, finetune=finetune, solver=linalg.Exact(),
    )  # fmt: skip

    def objective(h):
        w = _finetune(_pretrain(h, pt, theta), head, h, ft, steps, lr, finetune == "all")
        return float(val_loss(w, h, val))

    eps = 1e-5
    for k, value in hp.items():
        for i in range(value.numel()):
            u = {key: torch.zeros_like(v) for key, v in hp.items()}
            u[k].view(-1)[i] = 1.0
            fd = (objective(tree.axpy(eps, u, hp)) - objective(tree.axpy(-eps, u, hp))) / (2 * eps)
            assert abs(float(res.grads[k].view(-1)[i]) - fd) <= 1e-6 * max(1.0, abs(fd)), (k, i)
    # diagnostics from both stages, and the fine-tuned weights the estimator ended at
    assert res.info.method == "two-stage" and res.info.extra["stage1"]["status"] == "converged"
    assert res.info.extra["stage2"]["iterations"] == steps and len(res.inner_losses) == steps
    expected = _finetune(theta, head, hp, ft, steps, lr, finetune == "all")
    for k in res.params:
        torch.testing.assert_close(res.params[k], expected[k])
    assert sorted(res.head_grads) == ["bias", "head"] and sorted(res.pretrained_cotangent) == ["enc", "pt_head"]
    assert float(res.pretrained_cotangent["pt_head"].abs().max()) == 0.0  # fine-tuning never reads it


def test_the_gradient_wrt_the_initial_head_matches_finite_differences(problem):
    pt, ft, val, theta, init, head, hp = problem
    res = hypergrad.two_stage(
        pretrain_loss, finetune_loss, val_loss, theta, head, hp, pt, [ft] * 2, val,
        optimizer=functional.sgd(lr=0.3), steps=2, solver=linalg.Exact(),
    )  # fmt: skip

    def objective(b):
        return float(val_loss(_finetune(theta, {**head, "head": b}, hp, ft, 2, 0.3, False), hp, val))

    eps = 1e-6
    fd = torch.tensor([(objective(head["head"] + eps * u) - objective(head["head"] - eps * u)) / (2 * eps)
                       for u in torch.eye(2, dtype=D)], dtype=D)  # fmt: skip
    torch.testing.assert_close(res.head_grads["head"], fd, rtol=1e-6, atol=1e-9)


def test_the_papers_neumann_estimator_is_the_truncated_series(problem):
    """N = 1, alpha = lr: v = alpha (g + (I - alpha H) g), hypergradient = -(d2 L_PT / dphi dtheta) v + stage 2."""
    pt, ft, val, theta, init, head, hp = problem
    alpha = 0.05
    res = hypergrad.two_stage(
        pretrain_loss, finetune_loss, val_loss, theta, head, hp, pt, [ft], val, optimizer=functional.sgd(lr=0.3),
        steps=1, solver=linalg.Neumann(steps=1, alpha=alpha, on_growth="continue"),
    )  # fmt: skip
    g = res.pretrained_cotangent
    gvec, spec = tree.flatten(g)
    tvec, _ = tree.flatten(theta)
    hess = torch.func.hessian(lambda v: pretrain_loss(tree.unflatten(v, spec), hp, pt))(tvec)
    v = alpha * (gvec + (gvec - alpha * hess @ gvec))
    grad_theta = lambda lam: torch.func.grad(
        lambda v_: pretrain_loss(tree.unflatten(v_, spec), {**hp, "task_logits": lam}, pt)
    )(tvec)
    mixed = torch.func.vjp(grad_theta, hp["task_logits"])[1](v)[0]
    stage2 = res.stage2.hparams["task_logits"]  # fine-tuning does not read the task weights: zero
    torch.testing.assert_close(res.grads["task_logits"], -mixed + stage2, rtol=1e-10, atol=1e-12)
    assert float(stage2.abs().max()) == 0.0 and res.stage1.info.iterations == 1


def test_bad_inputs_name_the_problem(problem):
    pt, ft, val, theta, init, head, hp = problem
    args = (pretrain_loss, finetune_loss, val_loss)
    kw = {"optimizer": functional.sgd(lr=0.1), "steps": 1, "solver": linalg.CG(steps=5)}
    with pytest.raises(InvalidArgumentError, match=r"\['enc'\] appear both in pretrained and in head"):
        hypergrad.two_stage(*args, theta, {**head, "enc": theta["enc"]}, hp, pt, [ft], val, **kw)
    with pytest.raises(InvalidArgumentError, match="fine-tuning steps.*got 0"):
        hypergrad.two_stage(*args, theta, head, hp, pt, [ft], val, **{**kw, "steps": 0})
    with pytest.raises(InvalidArgumentError, match="share their names with parameters"):
        hypergrad.two_stage(*args, theta, head, {**hp, "head": hp["ft_decay"]}, pt, [ft], val, **kw)
    with pytest.raises(InvalidArgumentError, match="not pre-trained parameters"):
        hypergrad.two_stage(*args, theta, head, hp, pt, [ft], val, finetune=["head"], **kw)
    with pytest.raises(InvalidArgumentError, match="nothing is fine-tuned"):
        hypergrad.two_stage(*args, theta, {}, hp, pt, [ft], val, **kw)
    no_hparams = lambda p, h, b: pretrain_loss(p, {"task_logits": torch.zeros(3, dtype=D)}, b)
    with pytest.raises(UnsupportedError, match="pre-training loss's gradient depends on none of the hyperparameters"):
        hypergrad.two_stage(no_hparams, finetune_loss, val_loss, theta, head, hp, pt, [ft], val, **kw)
    with pytest.raises(UnsupportedError, match=r"\['unused'\] enter neither"):
        hypergrad.two_stage(*args, theta, head, {**hp, "unused": torch.zeros(2, dtype=D)}, pt, [ft], val, **kw)
    with pytest.raises(NestoptError, match="optimizer"):
        hypergrad.two_stage(*args, theta, head, hp, pt, [ft], val, optimizer=torch.optim.SGD, steps=1)
    with pytest.raises(InvalidArgumentError, match="fine-tuning steps"):
        hypergrad.TwoStage(functional.sgd(lr=0.1), steps=0)


def test_the_strategy_refuses_a_problem_without_a_finetuning_stage():
    strategy = hypergrad.TwoStage(functional.sgd(lr=0.1))
    problem = hypergrad.Problem(
        inner_loss=pretrain_loss, outer_loss=val_loss, step_loss=pretrain_loss, params={}, hparams={},
        next_train=lambda: None, next_val=lambda: None, inner_step=lambda b, h: 0.0, steps=1, outer_step=0, seed=0,
    )  # fmt: skip
    with pytest.raises(UnsupportedError, match="TwoStageProblem"):
        strategy.hypergradient(problem)


def test_unrolled_solution_is_differentiable_to_second_order():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(20, 3, generator=g, dtype=D), torch.randn(20, generator=g, dtype=D)
    inner = lambda p, h, b: ((torch.tanh(b[0] @ p["w"]) - b[1]) ** 2).mean() + h["l2"].exp() * (p["w"] ** 2).sum()
    opt = functional.adam(lr=0.1)

    def by_hand(w0, l2):
        return hypergrad.unrolled_solution(inner, {"w": w0}, {"l2": l2}, [(x, y)] * 4, optimizer=opt, steps=4)["w"]

    w0 = 0.3 * torch.randn(3, generator=g, dtype=D)
    l2 = torch.tensor(-1.0, dtype=D)
    f = lambda w0_, l2_: (by_hand(w0_, l2_) ** 3).sum()
    # first order against finite differences, second order (a Hessian-vector product) against finite differences
    gw, gl = torch.func.grad(f, argnums=(0, 1))(w0, l2)
    eps = 1e-6
    fd_l = (f(w0, l2 + eps) - f(w0, l2 - eps)) / (2 * eps)
    torch.testing.assert_close(gl, fd_l, rtol=1e-6, atol=1e-9)
    leaf = w0.clone().requires_grad_(True)
    grad = torch.autograd.grad(f(leaf, l2), leaf, create_graph=True)[0]
    u = torch.tensor([1.0, -0.5, 2.0], dtype=D)
    hvp = torch.autograd.grad(grad @ u, leaf)[0]
    gfun = lambda w: torch.func.grad(f, argnums=0)(w, l2)
    fd_hvp = (gfun(w0 + eps * u) - gfun(w0 - eps * u)) / (2 * eps)
    torch.testing.assert_close(hvp, fd_hvp, rtol=1e-5, atol=1e-8)
    # without a graph: the same trajectory, detached
    plain = hypergrad.unrolled_solution(inner, {"w": leaf}, {"l2": l2}, [(x, y)] * 4, optimizer=opt, steps=4,
                                        create_graph=False)  # fmt: skip
    assert not plain["w"].requires_grad
    torch.testing.assert_close(plain["w"], by_hand(w0, l2))
    info = hypergrad.unrolled_solution.last_info
    assert info.status.value == "exact" and len(info.extra["inner_losses"]) == 4 and info.grad_calls == 4


def test_differentiating_an_implicit_solution_twice_raises_instead_of_dropping_terms():
    inner = lambda p, h, b: 0.5 * ((p["w"] - h["c"]) ** 2).sum() + 0.5 * (p["w"] ** 2).sum()
    c = torch.tensor([2.0, 4.0], dtype=D, requires_grad=True)
    w = hypergrad.implicit_solution(inner, {"w": c.detach() / 2}, {"c": c}, None, solver=linalg.Exact())
    with pytest.raises(UnsupportedError, match="differentiable once"):
        torch.autograd.grad((w["w"] ** 3).sum(), c, create_graph=True)
