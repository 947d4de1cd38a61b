"""Type checks for config objects and constructor arguments, raising :class:`ConfigError`.

Every public ``*Config`` dataclass calls :func:`check_field_types` first in its
``__post_init__``, so that ``SieveConfig(ratio="0.5")`` fails at construction with a
sentence naming the field, instead of a ``TypeError`` from a comparison later on. The
check is lenient where users are: an ``int`` fits a ``float`` field (numpy scalars too),
a ``str`` fits a ``Path`` field, a list fits a ``tuple[X, ...]`` field. A bool never fits
a number field. Annotations it does not know are not checked.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union

from promptsieve._errors import ConfigError

__all__ = ["check_argument", "check_field_types"]


def check_field_types(config: Any) -> None:
    """Raise :class:`ConfigError` when a field of the dataclass ``config`` has a wrong type."""
    cls = type(config)
    for field in dataclasses.fields(config):
        hint = _hints(cls).get(field.name)
        if hint is None:
            continue
        value = getattr(config, field.name)
        if not _fits(value, hint):
            raise ConfigError(
                f"{cls.__name__}({field.name}=...) must be {_describe(hint)}, "
                f"got {type(value).__name__} {value!r}"
            )


def check_argument(owner: str, name: str, value: Any, expected: type, what: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is None or an instance of ``expected``.

    ``expected`` may be a ``runtime_checkable`` protocol (its methods are then checked by
    name). ``what`` says in words what fits, e.g. ``"a SieveConfig"``.
    """
    if value is not None and not isinstance(value, expected):
        raise ConfigError(f"{owner}({name}=...) must be {what}, got {type(value).__name__}")


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        try:
            _HINTS[cls] = typing.get_type_hints(cls)
        except NameError:  # a name imported only for type checkers: the flat API has it
            import promptsieve

            try:
                _HINTS[cls] = typing.get_type_hints(cls, localns=vars(promptsieve))
            except NameError:
                _HINTS[cls] = {}
    return _HINTS[cls]


def _fits(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return True
    if origin is Union or origin is types.UnionType:
        return any(_fits(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if origin is Literal:
        return any(type(value) is type(arg) and value == arg for arg in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is Path:
        return isinstance(value, str | os.PathLike)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return isinstance(value, tuple | list) and all(_fits(item, args[0]) for item in value)
    if origin in (frozenset, set):
        return isinstance(value, frozenset | set | tuple | list) and all(
            _fits(item, args[0]) for item in value
        )
    if origin is Callable or hint is Callable:
        return callable(value)
    if isinstance(hint, type) and origin is None:
        return isinstance(value, hint)
    return True


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union or origin is types.UnionType:
        return " or ".join(_describe(arg) for arg in args)
    if hint is type(None):
        return "None"
    if origin is Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if hint is float:
        return "a number"
    if hint is int:
        return "a whole number"
    if hint is Path:
        return "a path (str or os.PathLike)"
    if origin is tuple:
        return f"a tuple or list of {_plural(args[0])}"
    if origin in (frozenset, set):
        return f"a set of {_plural(args[0])}"
    if origin is Callable or hint is Callable:
        return "a callable"
    if isinstance(hint, type):
        return {bool: "True or False", str: "a string"}.get(hint, f"a {hint.__name__}")
    return str(hint)


def _plural(hint: Any) -> str:
    return {float: "numbers", int: "whole numbers", str: "strings"}.get(hint, _describe(hint))
