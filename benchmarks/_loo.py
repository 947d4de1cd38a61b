"""The target's own leave-one-out sentence attribution (the paper's "oracle explanation").

For a prompt made of sentences, the local target (llama.cpp, in-process, the GGUF's own chat
template, one user message) first answers the whole prompt greedily; then, for every
sentence, the log-probability of *that* answer is measured with the sentence removed. A
sentence's attribution is the drop ``log p(answer | prompt) − log p(answer | prompt ∖ s)``:
how much the target needed it for the answer it gives.

Cost control: variants are evaluated against the KV cache of the previous one, so each
re-evaluates only from the removed sentence on (longest common token prefix); logits are
computed only at the answer's positions. Results are cached as JSON lines under
``benchmarks/.cache/loo-<model>.jsonl`` keyed by the prompt pieces, so interrupted runs
resume. Calls and evaluated tokens are counted for the cost comparison.

The ``Liu et al. 2025`` protocol (arXiv 2505.12509, "Revitalizing Black-Box
Interpretability") compares a proxy's explanation with this oracle's.
:class:`ProxyLeaveOneOut` computes the same attribution on the ONNX LM proxy, for the
proxy's own answer (the paper's proxy explanation) or for a given one (the target's).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LeaveOneOut", "LooResult", "ProxyLeaveOneOut", "cached_result", "render"]

log = logging.getLogger(__name__)

CACHE_DIR = Path("benchmarks/.cache")
MAX_ANSWER_TOKENS = 24


@dataclass(frozen=True)
class LooResult:
    """``drops[i]``: log p(answer | full) − log p(answer | without sentence i) (nats)."""

    answer: str
    logp_full: float
    drops: tuple[float, ...]
    calls: int  # target: 1 generation + one per sentence; LM proxy: graph runs
    tokens: int  # tokens evaluated (after KV-cache reuse)
    tokens_no_cache: int  # what the same calls evaluate without reuse
    seconds: float


def render(docs: Sequence[Sequence[str]], question_block: str, drop: int | None = None) -> str:
    """Documents as the benchmark renders them (``Document [i]`` + text), without sentence
    ``drop`` (a flat index over all documents' sentences), then the question block."""
    out: list[str] = []
    k = 0
    for i, sents in enumerate(docs):
        kept = []
        for s in sents:
            if k != drop:
                kept.append(s)
            k += 1
        out.append(f"Document [{i + 1}]\n{' '.join(kept)}\n\n")
    return "".join(out) + question_block


class LeaveOneOut:
    """Leave-one-out attribution on an embedded local target (see module docstring)."""

    def __init__(self, model: str = "qwen2.5-coder-0.5b-instruct", n_ctx: int = 4096) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        from promptsieve.local import gguf_path

        self.model = model
        threads = int(os.environ.get("LOO_THREADS", "0")) or (os.cpu_count() or 2)
        self.llm = Llama(
            model_path=str(gguf_path(model)),
            n_ctx=n_ctx,
            n_batch=256,
            n_ubatch=256,
            n_threads=threads,
            verbose=False,
        )
        meta = self.llm.metadata
        eos = self.llm.token_eos()
        self._eos_ids = {eos}
        for name in ("<|im_end|>", "<|endoftext|>"):
            ids = self.llm.tokenize(name.encode(), add_bos=False, special=True)
            if len(ids) == 1:
                self._eos_ids.add(ids[0])
        self._fmt = Jinja2ChatFormatter(
            template=meta["tokenizer.chat_template"],
            eos_token=self.llm.detokenize([eos]).decode(errors="ignore"),
            bos_token="",
        )
        self._cached: list[int] = []  # tokens currently in the KV cache
        self._memo = _Memo(model)
        # greedy answers by a hash of the model and prompt (no prompt text is stored)
        self._answers = _Store(CACHE_DIR / f"answers-{model}.jsonl", "answer")

    # -- prompt -> tokens ---------------------------------------------------------------------
    def _prompt_tokens(self, prompt: str) -> list[int]:
        text = self._fmt(messages=[{"role": "user", "content": prompt}]).prompt
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _eval(self, tokens: list[int], want: Sequence[int]) -> tuple[dict[int, np.ndarray], int]:
        """Evaluate ``tokens`` reusing the KV cache; log-softmax rows at positions ``want``."""
        llm = self.llm
        # always evaluate at least the last token
        lcp = min(_common_prefix(self._cached, tokens), len(tokens) - 1)
        want_set = {p for p in want}
        lcp = min([lcp, *want_set])  # positions we need logits for must be re-evaluated
        llm._ctx.kv_cache_seq_rm(-1, lcp, -1)
        rows: dict[int, np.ndarray] = {}
        n_vocab = llm.n_vocab()
        for i in range(lcp, len(tokens), 256):
            batch = tokens[i : i + 256]
            llm._batch.set_batch(batch=batch, n_past=i, logits_all=False)
            flagged = [j for j in range(len(batch)) if i + j in want_set]
            for j in range(len(batch)):
                llm._batch.batch.logits[j] = (i + j) in want_set
            llm._ctx.decode(llm._batch)
            for j in flagged:
                ptr = llm._ctx.get_logits_ith(j)
                row = np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)
                m = row.max()
                rows[i + j] = row - (m + np.log(np.exp(row - m).sum()))
        self._cached = list(tokens)
        return rows, len(tokens) - lcp

    def _generate(self, prompt_tokens: list[int]) -> tuple[list[int], int, int | None]:
        """Greedy answer tokens, tokens evaluated, and the stop token that ended the answer
        (None at :data:`MAX_ANSWER_TOKENS`)."""
        toks = list(prompt_tokens)
        out: list[int] = []
        evaluated = 0
        for _ in range(MAX_ANSWER_TOKENS):
            rows, n = self._eval(toks, [len(toks) - 1])
            evaluated += n
            nxt = int(np.argmax(rows[len(toks) - 1]))
            if nxt in self._eos_ids:
                return out, evaluated, nxt
            out.append(nxt)
            toks.append(nxt)
        return out, evaluated, None

    def _answer_logp(self, prompt_tokens: list[int], answer: list[int]) -> tuple[float, int]:
        toks = prompt_tokens + answer
        start = len(prompt_tokens)
        want = list(range(start - 1, len(toks) - 1))
        rows, n = self._eval(toks, want)
        return float(sum(rows[p][toks[p + 1]] for p in want)), n

    # -- public -------------------------------------------------------------------------------
    def attribute(self, docs: Sequence[Sequence[str]], question_block: str) -> LooResult:
        """Leave-one-out drops for every sentence of ``docs`` (flat order)."""
        hit = self._memo.get(docs, question_block)
        if hit is not None:
            return hit
        t0 = time.perf_counter()
        full = self._prompt_tokens(render(docs, question_block))
        out, n_gen, stop = self._generate(full)
        answer = out or [stop if stop is not None else self.llm.token_eos()]  # an empty answer
        logp_full, n0 = self._answer_logp(full, answer)
        tokens = n_gen + n0
        # greedy steps without reuse: one per answer token, plus the one that gave the stop
        no_cache = len(full) * (len(out) + (stop is not None)) + len(full) + len(answer)
        n_sent = sum(len(d) for d in docs)
        drops = []
        for i in reversed(range(n_sent)):  # later sentences first: shortest re-evaluations
            var = self._prompt_tokens(render(docs, question_block, drop=i))
            lp, n = self._answer_logp(var, answer)
            tokens += n
            no_cache += len(var) + len(answer)
            drops.append(logp_full - lp)
        drops.reverse()
        res = LooResult(
            answer=self.llm.detokenize(out).decode("utf-8", errors="replace").strip(),
            logp_full=logp_full,
            drops=tuple(float(d) for d in drops),
            calls=1 + n_sent,
            tokens=tokens,
            tokens_no_cache=no_cache,
            seconds=time.perf_counter() - t0,
        )
        self._memo.put(docs, question_block, res)
        return res

    def answer(self, prompt: str) -> str:
        """The target's greedy answer to ``prompt`` (one user message), stripped; cached by
        the prompt's hash."""
        key = hashlib.sha256(json.dumps([self.model, prompt]).encode()).hexdigest()[:24]
        if key in self._answers.rows:
            return str(self._answers.rows[key])
        out, _, _ = self._generate(self._prompt_tokens(prompt))
        text = self.llm.detokenize(out).decode("utf-8", errors="replace").strip()
        self._answers.put(key, text)
        return text


def _common_prefix(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _key(
    model: str, docs: Sequence[Sequence[str]], question_block: str, answer: str | None = None
) -> str:
    parts: list[Any] = [model, [list(d) for d in docs], question_block]
    if answer is not None:  # an explained answer given by the caller, not generated
        parts.append(answer)
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


class _Store:
    """A key -> JSON value map kept as appended JSON lines ``{"key": ..., <field>: value}``
    at ``path`` (unreadable lines skipped), so that an interrupted run resumes."""

    def __init__(self, path: Path, field: str) -> None:
        self.path, self.field = path, field
        self.rows: dict[str, Any] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.rows[str(row["key"])] = row[field]
                except (ValueError, KeyError, TypeError):
                    continue

    def put(self, key: str, value: Any) -> None:
        self.rows[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"key": key, self.field: value}) + "\n")


class _Memo:
    """``model``'s leave-one-out results in ``CACHE_DIR/loo-<model>.jsonl`` (field
    ``result``), keyed by :func:`_key`."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._store = _Store(CACHE_DIR / f"loo-{model}.jsonl", "result")

    def get(
        self, docs: Sequence[Sequence[str]], question_block: str, answer: str | None = None
    ) -> LooResult | None:
        r = self._store.rows.get(_key(self.model, docs, question_block, answer))
        try:
            return None if r is None else LooResult(**{**r, "drops": tuple(r["drops"])})
        except (KeyError, TypeError):  # a row of another schema: recompute
            return None

    def put(
        self,
        docs: Sequence[Sequence[str]],
        question_block: str,
        res: LooResult,
        answer: str | None = None,
    ) -> None:
        self._store.put(_key(self.model, docs, question_block, answer), asdict(res))


def cached_result(
    model: str, docs: Sequence[Sequence[str]], question_block: str
) -> LooResult | None:
    """A cached leave-one-out result, or None (never loads the target)."""
    return _Memo(model).get(docs, question_block)


class ProxyLeaveOneOut:
    """The same leave-one-out attribution computed on the ONNX LM proxy
    (:class:`promptsieve.proxy.lm.LMProxy`, Qwen2.5-Coder-0.5B-Instruct) instead of the target:
    the paper's proxy explanation. By default it explains the proxy's *own* greedy answer, so
    it needs no target call and could run before a request is sent; given ``answer`` (the
    target's reply to the full prompt, known for every screened request because the original
    prompt was sent) it explains that answer instead.

    The prompt is the one :class:`LeaveOneOut` builds (one ChatML user message after Qwen's
    default system message, :func:`promptsieve.proxy.lm.chatml`). Each variant reuses the full
    prompt's KV cache up to the longest common token prefix. ``calls`` counts graph runs,
    ``tokens`` the tokens fed (the cost figures of :class:`LooResult`), ``seconds`` wall time.
    Cached in ``benchmarks/.cache/loo-proxy-<fingerprint>.jsonl``, keyed by the prompt pieces
    and the given answer.
    """

    def __init__(self, lm: Any) -> None:
        from promptsieve.proxy.lm import chatml

        self.lm = lm
        self.model = f"proxy-{lm.fingerprint}"
        self._open, self._close = chatml(None)
        stops = [lm.encode(t) for t in ("<|im_end|>", "<|endoftext|>")]
        self._eos_ids = {int(t[0]) for t in stops if len(t) == 1}
        assert len(stops[0]) == 1, "<|im_end|> is one token in Qwen2.5's vocabulary"
        self._im_end = int(stops[0][0])
        self._memo = _Memo(self.model)

    def _ids(self, prompt: str) -> np.ndarray:
        return self.lm.encode(self._open + prompt + self._close)

    def _generate(self, state: Any) -> tuple[list[int], int | None]:
        """The greedy answer's tokens after ``state`` and the stop token that ended it (None
        at :data:`MAX_ANSWER_TOKENS`)."""
        out: list[int] = []
        while True:
            nxt = int(np.argmax(state.last_logprobs))
            if nxt in self._eos_ids:
                return out, nxt
            out.append(nxt)
            if len(out) == MAX_ANSWER_TOKENS:
                return out, None
            state = self.lm.extend(state, np.array([nxt]))

    def attribute(
        self, docs: Sequence[Sequence[str]], question_block: str, answer: str | None = None
    ) -> LooResult:
        """Leave-one-out drops for every sentence of ``docs`` (flat order) of the proxy's own
        greedy answer, or of ``answer`` when given (an empty one scores the end of turn)."""
        from promptsieve.proxy.lm import KVState

        hit = self._memo.get(docs, question_block, answer)
        if hit is not None:
            return hit
        t0 = time.perf_counter()
        runs0, tok0 = self.lm.runs, self.lm.tokens_run
        full = self._ids(render(docs, question_block))
        state = self.lm.extend(None, full)
        if answer is None:
            out, stop = self._generate(state)
        else:
            out, stop = [int(t) for t in self.lm.encode(answer)], self._im_end
        # an empty answer: score the stop token that ended it
        ans = np.asarray(out or [stop if stop is not None else self._im_end], dtype=np.int64)
        logp_full = float(self.lm.score(state, [(np.zeros(0, np.int64), ans)])[0])
        # greedy steps without reuse: one per answer token, plus the one that gave the stop
        gen = len(full) * (len(out) + (stop is not None)) if answer is None else 0
        no_cache = gen + len(full) + len(ans)
        n_sent = sum(len(d) for d in docs)
        drops = []
        for i in range(n_sent):
            var = self._ids(render(docs, question_block, drop=i))
            lcp = min(_common_prefix(full, var), len(var) - 1)
            past = tuple(np.ascontiguousarray(p[:, :, :lcp, :]) for p in state.past)
            lp = float(self.lm.score(KVState(past, lcp, None), [(var[lcp:], ans)])[0])
            no_cache += len(var) + len(ans)
            drops.append(logp_full - lp)
        res = LooResult(
            answer=self.lm.decode(out).strip(),
            logp_full=logp_full,
            drops=tuple(float(d) for d in drops),
            calls=self.lm.runs - runs0,
            tokens=self.lm.tokens_run - tok0,
            tokens_no_cache=no_cache,
            seconds=time.perf_counter() - t0,
        )
        self._memo.put(docs, question_block, res, answer)
        return res
