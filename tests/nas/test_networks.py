"""Networks: the supernet with a fixed architecture equals a stand-alone network with the same weights; the
relaxation equals the child at one-hot weights; a hand-written forward pass; bad input."""

from __future__ import annotations

import pytest
import torch

from nestopt import nas
from nestopt.errors import InvalidArgumentError, ShapeMismatchError

SPACE = nas.CellSpace(nodes=4, ops=("tanh", "relu", "sigmoid", "identity"))


def _supernet() -> nas.Supernet:
    torch.manual_seed(0)
    return nas.Supernet(SPACE, in_features=6, num_classes=3, width=5).double()


def test_supernet_child_equals_a_standalone_network_with_the_same_weights(f64: torch.dtype) -> None:
    net = _supernet()
    x = torch.randn(7, 6)
    for arch in SPACE.sample(20, torch.Generator().manual_seed(1)):
        torch.manual_seed(123)
        alone = nas.CellNetwork(SPACE, arch, 6, 3, 5)  # its own initialization: overwritten below
        alone.stem.load_state_dict(net.stem.state_dict())
        alone.head.load_state_dict(net.head.state_dict())
        for i, p in enumerate(arch.prev, start=1):
            alone.nodes[i - 1].load_state_dict(net.edges[f"{p}_{i}"].state_dict())
        torch.testing.assert_close(net(x, arch), alone(x), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(net(x, arch), net.child(arch)(x), rtol=1e-12, atol=1e-12)


def test_child_holds_copies_and_reads_only_its_connections(f64: torch.dtype) -> None:
    net = _supernet()
    arch = SPACE.parse("relu, 0>tanh, 0>sigmoid, 2>identity")
    child = net.child(arch)
    with torch.no_grad():
        child.stem.weight.add_(1.0)
    assert not torch.equal(child.stem.weight, net.stem.weight)
    # the child's output does not depend on the connections it does not use
    x = torch.randn(4, 6)
    before = net(x, arch)
    with torch.no_grad():
        net.edges["1_2"].weight.normal_()
        net.edges["1_3"].weight.normal_()
    torch.testing.assert_close(net(x, arch), before)


def test_forward_pass_by_hand(f64: torch.dtype) -> None:
    net = _supernet()
    arch = SPACE.parse("tanh, 0>relu, 1>sigmoid, 1>identity")
    x = torch.randn(3, 6)
    n0 = torch.tanh(x @ net.stem.weight.T + net.stem.bias)
    e = {k: (m.weight, m.bias) for k, m in net.edges.items()}
    n1 = torch.relu(n0 @ e["0_1"][0].T + e["0_1"][1])
    n2 = torch.sigmoid(n1 @ e["1_2"][0].T + e["1_2"][1])
    n3 = n1 @ e["1_3"][0].T + e["1_3"][1]
    expected = ((n0 + n1 + n2 + n3) / 4) @ net.head.weight.T + net.head.bias
    torch.testing.assert_close(net(x, arch), expected)


def test_relaxation_equals_the_child_at_one_hot_weights(f64: torch.dtype) -> None:
    net = _supernet()
    x = torch.randn(5, 6)
    n_ops = len(SPACE.ops)
    for arch in SPACE.sample(10, torch.Generator().manual_seed(2)):
        tokens = SPACE.encode(arch)
        logits = {"architecture/node0": torch.full((n_ops,), -torch.inf)}
        logits["architecture/node0"][tokens[0]] = 0.0
        for i in range(1, SPACE.nodes):
            w = torch.full((i, n_ops), -torch.inf)
            w[tokens[2 * i - 1], tokens[2 * i]] = 0.0
            logits[f"architecture/node{i}"] = w
        torch.testing.assert_close(net(x, logits), net(x, arch), rtol=1e-12, atol=1e-12)
        family = nas.ArchitectureWeights(SPACE)
        assert family.derive(logits) == arch


def test_relaxation_at_uniform_weights_averages_every_choice(f64: torch.dtype) -> None:
    space = nas.CellSpace(nodes=2, ops=("relu", "identity"))
    torch.manual_seed(0)
    net = nas.Supernet(space, in_features=3, num_classes=2, width=4)
    x = torch.randn(6, 3)
    logits = {"architecture/node0": torch.zeros(2), "architecture/node1": torch.zeros(1, 2)}
    s = net.stem(x)
    n0 = 0.5 * (torch.relu(s) + s)
    z = net.edges["0_1"](n0)
    n1 = 0.5 * (torch.relu(z) + z)
    torch.testing.assert_close(net(x, logits), net.head((n0 + n1) / 2))


def test_bad_input() -> None:
    net = nas.Supernet(SPACE, in_features=6, num_classes=3, width=5)
    arch = SPACE.sample(1, torch.Generator().manual_seed(0))[0]
    with pytest.raises(ShapeMismatchError, match=r"expected inputs of shape \(batch, 6\), got \(4, 5\)"):
        net(torch.randn(4, 5), arch)
    with pytest.raises(InvalidArgumentError, match="no architecture logits 'architecture/node0'"):
        net(torch.randn(4, 6), {"other/node0": torch.zeros(4)})
    bad = {f"architecture/node{i}": torch.zeros(4) for i in range(4)}
    with pytest.raises(ShapeMismatchError, match=r"architecture/node1 must have shape \(1, 4\)"):
        net(torch.randn(4, 6), bad)
    with pytest.raises(InvalidArgumentError, match="choice must be an Architecture or a tree"):
        net(torch.randn(4, 6), "relu")
    other = nas.CellSpace(nodes=4, ops=("tanh", "relu"))
    with pytest.raises(InvalidArgumentError, match="operation 'sigmoid' is not in the space"):
        nas.CellNetwork(other, SPACE.parse("sigmoid, 0>tanh, 0>tanh, 0>tanh"), 6, 3, 5)
    with pytest.raises(InvalidArgumentError, match="width must be a positive integer, got 0"):
        nas.Supernet(SPACE, in_features=6, num_classes=3, width=0)
