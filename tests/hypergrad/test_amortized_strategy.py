"""Implicit with amortized solves: warm starts across outer steps, the single-loop mode, kept estimates, state."""

import functools

import pytest
import torch

import nestopt
from nestopt import hparams, hypergrad, linalg, tree
from nestopt.errors import InvalidArgumentError
from tests.bilevel.conftest import loaders, regularized_net, task
from tests.hypergrad.conftest import mlp_problem


def _cos(a, b):
    return float(tree.dot(a, b) / (tree.norm(a) * tree.norm(b)))


@pytest.fixture
def problem():
    p = mlp_problem()
    p.params = p.solve_inner(p.hparams)  # the inner optimum: the Hessian is positive definite there
    return p


def _call(strategy, p):
    return strategy(p.inner_loss, p.outer_loss, p.params, p.hparams, p.train, p.val)


def test_single_loop_iterates_converge_to_the_ift_hypergradient(problem):
    exact = hypergrad.implicit(problem.inner_loss, problem.outer_loss, problem.params, problem.hparams,
                               problem.train, problem.val, solver=linalg.Exact()).grads  # fmt: skip
    strategy = hypergrad.Implicit.single_loop(refresh=50)
    first = _call(strategy, problem)
    assert first.info.hvp_calls == 10 and not first.info.solve.warm_start  # the Lanczos estimate of the step
    cosines = [_cos(first.grads, exact)]
    for _ in range(300):
        res = _call(strategy, problem)
        cosines.append(_cos(res.grads, exact))
    assert res.info.solve.warm_start and res.info.hvp_calls in (1, 11)
    assert cosines[-1] > 0.99999 and cosines[-1] > cosines[0]
    torch.testing.assert_close(res.grads, exact, rtol=1e-4, atol=1e-10)


def test_reused_solutions_save_iterations_and_reset_forgets_them(problem):
    strategy = hypergrad.Implicit(solver=linalg.CG(steps=100, tol=1e-9), reuse_solution=True)
    cold = _call(strategy, problem)
    warm = _call(strategy, problem)
    assert warm.info.solve.warm_start and warm.info.iterations == 0  # the same system: already solved
    torch.testing.assert_close(warm.grads, cold.grads)
    strategy.reset()
    again = _call(strategy, problem)
    assert not again.info.solve.warm_start and again.info.iterations == cold.info.iterations
    plain = hypergrad.Implicit(solver=linalg.CG(steps=100, tol=1e-9))
    assert not _call(plain, problem).info.solve.warm_start and _call(plain, problem).info.iterations > 0


def test_a_kept_preconditioner_is_refreshed_every_few_outer_steps(problem):
    recipe = linalg.CG(steps=3, damping=0.1, preconditioner=linalg.NystromPreconditioner(rank=4))
    strategy = hypergrad.Implicit(solver=recipe, refresh=3)
    calls = [_call(strategy, problem).info.hvp_calls for _ in range(7)]
    assert calls == [7, 3, 3, 7, 3, 3, 7]  # the sketch (4 products) at the first step and every third after


def _trainer(d, net, strategy):
    return nestopt.BilevelTrainer(
        net, torch.nn.functional.cross_entropy, [hparams.WeightDecay(net, per="parameter")], hypergrad=strategy,
        inner_optimizer=functools.partial(torch.optim.SGD, lr=0.05), inner_steps_per_outer=2, seed=3,
    )  # fmt: skip


def test_amortized_state_is_checkpointed_and_a_resumed_run_is_identical(tmp_path):
    strategy = hypergrad.Implicit(
        solver=linalg.CG(steps=2, damping=0.5, preconditioner=linalg.NystromPreconditioner(rank=3)),
        reuse_solution=True, refresh=2, curvature="gauss-newton",
    )  # fmt: skip
    d = task()
    straight = _trainer(d, regularized_net(), strategy)
    straight.fit(*loaders(d)[:2], outer_steps=5, progress=False)
    first = _trainer(d, regularized_net(), strategy)
    first.fit(*loaders(d)[:2], outer_steps=3, checkpoint=tmp_path / "c.pt", progress=False)
    state = torch.load(tmp_path / "c.pt", weights_only=True)["strategy"]["solver"]
    assert state["previous"] is not None and state["prepared"]["basis"] and state["builds"] == 2
    resumed = _trainer(d, regularized_net(), strategy)
    resumed.fit(*loaders(d)[:2], outer_steps=5, checkpoint=tmp_path / "c.pt", resume=True, progress=False)
    for k in straight.params:
        assert torch.equal(straight.params[k], resumed.params[k]), k
    for k in straight.hparams:
        assert torch.equal(straight.hparams[k], resumed.hparams[k]), k
    assert straight.history.column("hvp_calls") == resumed.history.column("hvp_calls")


def test_one_strategy_value_configures_independent_runs():
    strategy = hypergrad.Implicit.single_loop(curvature="gauss-newton")
    d = task()
    a = _trainer(d, regularized_net(), strategy)
    a.fit(*loaders(d)[:2], outer_steps=3, progress=False)
    b = _trainer(d, regularized_net(), strategy)  # built after a ran: starts from scratch all the same
    b.fit(*loaders(d)[:2], outer_steps=3, progress=False)
    assert a.history.column("hvp_calls") == b.history.column("hvp_calls")
    assert all(torch.equal(a.hparams[k], b.hparams[k]) for k in a.hparams)


def test_settings_are_checked():
    with pytest.raises(InvalidArgumentError, match="refresh"):
        hypergrad.Implicit(refresh=0)
    with pytest.raises(InvalidArgumentError, match="iterations"):
        hypergrad.Implicit.single_loop(0)
    assert hypergrad.Implicit.single_loop(3).solver.steps == 2
