"""MAML, first-order MAML and iMAML meta-gradients against higher, finite differences in float64 and the closed
form of iMAML on quadratic tasks; flat iMAML memory; buffers that never change."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from nestopt import linalg, meta, tree
from nestopt.errors import InvalidArgumentError
from nestopt.optim import functional
from nestopt.profile import PeakMemory

D = torch.float64


def _mlp(seed=0, hidden=8, bn=False):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(1, hidden)]
    if bn:
        layers.append(torch.nn.BatchNorm1d(hidden))
    layers += [torch.nn.Tanh(), torch.nn.Linear(hidden, 1)]
    return torch.nn.Sequential(*layers).to(D)


def _tasks(n=3, seed=0, shots=6, queries=7):
    return meta.Sinusoid(shots=shots, queries=queries, dtype=D).sample(n, seed=seed)


def _grads(learner, tasks):
    learner.model.zero_grad()
    learner.meta_loss(tasks).backward()
    return {k: p.grad.clone() for k, p in learner.model.named_parameters()}


def _directional_fd(learner, tasks, direction, eps=1e-6):
    """d/dt of the meta-loss at theta + t * direction, by central differences (every call re-adapts)."""
    params = dict(learner.model.named_parameters())
    base = tree.clone(params)
    values = []
    for t in (eps, -eps):
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(base[k] + t * direction[k])
        values.append(float(learner.meta_loss(tasks).detach()))
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(base[k])
    return (values[0] - values[1]) / (2 * eps)


def _direction(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(p.shape, generator=g, dtype=D) for k, p in model.named_parameters()}


def test_maml_matches_higher_innerloop_ctx():
    higher = pytest.importorskip("higher")
    model, tasks, lr, steps = _mlp(), _tasks(), 0.1, 3
    ours = _grads(meta.MAML(model, F.mse_loss, inner_lr=lr, inner_steps=steps), tasks)
    model.zero_grad()
    inner_opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for task in tasks:
        with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(F.mse_loss(fmodel(task.support[0]), task.support[1]))
            losses.append(F.mse_loss(fmodel(task.query[0]), task.query[1]))
    torch.stack(losses).mean().backward()
    for k, p in model.named_parameters():
        torch.testing.assert_close(ours[k], p.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bn", [False, True])
def test_maml_meta_gradient_matches_finite_differences(bn):
    model, tasks = _mlp(bn=bn), _tasks()
    maml = meta.MAML(model, F.mse_loss, inner_optimizer=functional.sgd(lr=0.05, momentum=0.9), inner_steps=4)
    buffers = tree.clone(dict(model.named_buffers()))
    grads = _grads(maml, tasks)
    u = _direction(model)
    fd = _directional_fd(maml, tasks, u, eps=1e-7)  # batch normalization makes the meta-loss stiff: a small step
    assert abs(float(tree.dot(grads, u)) - fd) <= 1e-6 * max(1.0, abs(fd))
    for k, b in model.named_buffers():  # batch statistics are used, the running statistics never change
        assert torch.equal(b, buffers[k]), k


def test_first_order_maml_is_the_query_gradient_at_the_adapted_weights():
    model, tasks = _mlp(), _tasks(2)
    fomaml = meta.FOMAML(model, F.mse_loss, inner_lr=0.1, inner_steps=3)
    grads = _grads(fomaml, tasks)
    expected = tree.zeros_like(grads)
    loss = lambda p, batch: F.mse_loss(torch.func.functional_call(model, p, batch[0]), batch[1])
    for task in tasks:
        w = tree.clone(dict(model.named_parameters()))
        for _ in range(3):
            g = torch.func.grad(loss)(w, task.support)
            w = {k: w[k] - 0.1 * g[k] for k in w}
        q = torch.func.grad(loss)(w, task.query)
        expected = tree.add(expected, tree.scale(q, 1 / len(tasks)))
        adapted = fomaml.adapt(task.support)
        for k in w:
            torch.testing.assert_close(adapted[k], w[k])
    for k in grads:
        torch.testing.assert_close(grads[k], expected[k], rtol=1e-10, atol=1e-12)


def test_imaml_matches_the_closed_form_on_quadratic_tasks():
    """Linear regression tasks: phi* = (A + lam I)^{-1} (b + lam theta), meta-gradient lam (A + lam I)^{-1} grad L_q."""
    g = torch.Generator().manual_seed(3)
    d, lam = 4, 2.0
    model = torch.nn.Linear(d, 1, bias=False).to(D)
    xs, xq = torch.randn(3, 10, d, generator=g, dtype=D), torch.randn(3, 12, d, generator=g, dtype=D)
    w_true = torch.randn(3, d, 1, generator=g, dtype=D)
    tasks = meta.TaskBatch(xs, xs @ w_true, xq, xq @ w_true + 0.1 * torch.randn(3, 12, 1, generator=g, dtype=D))
    imaml = meta.IMAML(model, F.mse_loss, lam=lam, inner_lr=0.1, inner_steps=400, solver=linalg.CG(steps=d, tol=1e-14))
    grads = _grads(imaml, tasks)
    theta = model.weight.detach().reshape(d)
    expected = torch.zeros(d, dtype=D)
    for task in tasks:
        (x, y), (xq_, yq) = task.support, task.query
        a = 2 * x.T @ x / len(x)
        b = 2 * x.T @ y.reshape(-1) / len(x)
        phi = torch.linalg.solve(a + lam * torch.eye(d, dtype=D), b + lam * theta)
        grad_q = 2 * xq_.T @ (xq_ @ phi - yq.reshape(-1)) / len(xq_)
        expected += lam * torch.linalg.solve(a + lam * torch.eye(d, dtype=D), grad_q) / len(tasks)
    torch.testing.assert_close(grads["weight"].reshape(d), expected, rtol=1e-8, atol=1e-10)


def test_imaml_meta_gradient_matches_finite_differences_of_the_exact_solution():
    model, tasks, lam = _mlp(hidden=4), _tasks(2), 4.0
    imaml = meta.IMAML(model, F.mse_loss, lam=lam, inner_lr=0.05, inner_steps=1500, solver=linalg.Exact())
    grads = _grads(imaml, tasks)
    params = dict(model.named_parameters())
    vec0, spec = tree.flatten(tree.detach(params))

    def prox(v, theta_vec, x, y):
        return (
            F.mse_loss(torch.func.functional_call(model, tree.unflatten(v, spec), x), y)
            + 0.5 * lam * ((v - theta_vec) ** 2).sum()
        )

    def objective(theta_vec):  # the proximal problem solved by Newton's method, independently of the learner
        total = 0.0
        for task in tasks:
            (x, y), (xq, yq) = task.support, task.query
            f = functools.partial(prox, theta_vec=theta_vec, x=x, y=y)
            v = theta_vec.clone()
            for _ in range(30):
                v = v - torch.linalg.solve(torch.func.hessian(f)(v), torch.func.grad(f)(v))
            total += float(F.mse_loss(torch.func.functional_call(model, tree.unflatten(v, spec), xq), yq))
        return total / len(tasks)

    u, _ = tree.flatten(_direction(model))
    eps = 1e-6
    fd = (objective(vec0 + eps * u) - objective(vec0 - eps * u)) / (2 * eps)
    ours = float(tree.flatten(grads)[0] @ u)
    assert abs(ours - fd) <= 1e-6 * max(1.0, abs(fd)), (ours, fd)


@pytest.mark.parametrize("bn", [False, True])
def test_imaml_proximal_term_from_its_formulas_equals_autograd_through_it(bn):
    """The implicit VJP takes the proximal term's curvature (lam I) and mixed derivative (-lam I) from their
    formulas; a subclass that redefines the adaptation loss gets it through autograd: the same meta-gradient."""
    from nestopt.autodiff import GaussNewtonLoss

    class ThroughAutograd(meta.IMAML):
        def adaptation_loss(self, params, hparams, batch):
            return super().adaptation_loss(params, hparams, batch)

    tasks = _tasks(2)
    kw = {"lam": 3.0, "inner_lr": 0.05, "inner_steps": 20, "solver": linalg.CG(steps=6, tol=0.0)}
    split, plain = meta.IMAML(_mlp(bn=bn), F.mse_loss, **kw), ThroughAutograd(_mlp(bn=bn), F.mse_loss, **kw)
    assert isinstance(split._implicit_loss(), GaussNewtonLoss) and not isinstance(
        plain._implicit_loss(), GaussNewtonLoss
    )
    got, want = _grads(split, tasks), _grads(plain, tasks)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-11, atol=1e-13)


def test_imaml_memory_does_not_grow_with_the_inner_steps_but_maml_does():
    tasks = _tasks(2, shots=20).to(torch.float32)

    def peak(kind, steps):
        model = _mlp(hidden=64).float()
        if kind == "maml":
            learner = meta.MAML(model, F.mse_loss, inner_lr=0.01, inner_steps=steps)
        else:
            learner = meta.IMAML(model, F.mse_loss, lam=5.0, inner_lr=0.01, inner_steps=steps)
        with PeakMemory(count=model.parameters()) as mem:
            learner.meta_loss(tasks).backward()
        return mem.extra

    maml = [peak("maml", k) for k in (1, 4, 16)]
    imaml = [peak("imaml", k) for k in (1, 4, 16)]
    assert maml[0] < maml[1] < maml[2] and maml[2] > 4 * maml[0]
    assert max(imaml) == min(imaml)


def test_bad_inputs_name_the_problem():
    model = _mlp()
    with pytest.raises(InvalidArgumentError, match="TaskBatch"):
        meta.MAML(model, F.mse_loss).meta_loss([(torch.zeros(2, 1), torch.zeros(2, 1))])
    with pytest.raises(InvalidArgumentError, match="inner_steps must be a positive integer, got 0"):
        meta.MAML(model, F.mse_loss, inner_steps=0)
    with pytest.raises(InvalidArgumentError, match="lam"):
        meta.IMAML(model, F.mse_loss, lam=0.0)
    with pytest.raises(InvalidArgumentError, match="inner_optimizer"):
        meta.MAML(model, F.mse_loss, inner_optimizer=torch.optim.SGD)
    with pytest.raises(InvalidArgumentError, match="model must be a torch.nn.Module"):
        meta.FOMAML(lambda x: x, F.mse_loss)
