"""Shared fixtures. Add yours below; do not remove others'."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def _cached_lm_proxy(int8: bool) -> Any:
    """The Qwen LM proxy from the user's cache (``PROMPTSIEVE_LM_CACHE`` or
    ``<user cache>/promptsieve/proxy``), never exported here: the float32 export needs torch
    and takes minutes, so tests that need it skip where it is absent, CI included."""
    import platformdirs

    from promptsieve._errors import ConfigError
    from promptsieve.proxy.lm import LMProxy, LMProxyConfig

    env = os.environ.get("PROMPTSIEVE_LM_CACHE")
    cache = Path(env) if env else Path(platformdirs.user_cache_dir("promptsieve")) / "proxy"
    try:
        return LMProxy.load(
            LMProxyConfig(cache_dir=cache, allow_export=False, download=False, int8=int8,
                          batch_size=4)
        )  # fmt: skip
    except ConfigError as exc:
        pytest.skip(f"the {'int8' if int8 else 'float32'} LM proxy is not cached here: {exc}")


@pytest.fixture(scope="module")
def lm8() -> Any:
    """The cached int8 Qwen LM proxy (skips where absent)."""
    return _cached_lm_proxy(True)


@pytest.fixture(scope="module")
def lm32() -> Any:
    """The cached float32 Qwen LM proxy (skips where absent)."""
    return _cached_lm_proxy(False)


@pytest.fixture(scope="session")
def bigbench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Where the BIG-bench task files come from: ``"sdist"`` (the verified 1.0.0 sdist, in a
    cache or fetched), ``"folder"`` (the user's ``$PROMPTSIEVE_BIGBENCH_DIR``) or, where
    neither is to be had, ``"fixture"``: a synthetic folder in the real schema
    (``tests/_bigbench_fixture.py``), so the loaders and the bench still run for real. The
    index stopped listing the 1.0.0 sdist on 2026-12-05."""
    from benchmarks.bigbench import _sdist

    from _bigbench_fixture import write_fixture
    from promptsieve._errors import ConfigError

    if os.environ.get(_sdist.DIR_ENV):
        yield "folder"
        return
    if _sdist._find_sdist() is None:
        try:
            _sdist.sdist_path()  # fetched, where the index still lists it
        except ConfigError:
            write_fixture(tmp_path_factory.mktemp("bigbench"))  # sets the two variables
            yield "fixture"
            for var in (_sdist.DIR_ENV, "PROMPTSIEVE_BIGBENCH_SPLIT"):
                os.environ.pop(var, None)
            return
    _sdist.sdist_path()  # a corrupt copy is an error here, not a reason to fall back
    yield "sdist"


@pytest.fixture(scope="session")
def bigbench_sdist(bigbench: str) -> None:
    """For tests of facts about the real BIG-bench 1.0.0 data (its sizes, the committed split,
    committed figures): they skip where only a synthetic or unverified copy is at hand."""
    if bigbench == "folder":
        pytest.skip("needs the bigbench==1.0.0 sdist: unset $PROMPTSIEVE_BIGBENCH_DIR")
    if bigbench != "sdist":
        pytest.skip(
            "needs the bigbench==1.0.0 sdist, which the package index no longer lists; put "
            "bigbench-1.0.0.tar.gz in $PROMPTSIEVE_REGISTRY_DIR to run it"
        )
