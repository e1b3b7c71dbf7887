"""The cell space: encoding round trips, enumeration counts against brute force, uniform sampling, bad input."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from nestopt import nas
from nestopt.errors import InvalidArgumentError, NestoptError


def _brute_force(nodes: int, ops: tuple[str, ...]) -> set[tuple[tuple[str, ...], tuple[int, ...]]]:
    prev_choices = [range(i) for i in range(1, nodes)]
    return {(o, p) for o in itertools.product(ops, repeat=nodes) for p in itertools.product(*prev_choices)}


@pytest.mark.parametrize(
    ("nodes", "ops"), [(1, ("relu",)), (2, ("tanh", "relu")), (3, ("tanh", "relu", "sigmoid")), (4, tuple(nas.OPS))]
)
def test_enumeration_counts_and_round_trips(nodes: int, ops: tuple[str, ...]) -> None:
    space = nas.CellSpace(nodes=nodes, ops=ops)
    archs = list(space.enumerate())
    expected = _brute_force(nodes, ops)
    assert len(space) == len(archs) == len(expected) == len(ops) ** nodes * math.factorial(nodes - 1)
    assert {(a.ops, a.prev) for a in archs} == expected  # every cell exactly once
    for i, arch in enumerate(archs):
        assert space.index(arch) == i
        assert space.decode(space.encode(arch)) == arch
        assert space.parse(str(arch)) == arch
    tokens = space.to_tensor(archs)
    assert tokens.shape == (len(archs), 2 * nodes - 1)
    assert space.from_tensor(tokens) == archs


def test_token_layout_follows_enas() -> None:
    space = nas.CellSpace(nodes=4, ops=("tanh", "relu"))
    assert space.choices == (2, 1, 2, 2, 2, 3, 2)
    arch = space.make(["relu", "tanh", "tanh", "relu"], [0, 1, 0])
    assert space.encode(arch) == (1, 0, 0, 1, 0, 0, 1)
    assert arch.edges == ((0, 1), (1, 2), (0, 3))
    assert str(arch) == "relu, 0>tanh, 1>tanh, 0>relu"


def test_uniform_sampling_covers_the_space_evenly() -> None:
    space = nas.CellSpace(nodes=3, ops=("tanh", "relu"))  # 16 cells
    tokens = space.sample_tokens(16_000, torch.Generator().manual_seed(0))
    counts = torch.bincount(torch.tensor([space.index(a) for a in space.from_tensor(tokens)]), minlength=16)
    # each count is Binomial(16000, 1/16): mean 1000, sd ~ 30.6
    assert int(counts.min()) > 1000 - 5 * 31 and int(counts.max()) < 1000 + 5 * 31
    same = space.sample(5, torch.Generator().manual_seed(3)) == space.sample(5, torch.Generator().manual_seed(3))
    assert same


def test_a_node_without_a_valid_previous_node_is_named() -> None:
    with pytest.raises(InvalidArgumentError, match="node 2 has no valid previous node: it reads node 2"):
        nas.Architecture(("relu", "tanh", "relu"), (0, 2))
    with pytest.raises(InvalidArgumentError, match="node 1 has no valid previous node: it reads node -1"):
        nas.Architecture(("relu", "tanh"), (-1,))
    with pytest.raises(InvalidArgumentError, match="needs 2 previous-node choices"):
        nas.Architecture(("relu", "tanh", "relu"), (0,))
    space = nas.CellSpace(nodes=3, ops=("tanh", "relu"))
    with pytest.raises(InvalidArgumentError, match=r"token 3 \(previous node of node 2\) must be in 0..1, got 2"):
        space.decode([0, 0, 1, 2, 0])
    with pytest.raises(InvalidArgumentError, match="node 2 has no valid previous node"):
        space.parse("relu, 0>tanh, 5>relu")


def test_an_operation_not_in_the_space_is_named() -> None:
    with pytest.raises(InvalidArgumentError, match="operation 'swish' is not one the space can offer"):
        nas.CellSpace(nodes=3, ops=("tanh", "swish"))
    space = nas.CellSpace(nodes=2, ops=("tanh", "relu"))
    with pytest.raises(
        InvalidArgumentError, match=r"operation 'sigmoid' is not in the space; it has \('tanh', 'relu'\)"
    ):
        space.make(["sigmoid", "tanh"], [0])
    with pytest.raises(InvalidArgumentError, match="operation 'gelu' is not in the space"):
        space.parse("gelu, 0>tanh")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: nas.CellSpace(nodes=0), "nodes must be a positive integer, got 0"),
        (lambda: nas.CellSpace(ops=()), "ops must name at least one operation"),
        (lambda: nas.CellSpace(ops=("relu", "relu")), "must not repeat"),
        (lambda: nas.CellSpace(nodes=2).architecture(100), r"index must be an integer in 0..15, got 100"),
        (lambda: nas.CellSpace(nodes=2).decode([0, 0]), "has 3 tokens, got 2"),
        (
            lambda: nas.CellSpace(nodes=2).check(nas.Architecture(("relu",), ())),
            "has 1 nodes but the space's cells have 2",
        ),
        (lambda: nas.CellSpace(nodes=1).parse("relu | tanh"), "operation 'relu | tanh' is not in the space"),
        (lambda: nas.CellSpace(nodes=2).parse("relu, x>tanh"), "cannot read an architecture"),
    ],
)
def test_bad_input_raises_named_errors(call, match: str) -> None:
    with pytest.raises(NestoptError, match=match):
        call()
