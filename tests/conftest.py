"""Shared fixtures. Add yours below; do not remove others'."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary ``PROMPTSIEVE_CACHE_DIR`` shared by the session (see ``promptsieve._paths``)."""
    return tmp_path_factory.mktemp("promptsieve-cache")


@pytest.fixture(scope="session")
def proxy_cache_dir(cache_root: Path) -> Path:
    """One temporary proxy cache for the whole session (the ONNX export happens once)."""
    path = cache_root / "proxy"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def proxy(proxy_cache_dir: Path) -> Iterator[object]:
    """The real proxy (ONNX on onnxruntime), exported once per test session."""
    from promptsieve.proxy import Proxy, ProxyConfig

    yield Proxy.load(ProxyConfig(cache_dir=proxy_cache_dir))
