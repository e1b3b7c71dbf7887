"""Arithmetic on trees: ``dict[str, Tensor]``, the form ``torch.func.functional_call`` takes.

Parameters, hyperparameters, gradients and solver iterates are all trees. The functions here treat a tree
as one long vector (the concatenation of its flattened tensors in key order) without building it:

.. math::  \\langle a, b \\rangle = \\sum_k \\langle a_k, b_k \\rangle, \\qquad \\|a\\| = \\sqrt{\\langle a, a \\rangle}.

On plain tensors (no autograd graph, no ``torch.func`` transform) they use the fused ``torch._foreach_*``
kernels, which pay off for trees of many tensors; otherwise they fall back to per-tensor operations so
that they compose with ``grad``, ``vmap`` and ``jvp``.

Example:
    >>> import torch
    >>> from nestopt import tree
    >>> a = {"w": torch.ones(2, 2), "b": torch.ones(2)}
    >>> float(tree.dot(a, tree.scale(a, 2.0)))
    12.0
    >>> vec, spec = tree.flatten(a)
    >>> vec.shape
    torch.Size([6])
    >>> tree.unflatten(vec, spec)["w"].shape
    torch.Size([2, 2])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from nestopt.errors import InvalidArgumentError, NonFiniteError, ShapeMismatchError

__all__ = [
    "Tree",
    "TreeSpec",
    "add",
    "add_",
    "all_finite",
    "axpy",
    "check_finite",
    "check_like",
    "clone",
    "detach",
    "dot",
    "flatten",
    "leaf_norms",
    "map",
    "norm",
    "numel",
    "ones_like",
    "scale",
    "scale_",
    "sub",
    "unflatten",
    "zeros_like",
]

Tree = dict[str, Tensor]


def _fused(tensors: list[Tensor]) -> bool:
    """Whether the ``_foreach`` kernels apply: no autograd graph and no functorch wrapper."""
    if not tensors:
        return False
    first = tensors[0]
    if torch._C._functorch.is_functorch_wrapped_tensor(first):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def check_like(a: Mapping[str, Tensor], b: Mapping[str, Tensor], name_a: str = "a", name_b: str = "b") -> None:
    """Raise :class:`ShapeMismatchError` unless ``a`` and ``b`` have the same keys and shapes.

    Example:
        >>> import torch
        >>> check_like({"w": torch.zeros(2)}, {"w": torch.ones(2)})
    """
    if not isinstance(a, Mapping):
        raise ShapeMismatchError(f"{name_a} must be a dict of tensors, got {type(a).__name__}")
    if not isinstance(b, Mapping):
        raise ShapeMismatchError(f"{name_b} must be a dict of tensors, got {type(b).__name__}")
    if set(a) != set(b):
        only_a = sorted(set(a) - set(b))
        only_b = sorted(set(b) - set(a))
        raise ShapeMismatchError(
            f"{name_a} and {name_b} have different keys: only in {name_a}: {only_a}, only in {name_b}: {only_b}"
        )
    for key in a:
        if a[key].shape != b[key].shape:
            raise ShapeMismatchError(
                f"{name_a}[{key!r}] has shape {tuple(a[key].shape)} but {name_b}[{key!r}] has shape "
                f"{tuple(b[key].shape)}"
            )


def map(fn: Callable[..., Tensor], first: Mapping[str, Tensor], *rest: Mapping[str, Tensor]) -> Tree:
    """Apply ``fn`` key by key: ``{k: fn(first[k], *(r[k] for r in rest))}``.

    Example:
        >>> import torch
        >>> map(torch.neg, {"w": torch.ones(1)})["w"]
        tensor([-1.])
    """
    return {k: fn(v, *(r[k] for r in rest)) for k, v in first.items()}


def add(a: Tree, b: Tree) -> Tree:
    """``a + b``."""
    keys = list(a)
    xs, ys = [a[k] for k in keys], [b[k] for k in keys]
    if _fused(xs + ys):
        return dict(zip(keys, torch._foreach_add(xs, ys)))
    return {k: x + y for k, x, y in zip(keys, xs, ys)}


def sub(a: Tree, b: Tree) -> Tree:
    """``a - b``."""
    keys = list(a)
    xs, ys = [a[k] for k in keys], [b[k] for k in keys]
    if _fused(xs + ys):
        return dict(zip(keys, torch._foreach_sub(xs, ys)))
    return {k: x - y for k, x, y in zip(keys, xs, ys)}


def scale(a: Tree, alpha: float | Tensor) -> Tree:
    """``alpha * a`` for a scalar ``alpha`` (a float or a 0-d tensor)."""
    keys = list(a)
    xs = [a[k] for k in keys]
    if isinstance(alpha, float | int) and _fused(xs):
        return dict(zip(keys, torch._foreach_mul(xs, float(alpha))))
    return {k: alpha * x for k, x in zip(keys, xs)}


def axpy(alpha: float | Tensor, x: Tree, y: Tree) -> Tree:
    """``alpha * x + y`` (the BLAS name)."""
    keys = list(y)
    xs, ys = [x[k] for k in keys], [y[k] for k in keys]
    if isinstance(alpha, float | int) and _fused(xs + ys):
        return dict(zip(keys, torch._foreach_add(ys, xs, alpha=float(alpha))))
    return {k: yy + alpha * xx for k, xx, yy in zip(keys, xs, ys)}


def add_(a: Tree, b: Tree, alpha: float | Tensor = 1.0) -> Tree:
    """In place: ``a += alpha * b``; returns ``a``. For plain tensors (solver work vectors), not for graphs.

    ``alpha`` may be a 0-d tensor on the leaves' device: the update then never reads it on the host (no
    device synchronization).
    """
    keys = list(a)
    if isinstance(alpha, Tensor):
        torch._foreach_addcmul_([a[k] for k in keys], [b[k] for k in keys], [alpha] * len(keys))
    else:
        torch._foreach_add_([a[k] for k in keys], [b[k] for k in keys], alpha=alpha)
    return a


def scale_(a: Tree, alpha: float | Tensor) -> Tree:
    """In place: ``a *= alpha`` (a float or a 0-d tensor); returns ``a``. For plain tensors, not for graphs."""
    torch._foreach_mul_(list(a.values()), alpha)
    return a


def dot(a: Tree, b: Tree) -> Tensor:
    """The inner product of two trees as one vector: a 0-d tensor."""
    xs = list(a.values())
    ys = [b[k] for k in a]
    plain = all(
        x.is_contiguous() and y.is_contiguous() and x.dtype == y.dtype and x.dtype in (torch.float32, torch.float64)
        for x, y in zip(xs, ys)
    )
    if plain and _fused(xs + ys):  # one kernel per leaf and no product buffer
        return torch.stack([torch.dot(x.view(-1), y.view(-1)) for x, y in zip(xs, ys)]).sum()
    terms = [torch.sum(x * y) for x, y in zip(xs, ys)]
    if not terms:
        raise InvalidArgumentError("dot of empty trees: a tree needs at least one tensor")
    return torch.stack(terms).sum()


def norm(a: Tree) -> Tensor:
    """The Euclidean norm of a tree as one vector: a 0-d tensor."""
    xs = list(a.values())
    if not xs:
        raise InvalidArgumentError("norm of an empty tree: a tree needs at least one tensor")
    if _fused(xs):
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(xs)))
    return torch.sqrt(dot(a, a))


def leaf_norms(a: Mapping[str, Tensor] | Sequence[Tensor]) -> list[Tensor]:
    """The Euclidean norm of each tensor of a tree (or of a list of tensors), as 0-d tensors: one multi-tensor
    kernel where no autograd graph or functorch transform is involved, one norm per tensor otherwise.

    Example:
        >>> import torch
        >>> [float(n) for n in leaf_norms({"a": torch.tensor([3.0, 4.0]), "b": torch.ones(4)})]
        [5.0, 2.0]
    """
    xs = list(a.values()) if isinstance(a, Mapping) else list(a)
    if _fused(xs):
        return list(torch._foreach_norm(xs))
    return [torch.linalg.vector_norm(x) for x in xs]


def zeros_like(a: Mapping[str, Tensor]) -> Tree:
    """A tree of zeros with ``a``'s keys, shapes, dtypes and devices."""
    return {k: torch.zeros_like(v) for k, v in a.items()}


def ones_like(a: Mapping[str, Tensor]) -> Tree:
    """A tree of ones with ``a``'s keys, shapes, dtypes and devices."""
    return {k: torch.ones_like(v) for k, v in a.items()}


def detach(a: Mapping[str, Tensor]) -> Tree:
    """Detach every tensor of ``a`` from the autograd graph (no copy)."""
    return {k: v.detach() for k, v in a.items()}


def clone(a: Mapping[str, Tensor]) -> Tree:
    """Detached copies of every tensor of ``a``."""
    return {k: v.detach().clone() for k, v in a.items()}


def numel(a: Mapping[str, Tensor]) -> int:
    """The number of scalars in ``a``."""
    return sum(v.numel() for v in a.values())


def _sums_finite(xs: list[Tensor]) -> bool:
    """A cheap sufficient test: if every leaf's sum is finite, so is every entry (one host sync). A NaN or
    infinity always makes its sum non-finite; only an overflow of the sum can fail the test falsely, so a
    failure is confirmed entry by entry."""
    if not xs:
        return True
    if any(x.is_complex() or not x.is_floating_point() for x in xs):
        return False
    with torch.no_grad():
        return bool(torch.isfinite(torch.stack([x.detach().sum() for x in xs])).all())


def all_finite(a: Mapping[str, Tensor]) -> bool:
    """Whether every entry of every tensor is finite."""
    xs = list(a.values())
    return _sums_finite(xs) or all(bool(torch.isfinite(v).all()) for v in xs)


def check_finite(a: Mapping[str, Tensor], name: str) -> None:
    """Raise :class:`NonFiniteError` naming ``name`` and the first bad key if ``a`` has NaN or inf."""
    if _sums_finite(list(a.values())):
        return
    for k, v in a.items():
        if not bool(torch.isfinite(v).all()):
            raise NonFiniteError(f"{name}[{k!r}] contains NaN or infinite values")


@dataclass(frozen=True)
class TreeSpec:
    """What :func:`unflatten` needs to rebuild a tree from a vector: keys, shapes and offsets."""

    keys: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(torch.Size(s).numel()) for s in self.shapes)

    @property
    def numel(self) -> int:
        return sum(self.sizes)


def flatten(a: Mapping[str, Tensor]) -> tuple[Tensor, TreeSpec]:
    """Concatenate the tensors of ``a`` (in key order) into one vector.

    Leading batch dimensions are not supported here; use ``torch.func.vmap`` around the call.
    """
    if not a:
        raise InvalidArgumentError("cannot flatten an empty tree")
    keys = tuple(a)
    spec = TreeSpec(keys, tuple(a[k].shape for k in keys))
    return torch.cat([a[k].reshape(-1) for k in keys]), spec


def unflatten(vec: Tensor, spec: TreeSpec) -> Tree:
    """Inverse of :func:`flatten`: split ``vec`` (last dimension) back into a tree.

    Leading dimensions of ``vec`` are kept as batch dimensions of every leaf.
    """
    if vec.shape[-1] != spec.numel:
        raise ShapeMismatchError(f"vec has {vec.shape[-1]} entries but the tree spec needs {spec.numel}")
    batch = vec.shape[:-1]
    parts = torch.split(vec, list(spec.sizes), dim=-1)
    return {k: p.reshape((*batch, *s)) for k, p, s in zip(spec.keys, parts, spec.shapes)}
