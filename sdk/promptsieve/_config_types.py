"""Type checks for config objects and constructor arguments, raising :class:`ConfigError`.

Every public ``*Config`` dataclass calls :func:`check_field_types` first in its
``__post_init__``, so that ``SieveConfig(ratio="0.5")`` fails at construction with a
sentence naming the field, instead of a ``TypeError`` from a comparison later on. The
check is lenient where users are, and then stores the plain Python value, so that a config
stays hashable and its verdict key does not depend on how a number was spelt:

* an ``int`` or a numpy/``fractions`` real fits a ``float`` field (stored as ``float``);
  a numpy integer fits an ``int`` field (stored as ``int``); ``numpy.bool_`` fits a bool;
* a ``str`` fits a ``Path`` field; a ``str`` subclass (``StrEnum``) fits a ``Literal``;
* a list fits a ``tuple[X, ...]`` field (stored as a tuple), any collection a ``frozenset``.

A bool never fits a number field. Annotations it does not know are not checked, nor is a
field whose annotation names something that resolves nowhere (a subclass's own import for
type checkers): the other fields still are.
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import os
import reprlib
import threading
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, Union

from promptsieve._errors import ConfigError

__all__ = [
    "check_field_types",
    "check_instance",
    "check_members",
    "check_not_config",
    "check_wait",
]

_NO = object()  # "does not fit"
_SHORT = reprlib.Repr()  # Python 3.10 and 3.11 take no keyword arguments here
_SHORT.maxstring = _SHORT.maxother = 60


def check_field_types(config: Any) -> None:
    """Raise :class:`ConfigError` when a field of the dataclass ``config`` has a wrong type;
    store each fitting value in its plain form (see the module docstring)."""
    cls = type(config)
    for field in dataclasses.fields(config):
        hint = _hints(cls).get(field.name)
        if hint is None:
            continue
        value = getattr(config, field.name)
        plain = _fit(value, hint)
        if plain is _NO:
            raise ConfigError(
                f"{cls.__name__}({field.name}=...) must be {_describe(hint)}, "
                f"got {_what(value, hint)}"
            )
        if plain is not value:
            object.__setattr__(config, field.name, plain)  # frozen dataclasses too


def check_instance(owner: str, name: str, value: Any, cls: type) -> None:
    """Raise :class:`ConfigError` unless ``value`` is None or an instance of ``cls``."""
    if value is not None and not isinstance(value, cls):
        raise ConfigError(
            f"{owner}({name}=...) must be a {cls.__name__}, got {type(value).__name__}"
        )


def check_not_config(
    owner: str, name: str, value: Any, config_cls: type, part: str, home: str
) -> None:
    """Raise :class:`ConfigError` when ``value`` is a ``config_cls`` given where the built
    ``part`` belongs, naming ``home`` (e.g. ``"SieveConfig(gate=...)"``), where it does go."""
    if isinstance(value, config_cls):
        raise ConfigError(
            f"{owner}({name}=...) takes {part}; a {config_cls.__name__} goes in {home}"
        )


def check_members(owner: str, name: str, value: Any, members: Iterable[str], what: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is None or has every attribute in
    ``members``. Attributes are looked up without running properties (a compressor's
    ``fingerprint`` would load its proxy model). ``what`` says in words what fits."""
    if value is None:
        return
    missing = [m for m in members if not _has(value, m)]
    if missing:
        raise ConfigError(
            f"{owner}({name}=...) must be {what}; the {type(value).__name__} given has no "
            + ", ".join(missing)
        )


def _has(value: Any, member: str) -> bool:
    try:
        inspect.getattr_static(value, member)
    except AttributeError:
        return False
    return True


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        try:
            _HINTS[cls] = typing.get_type_hints(cls)
        except Exception:  # a name only type checkers import, or an annotation that fails
            hints, complete = _field_hints(cls)
            if not complete:  # mid-import, or a subclass's own name: tried again next time
                return hints
            _HINTS[cls] = hints
    return _HINTS[cls]


def _field_hints(cls: type) -> tuple[dict[str, Any], bool]:
    """The annotations of ``cls`` and its bases, each resolved in its own module with the
    flat API behind it (for names imported only for type checkers), and whether all
    resolved. A field whose annotation does not resolve keeps its base class's hint, or is
    not checked."""
    import sys

    import promptsieve

    hints: dict[str, Any] = {}
    complete = True
    for klass in reversed(cls.__mro__):
        module = sys.modules.get(klass.__module__)
        namespace = {**vars(promptsieve), **(vars(module) if module is not None else {})}
        for name, ann in vars(klass).get("__annotations__", {}).items():
            try:
                hints[name] = eval(ann, namespace) if isinstance(ann, str) else ann
            except Exception:  # this field keeps what a base class said of it, if anything
                complete = False
    return hints, complete


def _fit(value: Any, hint: Any) -> Any:
    """``value`` in its plain form if it fits ``hint``, else ``_NO``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin is Union or origin is types.UnionType:
        for arg in args:
            plain = _fit(value, arg)
            if plain is not _NO:
                return plain
        return _NO
    if hint is type(None):
        return value if value is None else _NO
    if origin is Literal:
        return next((arg for arg in args if isinstance(value, type(arg)) and value == arg), _NO)
    if hint is bool:
        return bool(value) if _is_bool(value) else _NO
    if hint is int:
        ok = isinstance(value, numbers.Integral) and not _is_bool(value)
        return (value if type(value) is int else int(value)) if ok else _NO
    if hint is float:
        ok = isinstance(value, numbers.Real) and not _is_bool(value)
        return (value if type(value) is float else float(value)) if ok else _NO
    if hint is str:
        return value if isinstance(value, str) else _NO
    if hint is Path:
        return value if isinstance(value, str | os.PathLike) else _NO
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, tuple | list):
            return _NO
        items = [_fit(item, args[0]) for item in value]
        return _NO if any(i is _NO for i in items) else _same(value, tuple(items))
    if origin in (frozenset, set):
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            return _NO
        items = [_fit(item, args[0]) for item in value]
        return _NO if any(i is _NO for i in items) else _same(value, frozenset(items))
    if origin is Callable or hint is Callable:
        return value if callable(value) else _NO
    if isinstance(origin, type):  # re.Pattern[str], os.PathLike[str]
        return value if isinstance(value, origin) else _NO
    if isinstance(hint, type):
        return value if isinstance(value, hint) else _NO
    return value


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b"


def _same(value: Any, plain: Any) -> Any:
    """``value`` itself when it already equals its plain form in type and items (an int
    item equals its float, so the items' types are compared too: ``(1, 0.5)`` is stored as
    ``(1.0, 0.5)``)."""
    same = type(value) is type(plain) and value == plain
    if same and isinstance(value, tuple):
        same = all(type(a) is type(b) for a, b in zip(value, plain, strict=True))
    return value if same else plain


def _what(value: Any, hint: Any) -> str:
    """The wrong value in words; for a collection, its first item that does not fit."""
    origin = typing.get_origin(hint)
    inner = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (Union, types.UnionType) and len(inner) == 1:
        return _what(value, inner[0])
    if origin in (tuple, frozenset, set) and isinstance(value, tuple | list | set | frozenset):
        bad = next((i for i in value if _fit(i, typing.get_args(hint)[0]) is _NO), None)
        return f"an item {type(bad).__name__} {_SHORT.repr(bad)}"
    return f"{type(value).__name__} {_SHORT.repr(value)}"


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
        return "a number (int or float)"
    if hint is int:
        return "a whole number (int)"
    if hint is Path:
        return "a path (str or os.PathLike)"
    if origin is tuple:
        return f"a tuple or list of {_plural(args[0])}"
    if origin in (frozenset, set):
        return f"a set of {_plural(args[0])}"
    if origin is Callable or hint is Callable:
        return "a callable"
    if isinstance(origin, type):
        return f"a {origin.__name__}"
    if isinstance(hint, type):
        return {bool: "True or False", str: "a string"}.get(hint, f"a {hint.__name__}")
    return str(hint)


def _plural(hint: Any) -> str:
    plurals = {float: "numbers", int: "whole numbers", str: "strings"}
    return plurals.get(hint) or _describe(hint)


def check_wait(name: str, value: float, *, zero_ok: bool = True, unit: str = "s") -> None:
    """Raise :class:`ConfigError` unless ``value`` (in ``unit``: "s" or "ms") is a wait the
    platform can take: a number, finite, > 0 (or >= 0 with ``zero_ok``) and at most
    ``threading.TIMEOUT_MAX`` seconds (about 292 years on Linux; a longer timeout raises
    ``OverflowError`` in every lock or condition wait). ``name`` names the setting."""
    scale = 1e3 if unit == "ms" else 1.0
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and (value >= 0 if zero_ok else value > 0)
        and value / scale <= threading.TIMEOUT_MAX
    )
    if not ok:  # NaN and infinities fail the comparisons above
        bound = ">= 0" if zero_ok else "> 0"
        raise ConfigError(
            f"{name} must be a finite number {bound} and at most "
            f"{threading.TIMEOUT_MAX * scale:.3g} {unit}, got {value!r}"
        )
