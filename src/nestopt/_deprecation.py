"""Deprecated aliases: an old public name that keeps working and says what replaces it."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["deprecated_alias"]

F = TypeVar("F", bound=Callable[..., Any])


def deprecated_alias(new: F, old_name: str, new_name: str) -> F:
    """``new`` under its old name ``old_name``: each call emits a ``DeprecationWarning`` naming ``new_name``.

    Example:
        >>> import warnings
        >>> double = lambda x: 2 * x
        >>> twice = deprecated_alias(double, "twice", "double")
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     twice(3), str(caught[0].message)
        (6, 'twice is deprecated; use double')
    """

    @functools.wraps(new)
    def alias(*args: Any, **kwargs: Any) -> Any:
        warnings.warn(f"{old_name} is deprecated; use {new_name}", DeprecationWarning, stacklevel=2)
        return new(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old_name.rsplit(".", 1)[-1]
    alias.__doc__ = f"Deprecated alias of :func:`{new_name}` (emits a ``DeprecationWarning``)."
    return alias  # type: ignore[return-value]
