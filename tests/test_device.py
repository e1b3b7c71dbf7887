"""The GPU path, run on the ``device`` fixture (``pytest --device cuda``; ``cpu`` by default): solvers, amortized
hypergradients and joint training keep every tensor on the device, and the solver loops read values on the host
only at their convergence checks."""

from __future__ import annotations

import functools

import pytest
import torch

import nestopt
from nestopt import data, hparams, hypergrad, linalg, tree
from tests.conftest import parse_device


class HostReads:
    """Counts the reads of tensor values on the host (``bool``, ``float``, ``item``): each one synchronizes a GPU."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        for name in ("__bool__", "__float__", "item"):
            original = getattr(torch.Tensor, name)

            def counted(t, *args, _original=original, **kwargs):
                self.count += 1
                return _original(t, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


def _system(device, n=64):
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    A = (q * torch.linspace(1.0, 5.0, n, dtype=torch.float64)) @ q.T
    A = 0.5 * (A + A.T)
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    op = linalg.LinearOperator.from_matrix(A.to(device))
    return A, op, {"x": b.to(device)}


@pytest.mark.parametrize(
    "solver",
    [
        linalg.CG(steps=100, tol=1e-10, check_every=5),
        linalg.CG(steps=100, tol=1e-10, preconditioner=linalg.NystromPreconditioner(rank=8), check_every=5),
        linalg.Neumann(steps=200, alpha="auto", tol=1e-10, check_every=8),
    ],
    ids=["cg", "pcg", "neumann"],
)
def test_solvers_stay_on_the_device(solver, device):
    A, op, b = _system(device)
    sol = solver.solve(op, b)
    assert sol.value["x"].device.type == device.type and sol.info.status is linalg.Status.CONVERGED
    torch.testing.assert_close(sol.value["x"].cpu(), torch.linalg.solve(A, b["x"].cpu()), atol=1e-8, rtol=0)


def test_solver_loops_read_the_host_only_at_checks(device, monkeypatch):
    _, op, b = _system(device)
    reads = HostReads(monkeypatch)
    linalg.CG(steps=40, tol=0.0, check_every=10).solve(op, b)
    cg_reads = reads.count
    reads.count = 0
    linalg.Neumann(steps=40, alpha=0.2, check_every=10).solve(op, b)
    neumann_reads = reads.count
    reads.count = 0
    linalg.CG(steps=40, tol=0.0).solve(op, b)
    every = reads.count
    # 4 checks of 2 flags, plus the start (|b|) and the end (the residual); one read per flag per iteration otherwise
    assert cg_reads <= 12 and neumann_reads <= 12
    assert every >= 2 * 40


def test_amortized_hypergradient_on_the_device(device):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=gen, dtype=torch.float64).to(device)
    y = (x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, device=device)).unsqueeze(1)
    inner = lambda p, h, bt: ((bt[0] @ p["w"] - bt[1]) ** 2).mean() + (h["l2"].exp() * p["w"] ** 2).sum()
    outer = lambda p, h, bt: ((bt[0] @ p["w"] - bt[1]) ** 2).mean()
    h = {"l2": torch.full((3, 1), -2.0, dtype=torch.float64, device=device)}
    w = {"w": torch.linalg.solve(x.T @ x / 40 + torch.diag(h["l2"].exp()[:, 0]), x.T @ y / 40)}
    exact = hypergrad.implicit(inner, outer, w, h, (x, y), (x, y), solver=linalg.Exact()).grads
    strategy = hypergrad.Implicit.single_loop(refresh=1000)
    for _ in range(60):
        res = strategy(inner, outer, w, h, (x, y), (x, y))
    assert res.grads["l2"].device.type == device.type
    torch.testing.assert_close(res.grads["l2"], exact["l2"], rtol=1e-6, atol=1e-12)


def test_joint_training_on_the_device(device):
    d = data.synthetic_classification(n_train=64, n_val=32, n_test=32, dim=6, num_classes=3, seed=0)
    d = data.Splits(*(data.Split(s.x.to(device), s.y.to(device)) for s in (d.train, d.val, d.test)), d.num_classes)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).to(device)
    trainer = nestopt.BilevelTrainer(
        net, torch.nn.functional.cross_entropy, [hparams.WeightDecay(net, per="parameter")],
        hypergrad=hypergrad.Implicit.single_loop(curvature="gauss-newton"),
        inner_optimizer=functools.partial(torch.optim.Adam, lr=1e-2), inner_steps_per_outer=3,
    )  # fmt: skip
    history = trainer.fit(data.Loader(d.train, 32), data.Loader(d.val, 32), outer_steps=4, progress=False)
    assert len(history) == 4 and all(v.device.type == device.type for v in trainer.hparams.values())
    assert tree.all_finite(trainer.hparams) and history.last("val_loss") < 5.0


def test_the_device_option_is_checked(device):
    assert parse_device("cpu") == torch.device("cpu") and device.type in ("cpu", "cuda")
    with pytest.raises(pytest.UsageError, match="not a torch device"):
        parse_device("gpu")
    with pytest.raises(pytest.UsageError, match="only cpu and cuda"):
        parse_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(pytest.UsageError, match="CUDA is not available"):
            parse_device("cuda")
