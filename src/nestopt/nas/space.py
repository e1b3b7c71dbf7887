"""The cell search space: a DAG of ``N`` nodes, each choosing an activation and the earlier node it reads.

An architecture (ENAS's recurrent-cell space, Pham et al., 2018, used here for feed-forward cells) is

.. math::  n_0 = \\sigma_0(W_{in} x), \\qquad n_i = \\sigma_i\\big(W_{p_i \\to i}\\, n_{p_i}\\big) \\quad (i = 1..N-1),
           \\qquad \\text{output} = W_{out} \\tfrac1N \\textstyle\\sum_i n_i,

with an activation :math:`\\sigma_i` from the space's operations and a previous node :math:`p_i \\in \\{0, ..,
i-1\\}`. ENAS's controller emits it as the token sequence

.. math::  (\\sigma_0,\\; p_1, \\sigma_1,\\; p_2, \\sigma_2,\\; \\dots,\\; p_{N-1}, \\sigma_{N-1}),

whose ``2N - 1`` positions have ``|ops|, 1, |ops|, 2, |ops|, ..., N-1, |ops|`` choices, so the space holds
:math:`|\\text{ops}|^N (N-1)!` architectures. :meth:`CellSpace.index` numbers them in mixed radix over the
tokens (the first token most significant), which :meth:`CellSpace.enumerate` follows.

Example:
    >>> from nestopt import nas
    >>> space = nas.CellSpace(nodes=3, ops=("tanh", "relu"))
    >>> len(space), space.choices
    (16, (2, 1, 2, 2, 2))
    >>> arch = space.make(["relu", "tanh", "relu"], [0, 0])
    >>> str(arch), space.encode(arch), space.index(arch)
    ('relu, 0>tanh, 0>relu', (1, 0, 0, 0, 1), 9)
    >>> space.architecture(9) == arch == space.decode((1, 0, 0, 0, 1)) == space.parse(str(arch))
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from nestopt._validate import positive_int
from nestopt.errors import InvalidArgumentError

__all__ = ["OPS", "Architecture", "CellSpace"]

OPS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "identity": lambda x: x,
}
"""The activations a space can offer (ENAS's recurrent-cell operations), by name."""


@dataclass(frozen=True)
class Architecture:
    """One cell: ``ops[i]`` is node ``i``'s activation, ``prev[i - 1]`` the earlier node that node ``i`` reads.

    Node 0 reads the input, so ``prev`` has one entry fewer than ``ops``.

    Raises:
        InvalidArgumentError: a node with no valid previous node (``prev[i - 1]`` outside ``0..i-1``), or
            lengths that do not fit together.

    Example:
        >>> Architecture(("relu", "tanh"), (0,)).edges
        ((0, 1),)
        >>> Architecture(("relu", "tanh"), (1,))
        Traceback (most recent call last):
        ...
        nestopt.errors.InvalidArgumentError: node 1 has no valid previous node: it reads node 1, but node 1 can only read an earlier node (0..0)
    """

    ops: tuple[str, ...]
    prev: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "prev", tuple(self.prev))
        if not self.ops:
            raise InvalidArgumentError("an architecture needs at least one node, got ops=()")
        if len(self.prev) != len(self.ops) - 1:
            raise InvalidArgumentError(
                f"an architecture with {len(self.ops)} nodes needs {len(self.ops) - 1} previous-node choices "
                f"(node 0 reads the input), got prev={self.prev}"
            )
        for i, p in enumerate(self.prev, start=1):
            if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < i:
                raise InvalidArgumentError(
                    f"node {i} has no valid previous node: it reads node {p!r}, but node {i} can only read an "
                    f"earlier node (0..{i - 1})"
                )

    @property
    def nodes(self) -> int:
        return len(self.ops)

    @property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """The connections ``(j, i)``: node ``i`` reads node ``j``."""
        return tuple((p, i) for i, p in enumerate(self.prev, start=1))

    def __str__(self) -> str:
        return ", ".join([self.ops[0]] + [f"{p}>{op}" for p, op in zip(self.prev, self.ops[1:])])


class CellSpace:
    """The cells of ``nodes`` nodes over the activations ``ops`` (see the module docstring).

    Args:
        nodes: the number of nodes ``N`` of a cell.
        ops: the activation names, each a key of :data:`OPS`.

    Raises:
        InvalidArgumentError: an operation name not in :data:`OPS`, a repeated one, or ``nodes < 1``.
    """

    def __init__(self, nodes: int = 5, ops: Sequence[str] = ("tanh", "relu", "sigmoid", "identity")) -> None:
        self.nodes = positive_int("nodes", nodes)
        ops = tuple(ops)
        if not ops:
            raise InvalidArgumentError("ops must name at least one operation, got ()")
        for op in ops:
            if op not in OPS:
                raise InvalidArgumentError(f"operation {op!r} is not one the space can offer; choose from {tuple(OPS)}")
        if len(set(ops)) != len(ops):
            raise InvalidArgumentError(f"ops must not repeat an operation, got {ops}")
        self.ops: tuple[str, ...] = ops
        self.choices: tuple[int, ...] = (len(ops), *(c for i in range(1, self.nodes) for c in (i, len(ops))))
        """The number of choices of each token position."""

    def __repr__(self) -> str:
        return f"CellSpace(nodes={self.nodes}, ops={self.ops})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CellSpace) and (self.nodes, self.ops) == (other.nodes, other.ops)

    def __hash__(self) -> int:
        return hash((self.nodes, self.ops))

    def __len__(self) -> int:
        return len(self.ops) ** self.nodes * math.factorial(self.nodes - 1)

    @property
    def num_tokens(self) -> int:
        """The length ``2N - 1`` of an architecture's token sequence."""
        return len(self.choices)

    # -- building and checking -----------------------------------------------------------------------
    def op_index(self, op: str) -> int:
        """The position of activation ``op`` in this space's operations."""
        if op not in self.ops:
            raise InvalidArgumentError(f"operation {op!r} is not in the space; it has {self.ops}")
        return self.ops.index(op)

    def check(self, arch: Architecture) -> Architecture:
        """``arch`` itself, if it is a cell of this space."""
        if not isinstance(arch, Architecture):
            raise InvalidArgumentError(f"expected a nestopt.nas.Architecture, got {type(arch).__name__}")
        if arch.nodes != self.nodes:
            raise InvalidArgumentError(
                f"the architecture has {arch.nodes} nodes but the space's cells have {self.nodes}"
            )
        for op in arch.ops:
            self.op_index(op)
        return arch

    def make(self, ops: Sequence[str], prev: Sequence[int]) -> Architecture:
        """The cell with these activations and previous nodes, checked against the space."""
        return self.check(Architecture(tuple(ops), tuple(prev)))

    # -- encodings -----------------------------------------------------------------------------------
    def encode(self, arch: Architecture) -> tuple[int, ...]:
        """The token sequence ``(op_0, prev_1, op_1, ..., prev_{N-1}, op_{N-1})`` with operation indices."""
        self.check(arch)
        tokens = [self.op_index(arch.ops[0])]
        for p, op in zip(arch.prev, arch.ops[1:]):
            tokens += [p, self.op_index(op)]
        return tuple(tokens)

    def decode(self, tokens: Sequence[int] | Tensor) -> Architecture:
        """The architecture of a token sequence (the inverse of :meth:`encode`)."""
        seq = [int(t) for t in (tokens.tolist() if isinstance(tokens, Tensor) else tokens)]
        if len(seq) != self.num_tokens:
            raise InvalidArgumentError(f"a cell of {self.nodes} nodes has {self.num_tokens} tokens, got {len(seq)}")
        for pos, (t, c) in enumerate(zip(seq, self.choices)):
            if not 0 <= t < c:
                what = "operation" if pos % 2 == 0 else f"previous node of node {(pos + 1) // 2}"
                raise InvalidArgumentError(f"token {pos} ({what}) must be in 0..{c - 1}, got {t}")
        return Architecture(tuple(self.ops[t] for t in seq[0::2]), tuple(seq[1::2]))

    def index(self, arch: Architecture) -> int:
        """The architecture's number in ``0..len(space)-1`` (mixed radix over its tokens)."""
        value = 0
        for t, c in zip(self.encode(arch), self.choices):
            value = value * c + t
        return value

    def architecture(self, index: int) -> Architecture:
        """The architecture numbered ``index`` (the inverse of :meth:`index`)."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self):
            raise InvalidArgumentError(f"index must be an integer in 0..{len(self) - 1}, got {index!r}")
        tokens = []
        for c in reversed(self.choices):
            index, t = divmod(index, c)
            tokens.append(t)
        return self.decode(tokens[::-1])

    def parse(self, text: str) -> Architecture:
        """The architecture written as ``str(arch)``: ``"relu, 0>tanh, 1>sigmoid"``."""
        parts = [p.strip() for p in str(text).split(",")]
        try:
            prev = [int(p.split(">")[0]) for p in parts[1:]]
            ops = [parts[0]] + [p.split(">", 1)[1].strip() for p in parts[1:]]
        except (ValueError, IndexError):
            raise InvalidArgumentError(
                f"cannot read an architecture from {text!r}; write it as 'relu, 0>tanh'"
            ) from None
        return self.make(ops, prev)

    def to_tensor(self, archs: Sequence[Architecture]) -> Tensor:
        """The token sequences of ``archs`` as a ``(len(archs), 2N - 1)`` long tensor."""
        return torch.tensor([self.encode(a) for a in archs], dtype=torch.long).reshape(len(archs), self.num_tokens)

    def from_tensor(self, tokens: Tensor) -> list[Architecture]:
        """The architectures of a ``(n, 2N - 1)`` tensor of token sequences."""
        return [self.decode(row) for row in tokens]

    # -- enumeration and sampling --------------------------------------------------------------------
    def enumerate(self) -> Iterator[Architecture]:
        """Every architecture of the space, in the order of :meth:`index`."""
        return (self.architecture(i) for i in range(len(self)))

    def sample_tokens(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` token sequences drawn uniformly from the space (each token uniform over its choices)."""
        n = positive_int("n", n)
        return torch.stack([torch.randint(c, (n,), generator=generator) for c in self.choices], dim=1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> list[Architecture]:
        """``n`` architectures drawn uniformly (with replacement) from the space."""
        return self.from_tensor(self.sample_tokens(n, generator))
