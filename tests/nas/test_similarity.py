"""Graph similarity measures by hand, Spearman's correlation against scipy and closed forms, embedding checks."""

from __future__ import annotations

import itertools

import pytest
import torch

from nestopt import nas
from nestopt.errors import InvalidArgumentError, ShapeMismatchError

SPACE = nas.CellSpace(nodes=4, ops=("tanh", "relu", "sigmoid"))


def test_similarities_by_hand() -> None:
    a = SPACE.parse("relu, 0>tanh, 1>relu, 1>relu")
    b = SPACE.parse("tanh, 0>relu, 0>relu, 1>sigmoid")
    assert nas.shared_activations(a, b) == 1  # node 2: relu
    assert nas.activations_in_common(a, b) == 3  # a: relu x3, tanh; b: tanh, relu x2, sigmoid
    assert nas.shared_connections(a, b) == 2  # (0, 1) and (1, 3)
    assert nas.graph_similarity(a, b) == 3


def test_similarity_bounds_and_symmetry() -> None:
    archs = SPACE.sample(30, torch.Generator().manual_seed(0))
    for a, b in itertools.combinations(archs, 2):
        for fn in nas.SIMILARITIES.values():
            assert fn(a, b) == fn(b, a)
        assert 0 <= nas.shared_activations(a, b) <= nas.activations_in_common(a, b) <= SPACE.nodes
        assert 0 <= nas.shared_connections(a, b) <= SPACE.nodes - 1
    a = archs[0]
    assert nas.graph_similarity(a, a) == 2 * SPACE.nodes - 1
    with pytest.raises(InvalidArgumentError, match="cannot compare cells of 4 and 2 nodes"):
        nas.shared_activations(a, nas.Architecture(("relu", "relu"), (0,)))


def test_rank_averages_ties() -> None:
    r = nas.rank(torch.tensor([3.0, 1.0, 3.0, 2.0, 3.0]))
    assert r.tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]


def test_spearman_against_scipy_and_closed_forms() -> None:
    stats = pytest.importorskip("scipy.stats")
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        x = torch.randint(0, 5, (200,), generator=gen).double()  # many ties
        y = x + torch.randn(200, generator=gen, dtype=torch.float64)
        assert abs(nas.spearman(x, y) - stats.spearmanr(x.numpy(), y.numpy()).statistic) < 1e-12
    x = torch.arange(10.0)
    assert nas.spearman(x, x**3) == pytest.approx(1.0)
    assert nas.spearman(x, -x) == pytest.approx(-1.0)
    assert nas.spearman(x, torch.ones(10)) != nas.spearman(x, torch.ones(10))  # undefined: nan
    with pytest.raises(ShapeMismatchError, match="same size"):
        nas.spearman([1.0, 2.0], [1.0])


def test_embedding_correlation_sees_an_encoding_of_the_decisions() -> None:
    archs = SPACE.sample(60, torch.Generator().manual_seed(1))
    tokens = SPACE.to_tensor(archs)
    # one-hot encoding of every decision: squared distance = 2 * (number of differing decisions)
    onehot = torch.cat([torch.nn.functional.one_hot(tokens[:, t], c) for t, c in enumerate(SPACE.choices)], 1)
    corr = nas.embedding_correlation(onehot.double(), archs)
    assert corr["graph similarity"] == pytest.approx(1.0)  # closeness is a monotone function of it
    assert corr["shared activations"] > 0.3 and corr["shared connections"] > 0.3
    noise = torch.randn(60, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert abs(nas.embedding_correlation(noise, archs)["graph similarity"]) < 0.15
    assert nas.relative_spread(torch.ones(5, 3)) == 0.0
    assert nas.relative_spread(noise) > 1.0
    with pytest.raises(ShapeMismatchError, match="one row per architecture"):
        nas.embedding_correlation(noise[:10], archs)
