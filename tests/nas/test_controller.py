"""The controller and REINFORCE: a normalized policy over the space, teacher forcing equals sampling, the
policy-gradient estimate is unbiased against the exact gradient of the expected reward on a bandit (and a
biased variant is caught), REINFORCE finds the bandit's known optimum; the memory buffer."""

from __future__ import annotations

import pytest
import torch

from nestopt import nas
from nestopt.errors import InvalidArgumentError, ShapeMismatchError

SPACE = nas.CellSpace(nodes=3, ops=("tanh", "relu", "sigmoid"))  # 54 cells


def _controller(seed: int = 0) -> nas.Controller:
    # a wide initialization so that the policy is far from uniform and conditions on earlier tokens
    return nas.Controller(SPACE, hidden=6, temperature=1.0, tanh_constant=None, init_range=0.8,
                          generator=torch.Generator().manual_seed(seed)).double()  # fmt: skip


def _all_tokens() -> torch.Tensor:
    return SPACE.to_tensor(list(SPACE.enumerate()))


def _bandit() -> torch.Tensor:
    rewards = torch.rand(len(SPACE), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    rewards[17] = 1.5  # the known optimum
    return rewards


def _flat_grad(loss: torch.Tensor, ctrl: nas.Controller) -> torch.Tensor:
    grads = torch.autograd.grad(loss, list(ctrl.parameters()))
    return torch.cat([g.reshape(-1) for g in grads])


def test_policy_is_normalized_and_teacher_forcing_matches_sampling() -> None:
    ctrl = _controller()
    out = ctrl.evaluate(_all_tokens())
    assert float(out.log_prob.detach().exp().sum()) == pytest.approx(1.0, abs=1e-12)
    sample = ctrl.sample(50, generator=torch.Generator().manual_seed(0))
    again = ctrl.evaluate(sample.tokens)
    torch.testing.assert_close(again.log_prob, sample.log_prob)
    torch.testing.assert_close(again.entropy, sample.entropy)
    torch.testing.assert_close(again.hidden, sample.hidden)
    # the policy conditions on earlier tokens: node 1's distribution differs with node 0's activation
    tokens = torch.tensor([[0, 0, 0, 0, 0], [1, 0, 0, 0, 0]])
    with torch.no_grad():
        h = ctrl.evaluate(tokens).hidden
        state = ctrl.lstm(torch.zeros(2, 6, dtype=torch.float64))
        for t in range(2):
            state = ctrl.lstm(ctrl.embedding(tokens[:, t] + ctrl.offsets[t]), state)
        p2 = torch.softmax(ctrl.step_logits(state[0], 2), -1)  # node 1's activation given (op 0, prev 1)
    assert float((p2[0] - p2[1]).abs().max()) > 1e-3
    assert float((h[0] - h[1]).norm()) > 1e-3


def test_sampling_follows_the_policy() -> None:
    ctrl = _controller()
    probs = ctrl.evaluate(_all_tokens()).log_prob.exp().detach()
    tokens = ctrl.sample(40_000, generator=torch.Generator().manual_seed(1)).tokens
    counts = torch.bincount(torch.tensor([SPACE.index(a) for a in SPACE.from_tensor(tokens)]), minlength=len(SPACE))
    freq = counts.double() / 40_000
    sd = (probs * (1 - probs) / 40_000).sqrt()
    assert float(((freq - probs).abs() / sd).max()) < 5.0


@pytest.mark.parametrize(("entropy_weight", "baseline"), [(0.0, 0.0), (0.0, 0.6), (0.3, 0.4)])
def test_reinforce_gradient_is_unbiased_on_a_bandit(entropy_weight: float, baseline: float) -> None:
    ctrl = _controller()
    rewards = _bandit()
    exact_out = ctrl.evaluate(_all_tokens())
    p = exact_out.log_prob.exp()
    objective = (p * (rewards + entropy_weight * exact_out.entropy)).sum()  # J = E[R + beta H]
    exact = _flat_grad(objective, ctrl)
    gen = torch.Generator().manual_seed(2)
    estimates = []
    for _ in range(40):
        out = ctrl.sample(500, generator=gen)
        idx = torch.tensor([SPACE.index(a) for a in ctrl.architectures(out)])
        estimates.append(-_flat_grad(nas.reinforce_loss(out, rewards[idx], baseline, entropy_weight), ctrl))
    est = torch.stack(estimates)
    mean = est.mean(0)
    # E |mean - exact|^2 = sum of variances / K: the ratio is ~1 for an unbiased estimator
    ratio = float((mean - exact).pow(2).sum() / (est.var(0).sum() / len(est)))
    assert ratio < 3.0, ratio
    assert float((mean - exact).norm() / exact.norm()) < 0.1


def test_the_unbiasedness_check_catches_a_biased_estimator() -> None:
    ctrl = _controller()
    rewards = _bandit()
    beta = 0.3
    exact_out = ctrl.evaluate(_all_tokens())
    exact = _flat_grad((exact_out.log_prob.exp() * (rewards + beta * exact_out.entropy)).sum(), ctrl)
    gen = torch.Generator().manual_seed(2)
    estimates = []
    for _ in range(40):
        out = ctrl.sample(500, generator=gen)
        idx = torch.tensor([SPACE.index(a) for a in ctrl.architectures(out)])
        # the entropy only in the reward (as ENAS's code does): misses the direct term beta * grad H
        surrogate = -((rewards[idx] + beta * out.entropy.detach()) * out.log_prob).mean()
        estimates.append(-_flat_grad(surrogate, ctrl))
    est = torch.stack(estimates)
    ratio = float((est.mean(0) - exact).pow(2).sum() / (est.var(0).sum() / len(est)))
    assert ratio > 10.0, ratio


def test_reinforce_finds_the_known_optimum_of_a_bandit() -> None:
    ctrl = _controller(seed=3)
    rewards = _bandit()
    opt = torch.optim.Adam(ctrl.parameters(), lr=0.1)
    baseline = nas.MovingAverage(decay=0.9)
    gen = torch.Generator().manual_seed(4)
    p_before = float(ctrl.evaluate(_all_tokens()).log_prob.detach().exp()[17])
    for _ in range(150):
        out = ctrl.sample(32, generator=gen)
        r = rewards[torch.tensor([SPACE.index(a) for a in ctrl.architectures(out)])]
        loss = nas.reinforce_loss(out, r, baseline.advance(r), entropy_weight=1e-3)
        opt.zero_grad()
        loss.backward()
        opt.step()
    probs = ctrl.evaluate(_all_tokens()).log_prob.detach().exp()
    assert p_before < 0.1
    assert int(probs.argmax()) == 17 and float(probs[17]) > 0.9


def test_moving_average_baseline() -> None:
    b = nas.MovingAverage(decay=0.5)
    assert b.advance(torch.tensor([1.0, 3.0])) == 2.0  # the first batch: its own mean
    assert b.advance(torch.tensor([4.0])) == 2.0  # then the value before the batch
    assert b.value == pytest.approx(3.0)
    with pytest.raises(InvalidArgumentError, match=r"decay must be in \[0, 1\), got 1.0"):
        nas.MovingAverage(decay=1.0)


def test_controller_bad_input() -> None:
    ctrl = _controller()
    with pytest.raises(ShapeMismatchError, match=r"tokens must have shape \(n, 5\)"):
        ctrl.evaluate(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(InvalidArgumentError, match="every token must be below its number of choices"):
        ctrl.evaluate(torch.tensor([[0, 1, 0, 0, 0]]))
    with pytest.raises(ShapeMismatchError, match="one entry per sampled architecture"):
        nas.reinforce_loss(ctrl.sample(3), torch.zeros(4), 0.0)
    with pytest.raises(InvalidArgumentError, match="hidden must be a positive integer"):
        nas.Controller(SPACE, hidden=0)


def test_supervised_loss_is_the_negative_log_likelihood() -> None:
    ctrl = _controller()
    tokens = _all_tokens()[:7]
    expected = -ctrl.evaluate(tokens).log_prob.mean()
    torch.testing.assert_close(nas.supervised_loss(ctrl, tokens), expected)


def test_memory_buffer_stores_then_replaces_at_random() -> None:
    buf = nas.MemoryBuffer(capacity=10, sample_size=4, replace=3, seed=0)
    first = torch.arange(6 * 5).reshape(6, 5)
    assert buf.add(first) == 6 and len(buf) == 6 and not buf.full
    assert buf.add(first + 1000) == 4 and buf.full
    assert buf.tokens is not None
    torch.testing.assert_close(buf.tokens[6:], (first + 1000)[:4])
    before = buf.tokens.clone()
    assert buf.add(first + 2000) == 3
    changed = (buf.tokens != before).any(1)
    assert int(changed.sum()) == 3 and len(buf) == 10
    assert {tuple(r) for r in buf.tokens[changed].tolist()} == {tuple(r) for r in (first + 2000)[:3].tolist()}
    s = buf.sample()
    assert s.shape == (4, 5)
    stored = {tuple(r) for r in buf.tokens.tolist()}
    assert len({tuple(r) for r in s.tolist()}) == 4 and all(tuple(r) in stored for r in s.tolist())


def test_memory_buffer_bad_input() -> None:
    with pytest.raises(
        InvalidArgumentError, match=r"buffer size \(capacity=50\) is below the sample size \(sample_size=100\)"
    ):
        nas.MemoryBuffer(capacity=50, sample_size=100)
    buf = nas.MemoryBuffer(capacity=10, sample_size=4)
    with pytest.raises(InvalidArgumentError, match="holds 0 architectures, fewer than sample_size=4"):
        buf.sample()
    buf.add(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(InvalidArgumentError, match="holds 2 architectures"):
        buf.sample()
    with pytest.raises(ShapeMismatchError, match="do not fit a buffer of length 5"):
        buf.add(torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(InvalidArgumentError, match="supervised_start=5 must come after buffer_start=5"):
        nas.ENASConfig(memory=True, buffer_start=5, supervised_start=5)
    with pytest.raises(InvalidArgumentError, match="below the sample size"):
        nas.ENASConfig(memory=True, capacity=10, sample_size=20)


def test_conditioning_and_spread_vanish_when_the_controller_ignores_its_inputs() -> None:
    ctrl = _controller()
    out = ctrl.sample(200, generator=torch.Generator().manual_seed(5))
    assert out.conditioning() > 0.01 and nas.relative_spread(out.hidden.detach()) > 0.01
    with torch.no_grad():
        ctrl.embedding.weight.zero_()  # every input is the same: the policy cannot depend on the past
    out = ctrl.sample(200, generator=torch.Generator().manual_seed(5))
    assert out.conditioning() < 1e-12 and nas.relative_spread(out.hidden.detach()) < 1e-12
    # the exact per-step conditionals of the zero-input controller are the product of the step marginals
    probs = ctrl.evaluate(_all_tokens()).log_prob.detach().exp()
    marginals = [p[0] for p in out.probs]
    product = torch.tensor([
        float(torch.prod(torch.stack([marginals[t][tok] for t, tok in enumerate(SPACE.encode(a))])))
        for a in SPACE.enumerate()
    ], dtype=torch.float64)  # fmt: skip
    torch.testing.assert_close(probs, product)
