"""The targets of the demonstration benchmarks: an embedded Qwen GGUF in llama.cpp,
in-process (:class:`LlamaTarget`), or any OpenAI-compatible chat API (:class:`ChatTarget`).

Both serve what the benchmark asks of a target, for a :class:`~promptsieve.demos.DemoFormat`,
demonstrations and a question: ``reply`` (the greedy answer; accuracy) and ``answer_logprob``
(the log-probability of a given answer; the oracle).

One ``llama_cpp.Llama`` serves both what the benchmark asks of the target:

- ``generate``: the greedy reply to a chat prompt (accuracy of the target), and
- ``score``: the log-probability of an answer after a chat prompt (the *oracle*: the same
  Shapley procedure as the proxy, run on the target itself, as the paper's "oracle SHAP").

Prompts are laid out with the GGUF's chat template (Qwen's ChatML, default system prompt),
exactly as llama.cpp's server would. The KV cache is reused across calls: a new prompt only
feeds the tokens after its longest common prefix with the previous one, so evaluating many
test questions after the same demonstrations, or coalitions in lexicographic order, costs
the new tokens only. Every result goes through the benchmark's SQLite call cache
(:class:`benchmarks.target.CallCache`), so an interrupted run resumes where it stopped.

Cost accounting (:attr:`LlamaTarget.counts`): ``calls`` (what a hosted API would bill as
requests), ``prompt_tokens`` (what it would bill as input tokens: every call's full prompt)
and ``computed_tokens`` (what llama.cpp actually fed after prefix reuse).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from promptsieve.demos import DemoFormat, Demonstration, ValidationExample

from .target import CallCache

__all__ = ["ChatTarget", "LlamaTarget", "OracleScorer"]


class LlamaTarget:
    """A Qwen instruct GGUF run in-process (see module docstring)."""

    def __init__(
        self,
        model: str = "qwen2.5-coder-1.5b-instruct",
        *,
        cache: CallCache | None = None,
        n_ctx: int = 4096,
        n_batch: int = 256,
        n_threads: int | None = None,
    ) -> None:
        from llama_cpp import Llama

        from promptsieve.local import gguf_path

        self.model = model
        self.gguf = str(gguf_path(model))
        self.identity = f"inproc:{Path(self.gguf).name}"
        self.cache = cache or CallCache(None)
        self._n_batch = n_batch
        self._llm = Llama(
            model_path=self.gguf,
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_ubatch=n_batch,
            logits_all=False,
            n_threads=n_threads or os.cpu_count() or 2,
            verbose=False,
        )
        self._n_vocab = self._llm.n_vocab()
        self._cur: list[int] = []  # tokens in the KV cache (sequence 0)
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.seconds = 0.0
        self._stops = {
            self._llm.token_eos(),
            *self._llm.tokenize(b"<|im_end|>", add_bos=False, special=True),
            *self._llm.tokenize(b"<|endoftext|>", add_bos=False, special=True),
        }

    def _tok(self, text: str) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    # -- llama.cpp with prefix reuse ---------------------------------------------------------

    def _feed(self, toks: list[int], logits_from: int) -> np.ndarray:
        """Make the KV cache hold ``toks``; return log-softmax rows ``(k, vocab)`` predicting
        the tokens after positions ``logits_from .. len(toks) - 1``."""
        llm = self._llm
        p = 0
        for a, b in zip(self._cur, toks, strict=False):
            if a != b:
                break
            p += 1
        p = min(p, logits_from, len(toks) - 1)  # positions needing logits are re-fed
        llm._ctx.kv_cache_seq_rm(0, p, -1)
        self._cur = self._cur[:p]
        rows: list[np.ndarray] = []
        i = p
        while i < len(toks):
            batch = toks[i : i + self._n_batch]
            want = i + len(batch) > logits_from
            llm._batch.set_batch(batch=batch, n_past=i, logits_all=want)
            llm._ctx.decode(llm._batch)
            self.counts["computed_tokens"] += len(batch)
            if want:
                raw = np.ctypeslib.as_array(
                    llm._ctx.get_logits(), shape=(len(batch) * self._n_vocab,)
                ).reshape(len(batch), self._n_vocab)
                lo = max(0, logits_from - i)
                sel = raw[lo:].astype(np.float64)
                m = sel.max(axis=1, keepdims=True)
                rows.append(sel - m - np.log(np.exp(sel - m).sum(axis=1, keepdims=True)))
            self._cur.extend(batch)
            i += len(batch)
        return np.concatenate(rows) if rows else np.zeros((0, self._n_vocab))

    def score(self, prompt: str, answer: str) -> float:
        """log p(answer | prompt) in nats (greedy-free; the target's own probabilities)."""
        key = CallCache.key(self.identity, "score", {"prompt": prompt, "answer": answer})
        self.counts["calls"] += 1
        hit = self.cache.get(key)
        p_toks = self._tok(prompt)
        self.counts["prompt_tokens"] += len(p_toks)
        if hit is not None:
            return float(hit[0]["logprob"])
        a_toks = self._tok(answer)
        t0 = time.perf_counter()
        with self._lock:
            lp = self._feed(p_toks + a_toks, len(p_toks) - 1)
        total = float(sum(lp[j, a_toks[j]] for j in range(len(a_toks))))
        dt = time.perf_counter() - t0
        self.seconds += dt
        self.counts["computed_calls"] += 1
        self.cache.put(key, {"logprob": total}, dt)
        return total

    def generate(self, prompt: str, max_tokens: int = 12) -> str:
        """The greedy reply to ``prompt`` (a full chat text), at most ``max_tokens`` tokens."""
        key = CallCache.key(self.identity, "greedy", {"prompt": prompt, "max": max_tokens})
        self.counts["calls"] += 1
        p_toks = self._tok(prompt)
        self.counts["prompt_tokens"] += len(p_toks)
        hit = self.cache.get(key)
        if hit is not None:
            return str(hit[0]["text"])
        t0 = time.perf_counter()
        out: list[int] = []
        with self._lock:
            toks = list(p_toks)
            for _ in range(max_tokens):
                lp = self._feed(toks, len(toks) - 1)
                nxt = int(np.argmax(lp[-1]))
                if nxt in self._stops:
                    break
                out.append(nxt)
                toks.append(nxt)
        text = self._llm.detokenize(out).decode("utf-8", errors="replace")
        dt = time.perf_counter() - t0
        self.seconds += dt
        self.counts["computed_calls"] += 1
        self.cache.put(key, {"text": text}, dt)
        return text

    def reply(self, fmt: DemoFormat, demos: Sequence[Demonstration], query: str) -> str:
        """The greedy reply to ``query`` after ``demos``, laid out by ``fmt``."""
        return self.generate(fmt.lm_text(demos, query))

    def answer_logprob(
        self, fmt: DemoFormat, demos: Sequence[Demonstration], query: str, answer: str
    ) -> float:
        """log p(``answer`` | the prompt), nats, every answer token."""
        return self.score(fmt.lm_text(demos, query), answer)


class ChatTarget:
    """An OpenAI-compatible chat completions API as the benchmark's target (a hosted model,
    or a llama.cpp / vLLM server), through the official ``openai`` client.

    - ``reply``: ``temperature=0``, ``seed=0``, at most ``max_tokens`` tokens.
    - ``answer_logprob``: a chat API scores no given continuation, so the oracle reads the
      greedy reply's log-probabilities: ``answer_tokens`` tokens with ``logprobs=True,
      top_logprobs=k`` (OpenAI allows k ≤ 20), walked by :func:`answer_path_logprob`. The
      value is the answer's log-probability along the greedy path up to the first position
      where the path leaves the answer, and there the mass of the listed tokens that
      continue the answer. It equals the full answer log-probability (what
      :class:`LlamaTarget` scores) when the greedy reply is the answer; otherwise it leaves
      out the answer's tokens after that position (an upper bound).

    The layout sent is :meth:`DemoFormat.messages`. Every response goes through the call
    cache, keyed by ``identity`` (default: base URL and model) and the request body.
    ``counts``: ``calls`` (asked for, cached or not), ``computed_calls`` (sent),
    ``prompt_tokens`` (the API's ``usage.prompt_tokens``, what it bills), ``floored`` and
    ``truncated`` (see :func:`answer_path_logprob`).

    Raises :class:`~promptsieve.ConfigError` at construction without ``openai`` installed;
    ``RuntimeError`` naming the API when a call fails or returns no log-probabilities.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        cache: CallCache | None = None,
        identity: str | None = None,
        top_logprobs: int = 20,
        answer_tokens: int = 6,
        max_tokens: int = 12,
        timeout: float = 120.0,
        client: object | None = None,
    ) -> None:
        try:
            import openai
        except ImportError as exc:
            from promptsieve import ConfigError

            raise ConfigError("ChatTarget needs the openai client: pip install openai") from exc
        self.model = model
        self.base_url = base_url
        self.identity = identity or f"chat:{base_url.rstrip('/')}:{model}"
        self.cache = cache or CallCache(None)
        self.top_logprobs = top_logprobs
        self.answer_tokens = answer_tokens
        self.max_tokens = max_tokens
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "none")
        self._client: Any = client or openai.OpenAI(
            base_url=base_url, api_key=key, timeout=timeout, max_retries=3
        )
        self.counts: Counter[str] = Counter()
        self.seconds = 0.0

    @property
    def oracle_id(self) -> str:
        """What the oracle's values depend on (the demos cache's fingerprint)."""
        return f"{self.identity}:answer-path-v1:k{self.top_logprobs}:n{self.answer_tokens}"

    def _call(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        import openai

        key = CallCache.key(self.identity, kind, body)
        self.counts["calls"] += 1
        hit = self.cache.get(key)
        if hit is not None:
            self.counts["prompt_tokens"] += int(hit[0].get("prompt_tokens", 0))
            return hit[0]
        t0 = time.perf_counter()
        try:
            resp = self._client.chat.completions.create(model=self.model, **body)
        except openai.APIError as exc:
            raise RuntimeError(
                f"chat target {self.model!r} at {self.base_url} failed: {exc} (the base URL is "
                "the API's root, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1)"
            ) from exc
        dt = time.perf_counter() - t0
        self.seconds += dt
        if not resp.choices:
            raise RuntimeError(f"chat target {self.model!r} at {self.base_url}: no choices")
        choice = resp.choices[0]
        out: dict[str, Any] = {
            "text": choice.message.content or "",
            "prompt_tokens": int(getattr(resp.usage, "prompt_tokens", 0) or 0),
        }
        if body.get("logprobs"):
            content = getattr(choice.logprobs, "content", None) or []
            if not content or not all(c.top_logprobs for c in content):
                raise RuntimeError(
                    f"chat target {self.model!r} at {self.base_url} returned no top_logprobs; "
                    "the oracle needs logprobs=True and top_logprobs (OpenAI, vLLM and "
                    "llama.cpp have them)"
                )
            out["path"] = [
                [c.token, float(c.logprob), [[t.token, float(t.logprob)] for t in c.top_logprobs]]
                for c in content
            ]
        self.counts["computed_calls"] += 1
        self.counts["prompt_tokens"] += out["prompt_tokens"]
        self.cache.put(key, out, dt)
        return out

    def reply(self, fmt: DemoFormat, demos: Sequence[Demonstration], query: str) -> str:
        """The greedy reply to ``query`` after ``demos`` (``fmt.messages``)."""
        body = {"messages": fmt.messages(demos, query), "max_tokens": self.max_tokens,
                "temperature": 0.0, "seed": 0}  # fmt: skip
        return str(self._call("reply", body)["text"])

    def answer_logprob(
        self, fmt: DemoFormat, demos: Sequence[Demonstration], query: str, answer: str
    ) -> float:
        """log p(``answer``) read off the greedy reply (nats; :func:`answer_path_logprob`)."""
        if not answer.strip():
            return 0.0
        body = {"messages": fmt.messages(demos, query), "max_tokens": self.answer_tokens,
                "temperature": 0.0, "seed": 0, "logprobs": True,
                "top_logprobs": self.top_logprobs}  # fmt: skip
        path = self._call("answer-path", body)["path"]
        return answer_path_logprob(path, answer, self.counts)


def answer_path_logprob(
    path: Sequence[Sequence[Any]], answer: str, counts: Counter[str] | None = None
) -> float:
    """log p(``answer``) from a greedy reply's log-probabilities, nats.

    ``path``: per generated position ``[token, logprob, [[listed token, logprob], ...]]``
    (an OpenAI ``logprobs.content``). Leading whitespace of the answer and of the first
    token is ignored, and so is the answer's trailing whitespace. While the greedy token is
    a proper prefix of what remains of the answer, its log-probability is added and the walk
    goes on (so "(", "A", ")" and Qwen's "(A", ")" both score "(A)" token by token). At
    the first other position, the value adds the log of the mass of the listed tokens that
    begin the rest of the answer, or end it with punctuation only (a token shared by several
    answers counts for each); when none is listed, the smallest listed log-probability, an
    upper bound for each unlisted token (``counts["floored"]``). A reply that ends inside
    the answer returns the sum so far (``counts["truncated"]``). An empty answer scores 0.
    """
    rest = answer.strip()
    if not rest:
        return 0.0
    total = 0.0
    for i, (token, logprob, top) in enumerate(path):
        g = _norm(token, i == 0)
        if g and len(g) < len(rest) and rest.startswith(g):
            total += float(logprob)
            rest = rest[len(g) :]
            continue
        hits = [float(lp) for t, lp in top if _begins(_norm(t, i == 0), rest)]
        if hits:
            return total + float(np.logaddexp.reduce(hits))
        if counts is not None:
            counts["floored"] += 1
        return total + min(float(lp) for _, lp in top)
    if counts is not None:
        counts["truncated"] += 1
    return total


def _norm(token: str, first: bool) -> str:
    return token.lstrip() if first else token


def _begins(token: str, rest: str) -> bool:
    """``token`` starts ``rest``, or is all of it plus punctuation ("yes." for "yes", not
    "not" for "no")."""
    if not token:
        return False
    if rest.startswith(token):
        return True
    return token.startswith(rest) and not any(ch.isalnum() for ch in token[len(rest) :])


class OracleScorer:
    """:class:`promptsieve.demos.CoalitionScorer` on the target itself (the paper's oracle).

    Each coalition × validation request is one target call (a hosted API would bill each);
    coalitions are visited in lexicographic order so llama.cpp reuses the shared prefix.
    """

    def __init__(self, target: LlamaTarget | ChatTarget) -> None:
        self.target = target

    @property
    def fingerprint(self) -> str:
        return f"oracle:{getattr(self.target, 'oracle_id', self.target.identity)}"

    def values(
        self,
        demos: Sequence[Demonstration],
        validation: Sequence[ValidationExample],
        fmt: DemoFormat,
        coalitions: Sequence[tuple[int, ...]],
    ) -> np.ndarray:
        out = np.empty(len(coalitions))
        for i in sorted(range(len(coalitions)), key=lambda j: coalitions[j]):
            kept = [demos[k] for k in coalitions[i]]
            vals = [
                self.target.answer_logprob(fmt, kept, v.input, fmt.render_answer(v.answer))
                for v in validation
            ]
            out[i] = float(np.mean(vals))
        return out
