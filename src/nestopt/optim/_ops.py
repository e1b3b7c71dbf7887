"""The tensor-list operations every optimizer kernel is written against, in three backends.

A kernel (:mod:`nestopt.optim._kernels`) states an update formula once, as calls on an ``ops`` object over
lists of tensors. The backend decides how the formula runs:

* :data:`FUNCTIONAL`: out of place, one tensor at a time. Nothing is mutated, so the step is differentiable
  (autograd, ``torch.func.jvp``, ``vmap``) and coefficients may be tensors that carry gradients.
* :data:`LOOP`: in place, one tensor at a time (``torch.optim``'s for-loop path, and what ``torch.compile``
  fuses into one pass per tensor).
* :data:`FOREACH`: in place with the ``torch._foreach_*`` kernels (``torch.optim``'s foreach path).

Operations ending in ``_`` *update* their first argument: the in-place backends overwrite it and return
it, the functional backend returns new tensors. A kernel therefore always rebinds the result
(``m = ops.scale_(m, beta)``) and applies ``*_`` operations only to tensors it owns: state buffers, the
parameters, or temporaries it created (never to the incoming gradients). The other operations always
return new tensors. A coefficient is a Python number, a tensor (a 0-d tensor, or one that broadcasts against
each tensor), or a list with one such value per tensor.

Example:
    >>> import torch
    >>> from nestopt.optim import _ops
    >>> xs, ys = [torch.ones(2)], [torch.full((2,), 2.0)]
    >>> _ops.FUNCTIONAL.add_(xs, ys, 0.5)[0], xs[0]          # new tensors; xs untouched
    (tensor([2., 2.]), tensor([1., 1.]))
    >>> _ops.FOREACH.add_(xs, ys, 0.5)[0] is xs[0], xs[0]    # xs overwritten
    (True, tensor([2., 2.]))
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, TypeAlias

import torch
from torch import Tensor

__all__ = ["FOREACH", "FUNCTIONAL", "LOOP", "Coef", "Ops", "at", "is_one", "is_zero"]

Coef: TypeAlias = Any
"""A coefficient: a Python number, a tensor, or a list or tuple of those, one per tensor."""

Tensors = list[Tensor]


def at(c: Coef, i: int) -> Any:
    """The coefficient of tensor ``i``."""
    return c[i] if isinstance(c, list | tuple) else c


def _is_number(c: Any) -> bool:
    return isinstance(c, numbers.Number) and not isinstance(c, bool)


def is_zero(c: Coef) -> bool:
    """Whether ``c`` is the number 0 (or a list of zeros): a term a kernel may skip. Tensors never are."""
    if isinstance(c, list | tuple):
        return all(_is_number(v) and v == 0 for v in c)
    return _is_number(c) and c == 0


def is_one(c: Coef) -> bool:
    """Whether ``c`` is the number 1 (or a list of ones)."""
    if isinstance(c, list | tuple):
        return all(_is_number(v) and v == 1 for v in c)
    return _is_number(c) and c == 1


def _numbers(c: Coef) -> bool:
    return _is_number(c) or (isinstance(c, list | tuple) and all(_is_number(v) for v in c))


def _mul(x: Tensor, c: Any) -> Tensor:
    return x if _is_number(c) and c == 1 else x * c


class Ops:
    """Out-of-place operations shared by the per-tensor backends; subclasses define the updating ones."""

    name = "ops"

    def scale(self, xs: Sequence[Tensor], c: Coef) -> Tensors:
        """``c * x``."""
        return [x * at(c, i) for i, x in enumerate(xs)]

    def add(self, xs: Sequence[Tensor], ys: Sequence[Tensor], c: Coef = 1.0) -> Tensors:
        """``x + c * y``."""
        return [x + _mul(y, at(c, i)) for i, (x, y) in enumerate(zip(xs, ys))]

    def addcmul(self, xs: Sequence[Tensor], ys: Sequence[Tensor], zs: Sequence[Tensor], c: Coef = 1.0) -> Tensors:
        """``x + c * y * z``."""
        return [x + _mul(y * z, at(c, i)) for i, (x, y, z) in enumerate(zip(xs, ys, zs))]

    def div(self, xs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensors:
        """``x / y``."""
        return [x / y for x, y in zip(xs, ys)]

    def add_scalar(self, xs: Sequence[Tensor], c: Coef) -> Tensors:
        """``x + c``."""
        return [x + at(c, i) for i, x in enumerate(xs)]

    def sqrt(self, xs: Sequence[Tensor]) -> Tensors:
        """``sqrt(x)``."""
        return [torch.sqrt(x) for x in xs]

    def clamp(self, xs: Sequence[Tensor], low: Coef, high: Coef) -> Tensors:
        """``x`` clamped to ``[low, high]``."""
        return [torch.clamp(x, at(low, i), at(high, i)) for i, x in enumerate(xs)]

    def global_norm(self, xs: Sequence[Tensor]) -> Tensor:
        """The Euclidean norm of all tensors together (a 0-d tensor)."""
        norms = [torch.linalg.vector_norm(x) for x in xs]
        return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())

    # updating operations (overridden by the in-place backends)
    def scale_(self, xs: Sequence[Tensor], c: Coef) -> Tensors:
        """``x <- c * x``."""
        return self.scale(xs, c)

    def add_(self, xs: Sequence[Tensor], ys: Sequence[Tensor], c: Coef = 1.0) -> Tensors:
        """``x <- x + c * y``."""
        return self.add(xs, ys, c)

    def add_scalar_(self, xs: Sequence[Tensor], c: Coef) -> Tensors:
        """``x <- x + c``."""
        return self.add_scalar(xs, c)

    def addcmul_(self, xs: Sequence[Tensor], ys: Sequence[Tensor], zs: Sequence[Tensor], c: Coef = 1.0) -> Tensors:
        """``x <- x + c * y * z``."""
        return self.addcmul(xs, ys, zs, c)

    def div_(self, xs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensors:
        """``x <- x / y``."""
        return self.div(xs, ys)

    def sqrt_(self, xs: Sequence[Tensor]) -> Tensors:
        """``x <- sqrt(x)``."""
        return self.sqrt(xs)

    def copy_(self, xs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensors:
        """``x <- y``."""
        return list(ys)


class _Loop(Ops):
    name = "loop"

    def scale_(self, xs: Sequence[Tensor], c: Coef) -> Tensors:
        for i, x in enumerate(xs):
            x.mul_(at(c, i))
        return list(xs)

    def add_(self, xs: Sequence[Tensor], ys: Sequence[Tensor], c: Coef = 1.0) -> Tensors:
        for i, (x, y) in enumerate(zip(xs, ys)):
            a = at(c, i)
            if _is_number(a):
                x.add_(y, alpha=a)
            else:
                x.add_(y * a)
        return list(xs)

    def add_scalar_(self, xs: Sequence[Tensor], c: Coef) -> Tensors:
        for i, x in enumerate(xs):
            x.add_(at(c, i))
        return list(xs)

    def addcmul_(self, xs: Sequence[Tensor], ys: Sequence[Tensor], zs: Sequence[Tensor], c: Coef = 1.0) -> Tensors:
        for i, (x, y, z) in enumerate(zip(xs, ys, zs)):
            a = at(c, i)
            if _is_number(a):
                x.addcmul_(y, z, value=a)
            else:
                x.add_(y * z * a)
        return list(xs)

    def div_(self, xs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensors:
        for x, y in zip(xs, ys):
            x.div_(y)
        return list(xs)

    def sqrt_(self, xs: Sequence[Tensor]) -> Tensors:
        for x in xs:
            x.sqrt_()
        return list(xs)

    def copy_(self, xs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensors:
        for x, y in zip(xs, ys):
            x.copy_(y)
        return list(xs)


class _Foreach(Ops):
    name = "foreach"

    def scale(self, xs: Sequence[Tensor], c: Coef) -> Tensors:
        return list(torch._foreach_mul(list(xs), _foreach_coef(c)))

    def add(self, xs: Sequence[Tensor], ys: Sequence[Tensor], c: Coef = 1.0) -> Tensors:
        if _is_number(c):
            return list(torch._foreach_add(list(xs), list(ys), alpha=c))
        return list(torch._foreach_add(list(xs), self.scale(ys, c)))

    def add_scalar(self, xs: Sequence[Tensor], c: Coef) -> Tensors:
        return list(torch._foreach_add(list(xs), _foreach_coef(c)))

    def sqrt(self, xs: Sequence[Tensor]) -> Tensors:
        return list(torch._foreach_sqrt(list(xs)))

    def div(self, xs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensors:
        return list(torch._foreach_div(list(xs), list(ys)))

    def global_norm(self, xs: Sequence[Tensor]) -> Tensor:
        norms = torch._foreach_norm(list(xs))
        return torch.linalg.vector_norm(torch.stack(list(norms))) if norms else torch.zeros(())

    def scale_(self, xs: Sequence[Tensor], c: Coef) -> Tensors:
        torch._foreach_mul_(list(xs), _foreach_coef(c))
        return list(xs)

    def add_(self, xs: Sequence[Tensor], ys: Sequence[Tensor], c: Coef = 1.0) -> Tensors:
        if _is_number(c):
            torch._foreach_add_(list(xs), list(ys), alpha=c)
        else:
            torch._foreach_add_(list(xs), self.scale(ys, c))
        return list(xs)

    def add_scalar_(self, xs: Sequence[Tensor], c: Coef) -> Tensors:
        torch._foreach_add_(list(xs), _foreach_coef(c))
        return list(xs)

    def addcmul_(self, xs: Sequence[Tensor], ys: Sequence[Tensor], zs: Sequence[Tensor], c: Coef = 1.0) -> Tensors:
        if _numbers(c):
            torch._foreach_addcmul_(list(xs), list(ys), list(zs), _foreach_coef(c))
        else:
            torch._foreach_add_(list(xs), self.scale(torch._foreach_mul(list(ys), list(zs)), c))
        return list(xs)

    def div_(self, xs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensors:
        torch._foreach_div_(list(xs), list(ys))
        return list(xs)

    def sqrt_(self, xs: Sequence[Tensor]) -> Tensors:
        torch._foreach_sqrt_(list(xs))
        return list(xs)

    def copy_(self, xs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensors:
        torch._foreach_copy_(list(xs), list(ys))
        return list(xs)


def _foreach_coef(c: Coef) -> Any:
    """A coefficient in a form the ``_foreach`` overloads take: a scalar, a scalar list or a tensor list."""
    return list(c) if isinstance(c, list | tuple) else c


class _Functional(Ops):
    name = "functional"


FUNCTIONAL: Ops = _Functional()
LOOP: Ops = _Loop()
FOREACH: Ops = _Foreach()
