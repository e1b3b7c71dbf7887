"""Graph similarity of cells, and how well a set of embeddings (controller hidden states) reflects it.

For two cells :math:`a, b` of the same space:

* ``shared_activations``: nodes with the same activation, :math:`\\#\\{i : \\sigma^a_i = \\sigma^b_i\\}`;
* ``activations_in_common``: activations the two use in common, counted with multiplicity,
  :math:`\\sum_{op} \\min(\\#_a op, \\#_b op)` (blind to where they are);
* ``shared_connections``: connections in both, :math:`|E_a \\cap E_b|` (every node but the first has one
  incoming edge, so this counts the nodes that read the same earlier node);
* ``graph_similarity``: shared activations plus shared connections, the number of decisions two cells share.

:func:`embedding_correlation` measures, over all pairs of a sample, the Spearman rank correlation between the
*closeness* of two embeddings, :math:`-\\|h_a - h_b\\|`, and each similarity: positive when cells with closer
embeddings are more alike (Adam & Lorraine, 2019, use the distance, so their correlations have the other
sign). :func:`relative_spread` says how far embeddings are from identical.

Example:
    >>> from nestopt import nas
    >>> space = nas.CellSpace(nodes=3, ops=("tanh", "relu"))
    >>> a, b = space.parse("relu, 0>tanh, 1>relu"), space.parse("tanh, 0>tanh, 0>relu")
    >>> nas.shared_activations(a, b), nas.activations_in_common(a, b), nas.shared_connections(a, b)
    (2, 2, 1)
    >>> round(nas.spearman([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 20.0, 40.0]), 4)
    0.9487
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.nas.space import Architecture

__all__ = [
    "SIMILARITIES",
    "activations_in_common",
    "embedding_correlation",
    "graph_similarity",
    "rank",
    "relative_spread",
    "shared_activations",
    "shared_connections",
    "spearman",
]


def _pair(a: Architecture, b: Architecture) -> None:
    if a.nodes != b.nodes:
        raise InvalidArgumentError(f"cannot compare cells of {a.nodes} and {b.nodes} nodes")


def shared_activations(a: Architecture, b: Architecture) -> int:
    """The number of nodes with the same activation in both cells."""
    _pair(a, b)
    return sum(x == y for x, y in zip(a.ops, b.ops))


def activations_in_common(a: Architecture, b: Architecture) -> int:
    """The activations both cells use, counted with multiplicity, wherever they are."""
    _pair(a, b)
    ca, cb = Counter(a.ops), Counter(b.ops)
    return sum(min(n, cb[op]) for op, n in ca.items())


def shared_connections(a: Architecture, b: Architecture) -> int:
    """The number of connections ``(j, i)`` both cells have."""
    _pair(a, b)
    return len(set(a.edges) & set(b.edges))


def graph_similarity(a: Architecture, b: Architecture) -> int:
    """Shared activations plus shared connections: how many of their decisions two cells share."""
    return shared_activations(a, b) + shared_connections(a, b)


SIMILARITIES: dict[str, Callable[[Architecture, Architecture], int]] = {
    "graph similarity": graph_similarity,
    "shared activations": shared_activations,
    "activations in common": activations_in_common,
    "shared connections": shared_connections,
}
"""The similarity measures :func:`embedding_correlation` reports, by name."""


def rank(x: Tensor) -> Tensor:
    """The ranks ``1..n`` of a 1-D tensor's entries, ties given the mean of the ranks they span (float64)."""
    x = torch.as_tensor(x).reshape(-1)
    n = x.numel()
    _, inverse, counts = torch.unique(x, sorted=True, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)  # the last rank of each distinct value
    mean_rank = ends - (counts.to(torch.float64) - 1) / 2
    return mean_rank[inverse] if n else x.to(torch.float64)


def spearman(x: Sequence[float] | Tensor, y: Sequence[float] | Tensor) -> float:
    """Spearman's rank correlation: the Pearson correlation of the (tie-averaged) ranks.

    Returns ``nan`` when either sample is constant (the correlation is undefined).
    """
    tx = torch.as_tensor(x).detach().to("cpu", torch.float64).reshape(-1)
    ty = torch.as_tensor(y).detach().to("cpu", torch.float64).reshape(-1)
    if tx.numel() != ty.numel() or tx.numel() < 2:
        raise ShapeMismatchError(f"spearman needs two samples of the same size >= 2, got {tx.numel()} and {ty.numel()}")
    rx, ry = rank(tx), rank(ty)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = float(rx.norm() * ry.norm())
    return float((rx * ry).sum()) / denom if denom > 0 else float("nan")


def _pairs(n: int) -> tuple[Tensor, Tensor]:
    i, j = torch.triu_indices(n, n, offset=1)
    return i, j


def embedding_correlation(embeddings: Tensor, archs: Sequence[Architecture]) -> dict[str, float]:
    """For every measure of :data:`SIMILARITIES`, Spearman's correlation over all pairs of ``archs`` between
    the closeness of their embeddings, :math:`-\\|h_a - h_b\\|_2`, and their similarity.

    Args:
        embeddings: ``(n, d)``, one row per architecture (a controller's hidden states, say).
        archs: the ``n`` architectures.
    """
    if embeddings.dim() != 2 or embeddings.shape[0] != len(archs):
        raise ShapeMismatchError(
            f"embeddings must have one row per architecture, got shape {tuple(embeddings.shape)} for {len(archs)}"
        )
    i, j = _pairs(len(archs))
    closeness = -(embeddings[i] - embeddings[j]).to(torch.float64).norm(dim=1)
    pairs = list(zip(i.tolist(), j.tolist()))
    return {
        name: spearman(closeness, [float(fn(archs[a], archs[b])) for a, b in pairs])
        for name, fn in SIMILARITIES.items()
    }


def relative_spread(embeddings: Tensor) -> float:
    """How far a set of embeddings is from identical: the mean pairwise distance over the mean norm,
    :math:`\\overline{\\|h_a - h_b\\|} / \\overline{\\|h_a\\|}` (0 when all rows are equal)."""
    if embeddings.dim() != 2 or embeddings.shape[0] < 2:
        raise ShapeMismatchError(f"relative_spread needs at least two rows, got shape {tuple(embeddings.shape)}")
    h = embeddings.to(torch.float64)
    i, j = _pairs(h.shape[0])
    scale = float(h.norm(dim=1).mean())
    return float((h[i] - h[j]).norm(dim=1).mean()) / scale if scale > 0 else 0.0
