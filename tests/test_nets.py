"""nestopt.nets: seeded layers and MLPs hold exactly torch's default initialization, without touching the
global random state."""

from __future__ import annotations

import itertools

import pytest
import torch

from nestopt.errors import InvalidArgumentError
from nestopt.nets import ACTIVATIONS, Activation, mlp, seeded_linear


def _reference(sizes: list[int], seed: int, act: type[torch.nn.Module]) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize(("name", "module"), [("relu", torch.nn.ReLU), ("tanh", torch.nn.Tanh)])
def test_same_numbers_and_function_as_torch_default_layers(name: str, module: type[torch.nn.Module]) -> None:
    sizes = [5, 7, 6, 3]
    net = mlp(sizes, name, generator=torch.Generator().manual_seed(4))
    ref = _reference(sizes, 4, module)
    assert [k for k, _ in net.named_parameters()] == [k for k, _ in ref.named_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), ref.parameters()))
    x = torch.randn(9, 5)
    torch.testing.assert_close(net(x), ref(x), rtol=0, atol=0)


def test_an_int_seed_is_a_fresh_generator() -> None:
    a, b = mlp([3, 4, 2], generator=11), mlp([3, 4, 2], generator=torch.Generator().manual_seed(11))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_a_generator_leaves_the_global_random_state_alone() -> None:
    torch.manual_seed(0)
    before = torch.get_rng_state()
    mlp([10, 20, 3], generator=1)
    seeded_linear(4, 2, torch.Generator().manual_seed(2))
    assert torch.equal(torch.get_rng_state(), before)


def test_without_a_generator_it_is_torchs_linear() -> None:
    torch.manual_seed(3)
    layer = seeded_linear(6, 2, None)
    torch.manual_seed(3)
    ref = torch.nn.Linear(6, 2)
    assert torch.equal(layer.weight, ref.weight) and torch.equal(layer.bias, ref.bias)


def test_weights_lie_within_the_default_bound() -> None:
    layer = seeded_linear(400, 300, torch.Generator().manual_seed(0))
    bound, largest = 1 / 400**0.5, float(layer.weight.detach().abs().max())
    assert 0.99 * bound < largest <= bound
    assert seeded_linear(3, 2, torch.Generator(), bias=False).bias is None


def test_every_activation_runs() -> None:
    x = torch.linspace(-2, 2, 5)
    for name, fn in ACTIVATIONS.items():
        torch.testing.assert_close(Activation(name)(x), fn(x))
    assert repr(Activation("silu")) == "Activation(silu)"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: mlp([3]), "sizes must give at least"),
        (lambda: mlp([3, 0, 2]), "fan_out must be a positive integer"),
        (lambda: mlp([3, 2], "gelu"), "activation must be one of"),
        (lambda: mlp([3, 2], generator="seed"), "generator must be a torch.Generator, an int seed or None"),
    ],
)
def test_bad_arguments_name_themselves(call, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        call()
