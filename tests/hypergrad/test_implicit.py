import pytest
import torch

from nestopt import autodiff, hypergrad, linalg, tree
from nestopt.errors import NonFiniteError, ShapeMismatchError, SolverWarning, UnsupportedError
from tests.hypergrad.conftest import directional_fd, random_direction


def test_inner_solution_is_a_strict_minimum(mlp):
    g = torch.func.grad(mlp.inner_loss)(mlp.params, mlp.hparams, mlp.train)
    assert float(tree.norm(g)) < 1e-12
    vec, spec = tree.flatten(mlp.params)
    hess = torch.func.hessian(lambda v: mlp.inner_loss(tree.unflatten(v, spec), mlp.hparams, mlp.train))(vec)
    assert float(torch.linalg.eigvalsh(hess).min()) > 0


@pytest.mark.parametrize(
    "solver, rtol, hvp_mode",
    [
        (linalg.Exact(), 1e-6, "rev-rev"),
        (linalg.Exact(), 1e-6, "fwd-rev"),
        (linalg.CG(steps=200, tol=1e-13), 1e-6, "rev-rev"),
        (linalg.CG(steps=200, tol=1e-13), 1e-6, "fwd-rev"),
        (linalg.Neumann(steps=800, alpha=0.6), 1e-5, "rev-rev"),
        (linalg.Nystrom(rank=25, rho=1e-7), 1e-5, "rev-rev"),
    ],
    ids=["exact", "exact-fwd-rev", "cg", "cg-fwd-rev", "neumann", "nystrom"],
)
def test_implicit_matches_finite_differences(mlp, solver, rtol, hvp_mode):
    res = hypergrad.implicit(
        mlp.inner_loss, mlp.outer_loss, mlp.params, mlp.hparams, mlp.train, mlp.val, solver=solver, hvp_mode=hvp_mode
    )
    assert set(res.grads) == set(mlp.hparams)
    for seed in (1, 2):
        d = random_direction(mlp.hparams, seed)
        fd = directional_fd(mlp.outer_at_optimum, mlp.hparams, d)
        assert float(tree.dot(res.grads, d)) == pytest.approx(fd, rel=rtol, abs=1e-9)


def test_direct_term_is_included(mlp):
    # outer loss with an explicit dependence on a hyperparameter
    outer = lambda p, h, b: mlp.outer_loss(p, h, b) + 0.3 * h["l1.bias"].sum()
    base = hypergrad.implicit(
        mlp.inner_loss, mlp.outer_loss, mlp.params, mlp.hparams, mlp.train, mlp.val, solver=linalg.Exact()
    )
    res = hypergrad.implicit(mlp.inner_loss, outer, mlp.params, mlp.hparams, mlp.train, mlp.val, solver=linalg.Exact())
    assert torch.allclose(res.grads["l1.bias"], base.grads["l1.bias"] + 0.3)


def test_the_solvers_estimates_come_before_the_right_hand_side(mlp):
    # the Lanczos step of Neumann(alpha="auto") needs vectors of its own: made before the outer gradient exists,
    # they are never alive beside it; the solve's count includes the estimate's products
    events = []

    class Recording(linalg.Neumann):
        def ready(self, op):
            events.append("ready")
            return super().ready(op)

    def outer(p, h, b):
        events.append("outer")
        return mlp.outer_loss(p, h, b)

    solver = Recording(steps=5, alpha="auto", estimate_steps=7)
    res = hypergrad.implicit(mlp.inner_loss, outer, mlp.params, mlp.hparams, mlp.train, mlp.val, solver=solver)
    assert events == ["ready", "outer"]
    assert res.info.solve.hvp_calls == 7 + 5 == res.info.hvp_calls
    fixed = linalg.Neumann(steps=5, alpha=solver.ready(_hessian(mlp)).alpha)
    want = hypergrad.implicit(mlp.inner_loss, mlp.outer_loss, mlp.params, mlp.hparams, mlp.train, mlp.val, solver=fixed)
    torch.testing.assert_close(res.grads, want.grads, rtol=1e-12, atol=0.0)


def _hessian(p):
    return linalg.LinearOperator.hessian(autodiff.linearize(p.inner_loss, p.params, p.hparams, p.train))


def test_info_counts_products(mlp):
    res = hypergrad.implicit(
        mlp.inner_loss, mlp.outer_loss, mlp.params, mlp.hparams, mlp.train, mlp.val,
        solver=linalg.Neumann(steps=5, alpha=0.1),
    )  # fmt: skip
    assert res.info.method == "implicit"
    assert res.info.hvp_calls == 5 and res.info.grad_calls == 2
    assert res.info.extra["mixed_calls"] == 1
    assert res.info.inner_grad_norm < 1e-12
    assert res.info.status is linalg.Status.MAX_ITERATIONS


def test_separate_hessian_batch(mlp):
    half = (mlp.train[0][:30], mlp.train[1][:30])
    a = hypergrad.implicit(
        mlp.inner_loss, mlp.outer_loss, mlp.params, mlp.hparams, mlp.train, mlp.val,
        solver=linalg.Exact(), hessian_batch=half,
    )  # fmt: skip
    assert a.info.grad_calls == 3
    b = hypergrad.implicit(
        mlp.inner_loss, mlp.outer_loss, mlp.params, mlp.hparams, mlp.train, mlp.val, solver=linalg.Exact()
    )
    assert not torch.allclose(a.grads["l1.weight"], b.grads["l1.weight"])


def test_learning_rate_hyperparameter_is_refused(mlp):
    hp = dict(mlp.hparams, lr=torch.tensor(0.1, dtype=torch.float64))
    with pytest.raises(UnsupportedError, match=r"\['lr'\].*unrolled"):
        hypergrad.implicit(mlp.inner_loss, mlp.outer_loss, mlp.params, hp, mlp.train, mlp.val)


def test_mismatched_trees_are_named(mlp):
    bad = {k: v for k, v in mlp.hparams.items() if k != "l2.weight"}
    with pytest.raises(ShapeMismatchError, match="missing key 'l2.weight'.*hparams has keys"):
        hypergrad.implicit(mlp.inner_loss, mlp.outer_loss, mlp.params, bad, mlp.train, mlp.val)
    wrong = dict(mlp.hparams, **{"l1.weight": torch.zeros(4, 3, dtype=torch.float64)})
    with pytest.raises(ShapeMismatchError, match=r"l1.weight: \(4, 3\)"):
        hypergrad.implicit(mlp.inner_loss, mlp.outer_loss, mlp.params, wrong, mlp.train, mlp.val)


def test_non_scalar_and_non_finite_losses(mlp):
    vector_outer = lambda p, h, b: (p["l2.weight"] ** 2).flatten()
    with pytest.raises(ValueError, match="outer_loss must return a scalar"):
        hypergrad.implicit(mlp.inner_loss, vector_outer, mlp.params, mlp.hparams, mlp.train, mlp.val)
    nan_inner = lambda p, h, b: mlp.inner_loss(p, h, b) * float("nan")
    with pytest.raises(NonFiniteError, match="inner_loss returned a non-finite value"):
        hypergrad.implicit(nan_inner, mlp.outer_loss, mlp.params, mlp.hparams, mlp.train, mlp.val)


def test_diverging_solver_warns_and_returns_finite_values(mlp):
    with pytest.warns(SolverWarning, match="too large"):
        res = hypergrad.implicit(
            mlp.inner_loss, mlp.outer_loss, mlp.params, mlp.hparams, mlp.train, mlp.val,
            solver=linalg.Neumann(steps=200, alpha=50.0),
        )  # fmt: skip
    assert res.info.status is linalg.Status.DIVERGED
    assert tree.all_finite(res.grads)


def test_strategy_object_matches_function(mlp):
    strat = hypergrad.Implicit(solver=linalg.CG(steps=50))
    a = strat(mlp.inner_loss, mlp.outer_loss, mlp.params, mlp.hparams, mlp.train, mlp.val)
    b = hypergrad.implicit(
        mlp.inner_loss, mlp.outer_loss, mlp.params, mlp.hparams, mlp.train, mlp.val, solver=linalg.CG(steps=50)
    )
    assert all(torch.equal(a.grads[k], b.grads[k]) for k in a.grads)


def test_closed_form_ridge():
    """Ridge regression with one penalty per feature: the hypergradient has a closed form."""
    gen = torch.Generator().manual_seed(3)
    d = torch.float64
    x, y = torch.randn(50, 6, generator=gen, dtype=d), torch.randn(50, generator=gen, dtype=d)
    xv, yv = torch.randn(40, 6, generator=gen, dtype=d), torch.randn(40, generator=gen, dtype=d)
    lam = torch.randn(6, generator=gen, dtype=d)
    a = x.T @ x / 50 + torch.diag(lam.exp())
    w = torch.linalg.solve(a, x.T @ y / 50)
    g_val = 2 * xv.T @ (xv @ w - yv) / 40
    # d L_val/d lam_i = -g^T A^-1 (d A/d lam_i) w = -exp(lam_i) w_i (A^-1 g)_i
    truth = -lam.exp() * w * torch.linalg.solve(a, g_val)
    inner = lambda p, h, b: 0.5 * ((b[0] @ p["w"] - b[1]) ** 2).mean() + 0.5 * (h["lam"].exp() * p["w"] ** 2).sum()
    outer = lambda p, h, b: ((b[0] @ p["w"] - b[1]) ** 2).mean()
    # inner loss is half of the scaled normal equations: its Hessian is A, its solution w
    res = hypergrad.implicit(inner, outer, {"w": w}, {"lam": lam}, (x, y), (xv, yv), solver=linalg.Exact())
    assert torch.allclose(res.grads["lam"], truth, rtol=1e-10)
