"""The target under test: an OpenAI-compatible ``/v1/completions`` endpoint, with a cache.

Gemma 3 270M is a base model, so the benchmark uses plain completions. Every call goes
through an on-disk SQLite cache keyed by sha256 of (target identity, model, request body),
so re-running a report costs no target time; the cache keeps the call's original latency
so latency figures survive a re-run. The cache holds the benchmark's prompts (lm-eval's and
the seeded needles, never a user's): it lives in ``bench/`` under promptsieve's cache dir
(``$PROMPTSIEVE_CACHE_DIR``), and the SDK's request path never writes one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from promptsieve._paths import cache_dir

__all__ = [
    "CallCache",
    "Completion",
    "CompletionTarget",
    "LocalLogprobs",
    "LogprobSource",
    "TokenLogprobs",
    "local_gguf",
    "local_identity",
    "local_target",
    "token_starts",
]

log = logging.getLogger(__name__)

#: Under promptsieve's cache dir (``$PROMPTSIEVE_CACHE_DIR``), so an installed copy works too.
DEFAULT_CACHE = cache_dir() / "bench" / "calls.sqlite3"


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float  # of the original call, also on a cache hit
    cached: bool
    finish_reason: str | None


@dataclass(frozen=True)
class TokenLogprobs:
    """Per-token log-probabilities of an echoed prompt; ``offsets`` are char offsets."""

    tokens: tuple[str, ...]
    offsets: tuple[int, ...]
    logprobs: tuple[float | None, ...]
    latency_s: float
    cached: bool


class LogprobSource(Protocol):
    """Anything that gives per-token log-probabilities of a text (for self-information)."""

    def prompt_logprobs(self, text: str) -> TokenLogprobs: ...


class CallCache:
    """SQLite cache of target responses: key → (response json, latency). Thread-safe."""

    def __init__(self, path: Path | None = DEFAULT_CACHE) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, response TEXT NOT NULL,"
                " latency REAL NOT NULL, created REAL NOT NULL)"
            )
            self._db.commit()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(identity: str, model: str, body: dict[str, Any]) -> str:
        raw = json.dumps([identity, model, body], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(raw.encode()).hexdigest()

    def get(self, key: str) -> tuple[dict[str, Any], float] | None:
        if self._db is None:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT response, latency FROM calls WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(row[0]), float(row[1])

    def contains(self, key: str) -> bool:
        if self._db is None:
            return False
        with self._lock:
            row = self._db.execute("SELECT 1 FROM calls WHERE key = ?", (key,)).fetchone()
        return row is not None

    def put(self, key: str, response: dict[str, Any], latency: float) -> None:
        if self._db is None:
            return
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?)",
                (key, json.dumps(response), latency, time.time()),
            )
            self._db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class CompletionTarget:
    """A completions endpoint at ``base_url`` (ending in ``/v1``), called deterministically.

    ``identity`` names the target in cache keys; it defaults to ``base_url`` and is fixed
    for the local target, whose port changes between runs. ``chat=True`` sends each prompt
    as one user message to ``/chat/completions`` (instruct models; the server applies the
    model's chat template) and reads the reply's content as the completion text.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        cache: CallCache | None = None,
        identity: str | None = None,
        seed: int = 0,
        timeout_s: float = 600.0,
        chat: bool = False,
        offline: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.chat = chat
        self.offline = offline  # serve cached calls only; a miss raises RuntimeError
        self.model = model
        self.identity = identity or self.base_url
        self.cache = cache or CallCache(None)
        self.seed = seed
        self.timeout_s = timeout_s
        self._api_key = api_key
        self._calls = [0]  # real (uncached) calls, shared with :meth:`with_system` copies
        #: Chat only: a system message sent before the prompt (see :meth:`with_system`).
        self.system: str | None = None

    @property
    def calls(self) -> int:
        """Real (uncached) calls made, by this target and its :meth:`with_system` copies."""
        return self._calls[0]

    def with_system(self, system: str) -> CompletionTarget:
        """This target (same cache, server and call counter) with a system message before
        every chat prompt; completions targets ignore it. Cache keys change only where set."""
        other = copy.copy(self)
        other.system = system
        return other

    def _body(self, prompt: str, max_tokens: int, stop: Sequence[str]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "seed": self.seed,
        }
        if self.chat:
            system = [{"role": "system", "content": self.system}] if self.system else []
            body["messages"] = [*system, {"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        if stop:
            body["stop"] = list(stop)[:4]  # OpenAI accepts at most 4
        return body

    def is_cached(self, prompt: str, *, max_tokens: int, stop: Sequence[str] = ()) -> bool:
        """Whether :meth:`complete` with these arguments would be a cache hit."""
        key = CallCache.key(self.identity, self.model, self._body(prompt, max_tokens, stop))
        return self.cache.contains(key)

    def complete(self, prompt: str, *, max_tokens: int, stop: Sequence[str] = ()) -> Completion:
        resp, latency, cached = self._post(self._body(prompt, max_tokens, stop))
        choice = resp["choices"][0]
        usage = resp.get("usage") or {}
        text = (choice.get("message") or {}).get("content") if self.chat else choice.get("text")
        return Completion(
            text=str(text or ""),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            latency_s=latency,
            cached=cached,
            finish_reason=choice.get("finish_reason"),
        )

    def prompt_logprobs(self, text: str) -> TokenLogprobs:
        """Log-probability of every prompt token (``echo=True, logprobs=1, max_tokens=1``)."""
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": text,
            "max_tokens": 1,
            "temperature": 0.0,
            "seed": self.seed,
            "echo": True,
            "logprobs": 1,
        }
        resp, latency, cached = self._post(body)
        lp = resp["choices"][0].get("logprobs") or {}
        tokens = tuple(str(t) for t in lp.get("tokens") or ())
        logprobs = tuple(lp.get("token_logprobs") or ())
        offsets = tuple(int(o) for o in lp.get("text_offset") or ())
        if not tokens or len(offsets) != len(tokens):
            raise RuntimeError("target returned no echo logprobs (does it support echo?)")
        n = sum(1 for o in offsets if o < len(text))  # drop the generated token
        return TokenLogprobs(tokens[:n], offsets[:n], logprobs[:n], latency, cached)

    def _post(self, body: dict[str, Any]) -> tuple[dict[str, Any], float, bool]:
        key = CallCache.key(self.identity, self.model, body)
        hit = self.cache.get(key)
        if hit is not None:
            return hit[0], hit[1], True
        if self.offline:
            raise RuntimeError("not in the call cache (offline run)")
        path = "/chat/completions" if "messages" in body else "/completions"
        req = urllib.request.Request(
            f"{self.base_url}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"}
            | ({"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}),
            method="POST",
        )
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                resp = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            raise RuntimeError(f"target HTTP {exc.code}: {detail}") from exc
        latency = time.perf_counter() - t0
        self._calls[0] += 1
        self.cache.put(key, resp, latency)
        return resp, latency, False


class LocalLogprobs:
    """Prompt log-probabilities of the local GGUF, computed in-process with llama.cpp.

    Same weights as the local target's server, but without the server's echo path:
    llama-cpp-python's ``echo=True, logprobs`` sorts the whole 262k-entry Gemma vocabulary
    in Python for every prompt token (measured: 457 s for 550 tokens on 2 cores). Here
    each batch's logits become log-softmax values in one vectorised step, and only the
    actual next token's value is kept. Results go through the call cache.
    """

    def __init__(
        self,
        gguf: str | None = None,
        *,
        cache: CallCache | None = None,
        n_ctx: int = 8192,
        n_batch: int = 256,
        n_threads: int | None = None,
    ) -> None:
        from llama_cpp import Llama

        self.gguf = gguf or local_gguf()
        self.cache = cache or CallCache(None)
        self.identity = f"inproc:{Path(self.gguf).name}"
        self._n_batch = n_batch
        self._llm = Llama(
            model_path=self.gguf,
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_ubatch=n_batch,
            logits_all=True,
            n_threads=n_threads or os.cpu_count() or 2,
            verbose=False,
        )
        self._lock = threading.Lock()

    def prompt_logprobs(self, text: str) -> TokenLogprobs:
        key = CallCache.key(self.identity, "logprobs", {"echo_logprobs": text})
        hit = self.cache.get(key)
        if hit is not None:
            r = hit[0]
            return TokenLogprobs(
                tuple(r["tokens"]), tuple(r["offsets"]), tuple(r["logprobs"]), hit[1], True
            )
        t0 = time.perf_counter()
        with self._lock:
            toks, lps = self._score(text)
        tokens, offsets = self._pieces(text, toks)
        latency = time.perf_counter() - t0
        self.cache.put(
            key, {"tokens": list(tokens), "offsets": list(offsets), "logprobs": lps}, latency
        )
        return TokenLogprobs(tokens, offsets, tuple(lps), latency, False)

    def _score(self, text: str) -> tuple[list[int], list[float | None]]:
        llm = self._llm
        toks = llm.tokenize(text.encode("utf-8"), add_bos=True)
        bos = 1 if toks and toks[0] == llm.token_bos() else 0
        n_vocab = llm.n_vocab()
        llm.reset()
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        out: list[float | None] = [] if bos else [None]
        for i in range(0, len(toks), self._n_batch):
            batch = toks[i : i + self._n_batch]
            llm._batch.set_batch(batch=batch, n_past=i, logits_all=True)
            llm._ctx.decode(llm._batch)
            nxt = np.array(toks[i + 1 : i + len(batch) + 1], dtype=np.int64)
            if not len(nxt):
                break
            logits = np.ctypeslib.as_array(
                llm._ctx.get_logits(), shape=(len(batch) * n_vocab,)
            ).reshape(len(batch), n_vocab)[: len(nxt)]
            for lo in range(0, len(nxt), 32):  # bounded temporaries
                rows = logits[lo : lo + 32]
                m = rows.max(axis=1)
                lse = m + np.log(np.exp(rows - m[:, None]).sum(axis=1))
                picked = rows[np.arange(len(rows)), nxt[lo : lo + 32]]
                out.extend((picked - lse).astype(float).tolist())
        llm.reset()
        return toks[bos:], out

    def _pieces(self, text: str, toks: list[int]) -> tuple[tuple[str, ...], tuple[int, ...]]:
        pieces = [self._llm.detokenize([t]) for t in toks]
        raw = text.encode("utf-8")
        if b"".join(pieces) == raw:
            char_at = np.zeros(len(raw) + 1, dtype=np.int64)  # byte offset -> char offset
            pos = 0
            for ci, ch in enumerate(text):
                n = len(ch.encode("utf-8"))
                char_at[pos : pos + n] = ci
                pos += n
            char_at[pos] = len(text)
            starts = np.cumsum([0] + [len(p) for p in pieces[:-1]])
            offsets = tuple(int(char_at[b]) for b in starts)
        else:
            strs = [p.decode("utf-8", errors="replace") for p in pieces]
            offsets = tuple(int(x) for x in token_starts(text, strs))
        return tuple(p.decode("utf-8", errors="replace") for p in pieces), offsets


def token_starts(text: str, tokens: Sequence[str]) -> np.ndarray:
    """Char offsets of tokens in ``text``; tolerant of tokens that split a UTF-8 character."""
    if "".join(tokens) == text:
        return np.cumsum([0] + [len(t) for t in tokens[:-1]])
    starts: list[int] = []
    cur = 0
    for t in tokens:
        piece = t.replace("\ufffd", "")
        pos = text.find(piece, cur, cur + len(t) + 8) if piece else -1
        starts.append(pos if pos >= 0 else cur)
        cur = (pos + len(piece)) if pos >= 0 else min(len(text), cur + len(piece))
    return np.array(starts)


# -- the local target -----------------------------------------------------------------------

LOCAL_MODEL = "gemma-3-270m"
LOCAL_IDENTITY = "local:gemma-3-270m-q4_k_m"


def local_identity(model: str = LOCAL_MODEL) -> str:
    """The cache identity of an embedded target (fixed: its port changes between runs)."""
    return LOCAL_IDENTITY if model == LOCAL_MODEL else f"local:{model}-q4_k_m"


@contextmanager
def local_target(n_ctx: int = 8192, model: str = LOCAL_MODEL) -> Iterator[tuple[str, str]]:
    """Start an embedded target's server (``promptsieve.local``); yields (base_url, model)."""
    from promptsieve.local import LocalTarget, LocalTargetConfig

    with LocalTarget.start(LocalTargetConfig(model=model, n_ctx=n_ctx)) as t:
        yield t.base_url.rstrip("/"), t.model


def local_gguf(model: str = LOCAL_MODEL) -> str:
    """Path of an embedded target's GGUF (the same file its server loads)."""
    from promptsieve.local import gguf_path

    return str(gguf_path(model))
