"""Transforms against hand computations: schedules, clipping, decay, coefficient forms, chains and errors."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from nestopt.errors import InvalidArgumentError, OptimizerWarning
from nestopt.optim import functional, transforms


def _step(t: transforms.Transform, updates, params=None, state=None, hparams=None):
    params = params if params is not None else {k: torch.zeros_like(v) for k, v in updates.items()}
    state = t.init(params) if state is None else state
    return t.update(updates, state, params, hparams or {})


def test_schedule_uses_the_step_count_kept_in_the_state() -> None:
    seen = []

    def schedule(step: int) -> float:
        seen.append(step)
        return 1.0 / (1 + step)

    t = transforms.scale_by_schedule(schedule)
    u, state = {"w": torch.tensor([2.0, -4.0])}, None
    outs = []
    for _ in range(4):
        out, state = _step(t, u, state=state)
        outs.append(out["w"])
    assert seen == [0, 1, 2, 3] and state == {"step": 4}
    for k, o in enumerate(outs):
        torch.testing.assert_close(o, torch.tensor([2.0, -4.0]) / (1 + k), rtol=0, atol=0)


def test_scheduled_learning_rate_in_a_functional_optimizer() -> None:
    """Warm-up by hand: w_k = w_{k-1} - lr * min(1, (k + 1) / 3) * g."""
    opt = functional.from_transform(
        transforms.chain(
            transforms.scale_by_schedule(lambda step: min(1.0, (step + 1) / 3)), transforms.scale_by_learning_rate(0.1)
        )
    )
    w, state = {"w": torch.tensor([1.0], dtype=torch.float64)}, None
    state = opt.init(w)
    expected = 1.0
    for k in range(5):
        w, state = opt.update({"w": torch.tensor([1.0], dtype=torch.float64)}, state, w, {})
        expected -= 0.1 * min(1.0, (k + 1) / 3)
        assert float(w["w"]) == pytest.approx(expected, rel=0, abs=1e-15)


def test_clip_by_global_norm_by_hand() -> None:
    t = transforms.clip_by_global_norm(2.0)
    u = {"a": torch.tensor([3.0, 0.0], dtype=torch.float64), "b": torch.tensor([[0.0, 4.0]], dtype=torch.float64)}
    out, _ = _step(t, u)  # joint norm 5 > 2: scaled by 2 / 5
    torch.testing.assert_close(out["a"], torch.tensor([1.2, 0.0], dtype=torch.float64))
    torch.testing.assert_close(out["b"], torch.tensor([[0.0, 1.6]], dtype=torch.float64))
    small = {"a": torch.tensor([0.3, 0.4], dtype=torch.float64)}
    out, _ = _step(t, small)  # norm 0.5 <= 2: unchanged, exactly
    assert torch.equal(out["a"], small["a"])


def test_clip_by_global_norm_is_differentiable_at_zero() -> None:
    u = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    out, _ = _step(transforms.clip_by_global_norm(1.0), {"w": u})
    (g,) = torch.autograd.grad(out["w"].sum(), u)
    torch.testing.assert_close(g, torch.ones(3, dtype=torch.float64))


def test_clip_by_value_by_hand() -> None:
    out, _ = _step(transforms.clip(0.5), {"w": torch.tensor([-3.0, -0.25, 0.5, 7.0])})
    assert torch.equal(out["w"], torch.tensor([-0.5, -0.25, 0.5, 0.5]))


def test_decoupled_decay_and_learning_rate_tree() -> None:
    t = transforms.chain(transforms.add_decayed_weights({"a": 0.5, "b": 0.0}), transforms.scale_by_learning_rate(0.1))
    params = {"a": torch.tensor([2.0]), "b": torch.tensor([2.0])}
    out, _ = _step(t, {"a": torch.tensor([1.0]), "b": torch.tensor([1.0])}, params)
    torch.testing.assert_close(out["a"], torch.tensor([-0.1 * (1.0 + 0.5 * 2.0)]))
    torch.testing.assert_close(out["b"], torch.tensor([-0.1]))


@pytest.mark.parametrize(
    "lr",
    [0.1, torch.tensor(0.1), {"w": 0.1}, lambda h: h["lr"], lambda h: {"w": h["lr"]}],
    ids=["float", "tensor", "tree", "fn", "fn-tree"],
)
def test_learning_rate_forms_agree(lr) -> None:
    opt = functional.sgd(lr=lr, momentum=0.9)
    w = {"w": torch.ones(2)}
    new, _ = opt.update({"w": torch.ones(2)}, opt.init(w), w, {"lr": torch.tensor(0.1)})
    torch.testing.assert_close(new["w"], torch.full((2,), 0.9))
    assert opt.uses_hparams == callable(lr)


def test_momentum_as_a_hyperparameter_gets_a_gradient() -> None:
    opt = functional.sgd(lr=0.1, momentum=lambda h: h["mu"])
    mu = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    w = {"w": torch.ones(1, dtype=torch.float64)}
    state = opt.init(w)
    for _ in range(2):
        w, state = opt.update({"w": torch.ones(1, dtype=torch.float64)}, state, w, {"mu": mu})
    (g,) = torch.autograd.grad(w["w"].sum(), mu)  # w_2 = 1 - 0.1 - 0.1 (1 + mu)
    assert float(g) == pytest.approx(-0.1)


def test_complex_beta_as_magnitude_and_phase_hyperparameters() -> None:
    """beta = r e^{i phi} from two hyperparameters; d w_2 / d phi by hand."""
    r, phi = 0.5, 0.3
    opt = functional.complex_momentum(lr=1.0, beta=lambda h: (h["r"], h["phi"]))
    h = {
        "r": torch.tensor(r, dtype=torch.float64, requires_grad=True),
        "phi": torch.tensor(phi, dtype=torch.float64, requires_grad=True),
    }
    w = {"w": torch.zeros(1, dtype=torch.float64)}
    state = opt.init(w)
    for _ in range(2):
        w, state = opt.update({"w": torch.ones(1, dtype=torch.float64)}, state, w, h)
    # mu_1 = -1, mu_2 = -beta - 1, w_2 = Re(mu_1 + mu_2) = -2 - r cos(phi)
    assert float(w["w"].detach()) == pytest.approx(-2 - r * math.cos(phi))
    g_r, g_phi = torch.autograd.grad(w["w"].sum(), [h["r"], h["phi"]])
    assert float(g_r) == pytest.approx(-math.cos(phi)) and float(g_phi) == pytest.approx(r * math.sin(phi))


def test_functional_sgd_numbers_are_the_former_formula_bit_for_bit() -> None:
    g = torch.Generator().manual_seed(0)
    lr, mu = 0.07, 0.9
    for nesterov in (False, True):
        opt = functional.sgd(lr=torch.tensor(lr), momentum=mu, nesterov=nesterov)
        w = {"w": torch.randn(5, generator=g)}
        state = opt.init(w)
        ref_w, buf = w["w"].clone(), torch.zeros(5)
        for _ in range(10):
            grad = torch.randn(5, generator=g)
            w, state = opt.update({"w": grad}, state, w, {})
            buf = mu * buf + grad
            ref_w = ref_w - torch.tensor(lr) * ((grad + mu * buf) if nesterov else buf)
        assert torch.equal(w["w"], ref_w)


def test_functional_adam_numbers_are_the_former_formula() -> None:
    g = torch.Generator().manual_seed(0)
    lr, b1, b2, eps, eps_root = 0.01, 0.9, 0.999, 1e-8, 1e-16
    opt = functional.adam(lr=lr)
    w = {"w": torch.randn(5, generator=g, dtype=torch.float64)}
    state = opt.init(w)
    ref, m, v = w["w"].clone(), torch.zeros(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    for t in range(1, 21):
        grad = torch.randn(5, generator=g, dtype=torch.float64)
        w, state = opt.update({"w": grad}, state, w, {})
        m, v = b1 * m + (1 - b1) * grad, b2 * v + (1 - b2) * grad * grad
        ref = ref - lr * (m / (1 - b1**t)) / (torch.sqrt(v / (1 - b2**t) + eps_root) + eps)
    torch.testing.assert_close(w["w"], ref, rtol=1e-13, atol=1e-15)


def test_optimism_first_step_is_plain_and_then_corrects() -> None:
    t = transforms.chain(transforms.scale_by_optimism(strength=0.5), transforms.scale_by_learning_rate(1.0))
    p = {"w": torch.zeros(1)}
    out, state = _step(t, {"w": torch.tensor([2.0])}, p)
    assert float(out["w"]) == -2.0
    out, state = _step(t, {"w": torch.tensor([4.0])}, p, state)
    assert float(out["w"]) == -(4.0 + 0.5 * (4.0 - 2.0))


def test_chain_state_is_a_tuple_and_names_compose() -> None:
    t = transforms.chain(transforms.trace(0.9), transforms.scale_by_learning_rate(lambda h: h["lr"]))
    state = t.init({"w": torch.zeros(2)})
    assert isinstance(state, tuple) and set(state[0]) == {"momentum_buffer"} and state[1] == {}
    assert t.uses_hparams and t.name.startswith("chain(trace(momentum=0.9)")
    with pytest.raises(InvalidArgumentError, match="2-tuple"):
        t.update({"w": torch.zeros(2)}, {}, {"w": torch.zeros(2)}, {"lr": torch.tensor(1.0)})


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: transforms.scale_by_learning_rate(-0.1), "lr"),
        (lambda: transforms.scale_by_learning_rate(float("nan")), "lr"),
        (lambda: transforms.scale_by_learning_rate({"w": -1.0}), "lr"),
        (lambda: transforms.scale_by_learning_rate("0.1"), "lr"),
        (lambda: transforms.trace(float("inf")), "momentum"),
        (lambda: transforms.trace({"w": 0.9}), "momentum"),
        (lambda: transforms.trace(0.0, nesterov=True), "nesterov"),
        (lambda: transforms.scale_by_adam(b1=1.0), "b1"),
        (lambda: transforms.scale_by_adam(b2=-0.1), "b2"),
        (lambda: transforms.scale_by_adam(eps=-1.0), "eps"),
        (lambda: transforms.scale_by_complex_momentum((-0.5, 0.1)), "magnitude"),
        (lambda: transforms.scale_by_complex_momentum(0.5, alpha=complex("nan")), "alpha"),
        (lambda: transforms.scale_by_rms(decay=1.5), "decay"),
        (lambda: transforms.clip_by_global_norm(0.0), "max_norm"),
        (lambda: transforms.clip(-1.0), "max_delta"),
        (lambda: transforms.scale_by_schedule(0.1), "schedule"),  # type: ignore[arg-type]
        (lambda: transforms.chain(transforms.clip(1.0), "sgd"), "argument 1"),  # type: ignore[arg-type]
        (lambda: functional.complex_adam(0.1, betas=(0.9, 1.0)), "beta2"),
        (lambda: functional.optimistic_adam(0.1, betas=(1.2, 0.9)), "beta1"),
        (lambda: functional.from_transform(functional.sgd(0.1)), "Transform"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_name_the_argument(make, match) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        make()


def test_missing_keys_of_a_per_parameter_learning_rate() -> None:
    opt = functional.sgd(lr=lambda h: {"a": h["lr"]})
    w = {"a": torch.zeros(1), "b": torch.zeros(1)}
    with pytest.raises(InvalidArgumentError, match=r"lack keys \['b'\]"):
        opt.update(w, opt.init(w), w, {"lr": torch.tensor(0.1)})


def test_non_decaying_complex_beta_warns() -> None:
    with pytest.warns(OptimizerWarning, match="does not decay"):
        functional.complex_momentum(0.1, beta=1.1j)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        functional.complex_momentum(0.1, beta=0.9j)
