"""The networks of a cell space: one architecture on its own, and the weight-sharing supernet of them all.

A :class:`CellNetwork` is one cell as a plain classifier (stem, one linear map per node, head; see
:mod:`nestopt.nas.space`), the network that the ground truth trains from scratch.

A :class:`Supernet` holds one weight matrix for every possible connection :math:`j \\to i` (ENAS's shared
parameters, Pham et al., 2018), a shared stem and a shared head, and runs either

* a **discrete** child, ``net(x, arch)``: exactly the :class:`CellNetwork` of ``arch`` with the shared
  weights of its connections (:meth:`Supernet.child` copies them out), or
* the **continuous relaxation** of DARTS (Liu et al., 2019), ``net(x, hparams)``: node :math:`i` mixes every
  (previous node, activation) pair with the softmax of its architecture logits :math:`\\alpha_i`,

  .. math::  n_0 = \\sum_{op} \\mathrm{softmax}(\\alpha_0)_{op}\\, op(W_{in} x), \\qquad
             n_i = \\sum_{j < i} \\sum_{op} \\mathrm{softmax}(\\alpha_i)_{j, op}\\, op(W_{j \\to i} n_j),

  which equals the discrete child when every softmax is one-hot. The logits are read from the hyperparameter
  tree under ``"<prefix>/node<i>"`` (:class:`nestopt.nas.ArchitectureWeights`), and the supernet says so
  with ``conditions_on_hparams = True``, so that :class:`nestopt.hparams.Objective` passes them.

Example:
    >>> import torch
    >>> from nestopt import nas
    >>> space = nas.CellSpace(nodes=3, ops=("tanh", "relu"))
    >>> net = nas.Supernet(space, in_features=4, num_classes=3, width=8)
    >>> arch = space.parse("relu, 0>tanh, 0>relu")
    >>> x = torch.randn(5, 4)
    >>> torch.allclose(net(x, arch), net.child(arch)(x))
    True
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from nestopt._validate import positive_int
from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.nas.space import OPS, Architecture, CellSpace

__all__ = ["CellNetwork", "Supernet", "edge_key", "node_key"]


def edge_key(j: int, i: int) -> str:
    """The name of the supernet's weight for the connection ``j -> i``."""
    return f"{j}_{i}"


def node_key(prefix: str, i: int) -> str:
    """The hyperparameter key of node ``i``'s architecture logits."""
    return f"{prefix}/node{i}"


def _sizes(in_features: int, num_classes: int, width: int) -> tuple[int, int, int]:
    return (
        positive_int("in_features", in_features),
        positive_int("num_classes", num_classes),
        positive_int("width", width),
    )


def _check_input(x: Tensor, in_features: int) -> None:
    if x.dim() != 2 or x.shape[1] != in_features:
        raise ShapeMismatchError(f"expected inputs of shape (batch, {in_features}), got {tuple(x.shape)}")


class CellNetwork(nn.Module):
    """One architecture as a stand-alone classifier: stem, node maps, the mean of the nodes, head.

    Args:
        space: the search space (checks ``arch``).
        arch: the cell.
        in_features: the input size.
        num_classes: the number of outputs.
        width: the width of every node.

    Parameters are ``stem``, ``nodes.<i-1>`` (node ``i``'s map from the node it reads) and ``head``, each an
    ``nn.Linear`` with torch's default initialization (seed it with :func:`torch.manual_seed` or
    :func:`nestopt._rng.fork`).
    """

    def __init__(self, space: CellSpace, arch: Architecture, in_features: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.arch = space.check(arch)
        self.in_features, num_classes, width = _sizes(in_features, num_classes, width)
        self.stem = nn.Linear(self.in_features, width)
        self.nodes = nn.ModuleList(nn.Linear(width, width) for _ in arch.prev)
        self.head = nn.Linear(width, num_classes)
        self._acts = [OPS[op] for op in arch.ops]

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.in_features)
        values = [self._acts[0](self.stem(x))]
        for i, (p, layer) in enumerate(zip(self.arch.prev, self.nodes), start=1):
            values.append(self._acts[i](layer(values[p])))
        return self.head(sum(values[1:], values[0]) / len(values))


class Supernet(nn.Module):
    """The weight-sharing network of a cell space: a discrete child or DARTS's relaxation (module docstring).

    Args:
        space: the search space.
        in_features: the input size.
        num_classes: the number of outputs.
        width: the width of every node.
        prefix: the hyperparameter prefix of the architecture logits (the family's name).

    Parameters: ``stem``, ``edges.<j>_<i>`` for every connection ``j -> i`` and ``head``, each an ``nn.Linear``.
    """

    conditions_on_hparams = True

    def __init__(
        self, space: CellSpace, in_features: int, num_classes: int, width: int = 32, *, prefix: str = "architecture"
    ) -> None:
        super().__init__()
        self.space = space
        self.in_features, self.num_classes, self.width = _sizes(in_features, num_classes, width)
        self.prefix = prefix
        self.stem = nn.Linear(self.in_features, self.width)
        self.edges = nn.ModuleDict(
            {edge_key(j, i): nn.Linear(self.width, self.width) for i in range(1, space.nodes) for j in range(i)}
        )
        self.head = nn.Linear(self.width, self.num_classes)
        self._acts = [OPS[op] for op in space.ops]

    def forward(self, x: Tensor, choice: Architecture | Mapping[str, Tensor]) -> Tensor:
        """The logits of the child ``choice`` (an :class:`Architecture`) or of the relaxation at the
        architecture logits in ``choice`` (a hyperparameter tree)."""
        _check_input(x, self.in_features)
        if isinstance(choice, Architecture):
            return self._discrete(x, self.space.check(choice))
        if isinstance(choice, Mapping):
            return self._relaxed(x, choice)
        raise InvalidArgumentError(
            f"choice must be an Architecture or a tree of architecture logits, got {type(choice).__name__}"
        )

    def _discrete(self, x: Tensor, arch: Architecture) -> Tensor:
        acts = [OPS[op] for op in arch.ops]
        values = [acts[0](self.stem(x))]
        for i, p in enumerate(arch.prev, start=1):
            values.append(acts[i](self.edges[edge_key(p, i)](values[p])))
        return self.head(torch.stack(values).mean(0))

    def logits(self, hparams: Mapping[str, Tensor], i: int) -> Tensor:
        """Node ``i``'s architecture logits from a hyperparameter tree, checked: ``(|ops|,)`` for node 0,
        ``(i, |ops|)`` (previous node, activation) for node ``i >= 1``."""
        key = node_key(self.prefix, i)
        if key not in hparams:
            raise InvalidArgumentError(
                f"the hyperparameters have no architecture logits {key!r} (keys: {sorted(hparams)}); build them "
                f"with nestopt.nas.ArchitectureWeights(space, name={self.prefix!r})"
            )
        expected = (len(self.space.ops),) if i == 0 else (i, len(self.space.ops))
        if tuple(hparams[key].shape) != expected:
            raise ShapeMismatchError(f"{key} must have shape {expected}, got {tuple(hparams[key].shape)}")
        return hparams[key]

    def _mix(self, z: Tensor, weights: Tensor) -> Tensor:
        # z: (sources, batch, width); weights: (sources, ops) -> sum_{j, op} w[j, op] op(z_j)
        mixed = torch.stack([act(z) for act in self._acts], dim=-1)
        return torch.einsum("jbwo,jo->bw", mixed, weights)

    def _relaxed(self, x: Tensor, hparams: Mapping[str, Tensor]) -> Tensor:
        w0 = torch.softmax(self.logits(hparams, 0), dim=0)
        values = [self._mix(self.stem(x).unsqueeze(0), w0.unsqueeze(0))]
        for i in range(1, self.space.nodes):
            w = torch.softmax(self.logits(hparams, i).reshape(-1), dim=0).reshape(i, -1)
            z = torch.stack([self.edges[edge_key(j, i)](values[j]) for j in range(i)])
            values.append(self._mix(z, w))
        return self.head(torch.stack(values).mean(0))

    def child(self, arch: Architecture) -> CellNetwork:
        """A stand-alone :class:`CellNetwork` of ``arch`` holding copies of its shared weights."""
        net = CellNetwork(self.space, arch, self.in_features, self.num_classes, self.width)
        net.to(device=self.stem.weight.device, dtype=self.stem.weight.dtype)
        with torch.no_grad():
            net.stem.load_state_dict(self.stem.state_dict())
            net.head.load_state_dict(self.head.state_dict())
            for i, (p, layer) in enumerate(zip(arch.prev, net.nodes), start=1):
                layer.load_state_dict(self.edges[edge_key(p, i)].state_dict())
        return net
