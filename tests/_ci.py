"""Skip here, fail in CI: for tests that need a real component (redis-server, chromium, an extra).

``.ci/run`` (``scripts/install.sh``) installs every extra, redis-server, chromium, the LiteLLM
gateway's ``.venv-litellm`` and the Gemma 270M local target, so under ``CI=true`` a missing
component is a broken install and the test must fail; on a developer's machine it skips, saying
what to install. Components CI deliberately lacks (the Qwen GGUF, the 2.5 GB LM proxy export)
stay plain ``pytest.skip``.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import TypeVar

import pytest

T = TypeVar("T")


def in_ci() -> bool:
    """True when ``CI`` is set to anything but empty, ``0`` or ``false`` (any case)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def require(condition: T | None, reason: str) -> T:
    """``condition`` itself when truthy (``exe = require(shutil.which("x"), ...)``); otherwise
    fail under CI and skip elsewhere.

    Usable in a test, a fixture or at module level (a module-level failure is a collection error).
    """
    if condition:
        return condition
    if in_ci():
        pytest.fail(f"{reason} [CI=true: scripts/install.sh installs it; a broken install]")
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str, reason: str | None = None) -> ModuleType:
    """``pytest.importorskip`` that fails under CI: the imported module, or skip/fail via
    :func:`require` when it cannot be imported."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        require(None, reason or f"could not import {name!r}: {exc}")
        raise  # unreachable: require raised
