"""Task batches (shape checks that name the problem), the sinusoid family, and bound modules."""

from __future__ import annotations

import math

import pytest
import torch

from nestopt import meta
from nestopt.errors import InvalidArgumentError, ShapeMismatchError


def test_sinusoid_tasks_follow_their_amplitude_and_phase_and_are_seeded():
    family = meta.Sinusoid(shots=5, queries=7, dtype=torch.float64)
    a, b = family.sample(6, seed=3), family.sample(6, seed=3)
    assert torch.equal(a.support_x, b.support_x) and not torch.equal(a.support_x, family.sample(6, seed=4).support_x)
    amp, phase = a.info["amplitude"], a.info["phase"]
    assert bool(((amp >= 0.1) & (amp <= 5.0)).all()) and bool(((phase >= 0) & (phase <= math.pi)).all())
    for t, task in enumerate(a):
        x, y = task.support
        torch.testing.assert_close(y, amp[t] * torch.sin(x - phase[t]))
        assert bool((task.query[0].abs() <= 5.0).all())
    stream = family.stream(2, seed=0)
    first, second = next(stream), next(stream)
    assert not torch.equal(first.support_x, second.support_x)
    assert torch.equal(next(family.stream(2, seed=0)).support_x, first.support_x)


def test_inconsistent_task_batches_raise_shape_errors():
    z = torch.zeros
    with pytest.raises(ShapeMismatchError, match="same number of tasks"):
        meta.TaskBatch(z(4, 5, 1), z(3, 5, 1), z(4, 8, 1), z(4, 8, 1))
    with pytest.raises(ShapeMismatchError, match="support_x and support_y need as many examples"):
        meta.TaskBatch(z(4, 5, 1), z(4, 6, 1), z(4, 8, 1), z(4, 8, 1))
    with pytest.raises(ShapeMismatchError, match="query_x and query_y need as many examples"):
        meta.TaskBatch(z(4, 5, 1), z(4, 5, 1), z(4, 8, 1), z(4, 9, 1))
    with pytest.raises(ShapeMismatchError, match="same shapes"):
        meta.TaskBatch(z(4, 5, 1), z(4, 5, 1), z(4, 8, 2), z(4, 8, 1))
    with pytest.raises(ShapeMismatchError, match=r"\[tasks, examples, \.\.\.\]"):
        meta.TaskBatch(z(4), z(4, 5, 1), z(4, 8, 1), z(4, 8, 1))
    with pytest.raises(ShapeMismatchError, match="one entry per task"):
        meta.TaskBatch(z(4, 5, 1), z(4, 5, 1), z(4, 8, 1), z(4, 8, 1), info={"amplitude": z(3)})
    t = ((z(5, 1), z(5, 1)), (z(8, 1), z(8, 1)))
    odd = ((z(6, 1), z(6, 1)), (z(8, 1), z(8, 1)))
    with pytest.raises(ShapeMismatchError, match=r"task 1's support_x is \[6, 1\] but task 0's is \[5, 1\]"):
        meta.TaskBatch.from_tasks([t, odd])
    with pytest.raises(InvalidArgumentError, match="at least one task"):
        meta.TaskBatch.from_tasks([])
    with pytest.raises(InvalidArgumentError, match="low <= high"):
        meta.Sinusoid(amplitude=(5.0, 0.1))


def test_a_bound_module_runs_at_its_tensors_and_reaches_submodules():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Tanh())
            self.head = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.encoder(x))

    net = Net().double()
    x = torch.randn(8, 3, dtype=torch.float64)
    params = {k: 2 * p.detach() for k, p in net.named_parameters()}
    expected_net = Net().double()
    expected_net.load_state_dict({**net.state_dict(), **params})
    before = {k: b.clone() for k, b in net.named_buffers()}
    bound = meta.bind(net, params, buffers="copy", train=True)
    torch.testing.assert_close(bound(x), expected_net.train()(x))
    torch.testing.assert_close(bound.encoder(x), expected_net.encoder(x))
    torch.testing.assert_close(bound.encoder[0](x), expected_net.encoder[0](x))
    assert all(torch.equal(b, before[k]) for k, b in net.named_buffers())  # copies were updated, not the module's
    assert net.training  # the module's mode is restored
    live = meta.bind(net, train=True)
    live(x)
    assert not torch.equal(dict(net.named_buffers())["encoder.1.running_mean"], before["encoder.1.running_mean"])
    with pytest.raises(ShapeMismatchError, match=r"missing \['head.bias'\]"):
        meta.bind(net, {k: v for k, v in params.items() if k != "head.bias"})
    with pytest.raises(AttributeError, match="no submodule 'decoder'"):
        _ = bound.decoder
