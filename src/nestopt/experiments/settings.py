"""The settings of an experiment: their types, a check of a new value against the default, and ``--set`` text.

A setting's type is that of its default in the full configuration: ``bool``, ``int``, ``float``, ``str``, or
``list[...]`` of one of those. A new value must have the same type; an ``int`` is accepted where the default
is a ``float`` (and becomes one).

Example:
    >>> from nestopt.experiments.settings import check_setting, describe, parse_setting
    >>> describe([1e-3, 1e-2]), describe(True)
    ('list[float]', 'bool')
    >>> parse_setting("lr", "1e-2", 0.1), parse_setting("steps", "[10, 30]", [10, 100])
    (0.01, [10, 30])
    >>> parse_setting("dim", "2.5", 100)
    Traceback (most recent call last):
    ...
    nestopt.errors.InvalidArgumentError: dim must be an int like its default 100, got '2.5'
"""

from __future__ import annotations

import ast
import math
from typing import Any

from nestopt.errors import InvalidArgumentError

__all__ = ["check_setting", "describe", "parse_setting"]

_SCALARS: tuple[type, ...] = (bool, int, float, str)
_TRUE, _FALSE = ("true", "yes", "on"), ("false", "no", "off")


def _scalar_type(value: Any) -> type | None:
    return type(value) if type(value) in _SCALARS else None


def _element_type(default: list[Any]) -> type | None:
    """The element type of a list default (``float`` if it mixes ints and floats), ``None`` if not uniform."""
    kinds = {_scalar_type(v) for v in default}
    if kinds == {int, float}:
        return float
    return kinds.pop() if len(kinds) == 1 else None


def describe(default: Any) -> str:
    """The type of a setting with this default, in words: ``"int"``, ``"list[float]"``, ...

    >>> describe(3), describe("process"), describe([])
    ('int', 'str', 'list')
    """
    if isinstance(default, list | tuple):
        kind = _element_type(list(default))
        return f"list[{kind.__name__}]" if kind is not None else "list"
    kind = _scalar_type(default)
    if kind is None:
        raise InvalidArgumentError(f"a setting's default must be a bool, int, float, str or list, got {default!r}")
    return kind.__name__


def _scalar_ok(value: Any, kind: type) -> bool:
    if kind is float:
        return type(value) in (int, float) and math.isfinite(value)
    return type(value) is kind


def _fail(name: str, value: Any, default: Any) -> InvalidArgumentError:
    kind = describe(default)
    article = "an" if kind[0] in "aeiou" else "a"
    return InvalidArgumentError(f"{name} must be {article} {kind} like its default {default!r}, got {value!r}")


def check_setting(name: str, value: Any, default: Any) -> Any:
    """``value`` if it has the type of ``default`` (ints become floats for a float setting); else an error."""
    if isinstance(default, list | tuple):
        if not isinstance(value, list | tuple):
            raise _fail(name, value, default)
        kind = _element_type(list(default))
        if kind is not None and not all(_scalar_ok(v, kind) for v in value):
            raise _fail(name, value, default)
        return [float(v) if kind is float else v for v in value]
    kind = _scalar_type(default)
    if kind is None or not _scalar_ok(value, kind):
        raise _fail(name, value, default)
    return float(value) if kind is float else value


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _parse_scalar(text: str, kind: type | None) -> Any:
    if kind is str:
        value = _literal(text)
        return value if isinstance(value, str) else text.strip()
    if kind is bool:
        word = text.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    if kind is float:
        try:
            return float(text)  # also "1e-3", "inf" (refused later as not finite)
        except ValueError:
            return text
    return _literal(text)


def parse_setting(name: str, text: str, default: Any) -> Any:
    """The value that the command-line text ``text`` gives the setting ``name`` with this ``default``.

    Scalars are Python literals (``3``, ``0.5``, ``1e-3``, ``true``/``false``); a string needs no quotes; a
    list is a literal (``[10, 30]``) or comma-separated values (``10,30`` or ``layer,parameter``).
    """
    if isinstance(default, list | tuple):
        kind = _element_type(list(default))
        value = _literal(text)
        if not isinstance(value, list | tuple):
            value = [_parse_scalar(part, kind) for part in text.split(",")] if text.strip() else []
    else:
        value = _parse_scalar(text, _scalar_type(default))
    try:
        return check_setting(name, value, default)
    except InvalidArgumentError:
        raise _fail(name, text, default) from None
