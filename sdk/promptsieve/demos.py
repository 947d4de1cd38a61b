"""Demonstration attribution, selection and cleaning, on the LM proxy.

This is the seed paper's own use of proxy explanations ("Revitalizing Black-Box
Interpretability", Liu et al., ACL 2026, arXiv 2505.12509): score each few-shot
demonstration's contribution with Kernel SHAP on a small proxy LM instead of on the target,
then

- *select*: remove the least useful demonstrations first (a ladder over how many are kept,
  confirmed against the target by the sieve's sequential test, see :class:`DemoCompressor`);
- *clean*: remove every demonstration that contributes negatively (poisoned or mislabelled
  examples, see :func:`clean_demos`).

The value of a set ``S`` of demonstrations is the proxy's mean log-probability (nats) of
the answers of a few validation requests, each asked after the demonstrations in ``S``:
``v(S) = mean_j log p_proxy(answer_j | header + demos(S) + query_j)``. The answer is the
gold one when the user supplies it (accuracy) or the target's own answer to the full prompt
(agreement, see :func:`label_with_target`). Shapley values of ``v`` are computed exactly for
``n <= 10`` demonstrations and by Kernel SHAP (Lundberg & Lee 2017) above; the values sum to
``v(all) - v(none)``.

Attribution runs once per task and is cached on disk per (demonstration set, validation set,
format, method, proxy fingerprint, :data:`DEMOS_VERSION`); a cache written by another proxy
or version is never reused. The cache holds values and hashes, never prompt text.

Cost: coalitions are evaluated in lexicographic order so that the proxy's KV cache is shared
along common prefixes (each demonstration is fed once per trie node, each validation query
once per coalition, the queries of one coalition as one batch).

Without an LM proxy (no export, no ``promptsieve[export]``), :class:`HeadDemoScorer` ranks
demonstrations by the MiniLM query head's mean keep-probability: a cheap fallback that can
rank but not attribute (its values are not Shapley values, and cleaning refuses it).
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from promptsieve import _shapley
from promptsieve._errors import ConfigError
from promptsieve.prompt import COMPRESSIBLE_ROLES, Message, TextPart, as_messages

__all__ = [
    "DEMOS_VERSION",
    "CleanReport",
    "CoalitionScorer",
    "DemoAttribution",
    "DemoAttributionConfig",
    "DemoCompression",
    "DemoCompressor",
    "DemoFormat",
    "Demonstration",
    "HeadDemoScorer",
    "LMDemoScorer",
    "ValidationExample",
    "attribute_demos",
    "clean_demos",
    "demo_ladder",
    "label_with_target",
    "load_demonstrations",
    "load_validation",
    "select_demos",
]

log = logging.getLogger(__name__)

#: Bump when the value function or the estimators change: older caches are then ignored.
DEMOS_VERSION = 1


# ------------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class Demonstration:
    """One few-shot demonstration: an input and its output (answer)."""

    input: str
    output: str


@dataclass(frozen=True)
class ValidationExample:
    """A validation request and the answer whose log-probability is scored.

    ``answer``: the gold answer (accuracy), or the target's own answer to the full prompt
    (agreement, :func:`label_with_target`).
    """

    input: str
    answer: str


@dataclass(frozen=True)
class DemoFormat:
    """How demonstrations are laid out in the prompt (the proxy sees the same layout).

    The prompt is ``header + demo(d_1) + ... + demo(d_k) + query(x)`` and the answer follows
    it. ``chat=True``: that prompt is one user turn in Qwen's ChatML template (as an instruct
    target receives it) and the answer is the assistant's reply; ``system`` is the system
    prompt (None: the model's default). Templates use ``{input}``, ``{output}``,
    ``{answer}``.
    """

    header: str = ""
    demo: str = "Q: {input}\nA: {output}\n\n"
    query: str = "Q: {input}\nA:"
    answer: str = "{answer}"
    chat: bool = True
    system: str | None = None

    def __post_init__(self) -> None:
        for name, fields in (("demo", ("input", "output")), ("query", ("input",))):
            tpl = getattr(self, name)
            for f in fields:
                if "{" + f + "}" not in tpl:
                    raise ConfigError(f"DemoFormat.{name} must contain {{{f}}}, got {tpl!r}")
        if "{answer}" not in self.answer:
            raise ConfigError("DemoFormat.answer must contain {answer}")

    def render_demo(self, d: Demonstration) -> str:
        return self.demo.replace("{input}", d.input).replace("{output}", d.output)

    def render_query(self, text: str) -> str:
        return self.query.replace("{input}", text)

    def render_answer(self, text: str) -> str:
        return self.answer.replace("{answer}", text)

    def render(self, demos: Sequence[Demonstration], query: str) -> str:
        """The user prompt: header, demonstrations in order, query."""
        return self.header + "".join(self.render_demo(d) for d in demos) + self.render_query(query)


@dataclass(frozen=True)
class DemoAttributionConfig:
    """How attribution is computed.

    ``method``: "auto" (exact Shapley for ``n <= exact_max``, else Kernel SHAP), "exact" or
    "kernel". ``samples``: Kernel SHAP coalitions (the paper uses 1,000 perturbations).
    ``max_validation``: validation requests used (the first ones). ``cache_dir=None``:
    ``<promptsieve cache>/demos``; ``cache=False`` neither reads nor writes it.
    ``fallback``: when no scorer is given and the LM proxy cannot be loaded (not exported and
    ``promptsieve[export]`` missing, or its GGUF unavailable), rank with the MiniLM head
    (:class:`HeadDemoScorer`) instead of raising. ``lm``: the
    :class:`promptsieve.proxy.lm.LMProxyConfig` of the default scorer (None: its defaults).
    """

    method: Literal["auto", "exact", "kernel"] = "auto"
    samples: int = 1000
    exact_max: int = 10
    seed: int = 0
    max_validation: int = 8
    cache: bool = True
    cache_dir: Path | None = None
    fallback: bool = True
    lm: Any = None

    def __post_init__(self) -> None:
        if self.method not in ("auto", "exact", "kernel"):
            raise ConfigError(f"method must be auto, exact or kernel, got {self.method!r}")
        if self.samples < 2:
            raise ConfigError("samples must be >= 2")
        if not 1 <= self.exact_max <= 16:
            raise ConfigError("exact_max must be in [1, 16] (2**n coalitions)")
        if self.max_validation < 1:
            raise ConfigError("max_validation must be >= 1")

    def resolved_method(self, n: int) -> Literal["exact", "kernel"]:
        if self.method == "auto":
            return "exact" if n <= self.exact_max else "kernel"
        return self.method


@dataclass(frozen=True)
class DemoAttribution:
    """Each demonstration's contribution to the value ``v`` (see module docstring).

    ``values[i]``: Shapley value of demonstration ``i`` in nats of mean answer log-prob
    (method "exact" / "kernel"), or the head's centred mean keep-probability (method "head",
    not a Shapley value); all zeros for method "none" (fewer than 2 demonstrations).
    """

    values: tuple[float, ...]
    empty_value: float
    full_value: float
    method: Literal["exact", "kernel", "head", "none"]
    evaluations: int  # coalitions valued on the proxy
    proxy: str  # fingerprint of the scorer (proxy) that produced the values
    key: str  # cache key
    seconds: float
    tokens: int  # proxy tokens run (0 when read from the cache)
    cached: bool = False

    @property
    def n(self) -> int:
        return len(self.values)

    def ranking(self) -> list[int]:
        """Demonstration indices, least useful first (ties: the later one first)."""
        return sorted(range(self.n), key=lambda i: (self.values[i], -i))

    def keep(self, k: int) -> list[int]:
        """Indices of the ``k`` most useful demonstrations, in their original order."""
        k = max(0, min(self.n, k))
        dropped = set(self.ranking()[: self.n - k])
        return [i for i in range(self.n) if i not in dropped]

    def negative(self, margin: float = 0.0) -> list[int]:
        """Indices whose value is below ``-margin`` (they lower the answers' likelihood)."""
        return [i for i, v in enumerate(self.values) if v < -margin]


class CoalitionScorer(Protocol):
    """What attribution needs from a model: values of many demonstration subsets at once.

    ``values`` returns ``(len(coalitions),)`` mean log-probabilities (nats) of the
    validation answers after ``header + demos(S) + query``; each coalition is a sorted tuple
    of demonstration indices. ``fingerprint`` names the model (part of the cache key).
    """

    @property
    def fingerprint(self) -> str: ...

    def values(
        self,
        demos: Sequence[Demonstration],
        validation: Sequence[ValidationExample],
        fmt: DemoFormat,
        coalitions: Sequence[tuple[int, ...]],
    ) -> np.ndarray: ...


# -------------------------------------------------------------------------------- parsing


def _read_jsonl(path: Path, what: str) -> list[tuple[int, Any]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start})") from exc
    rows: list[tuple[int, Any]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((lineno, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{lineno}: not a JSON object: {exc.msg}") from exc
    return rows


_INPUT_KEYS = ("input", "question", "query", "prompt", "x")
_OUTPUT_KEYS = ("output", "answer", "label", "target", "y")


def _field(obj: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    for k in keys:
        v = obj.get(k)
        if isinstance(v, str):
            return v
        if isinstance(v, (int, float, bool)) and not isinstance(v, bool):
            return str(v)
    return None


def load_demonstrations(path: Path | str) -> list[Demonstration]:
    """Demonstrations from a JSONL file: one object a line with an input (``input``,
    ``question``, ``query``, ``prompt`` or ``x``) and an output (``output``, ``answer``,
    ``label``, ``target`` or ``y``), both strings (numbers are accepted as text).

    Raises :class:`ConfigError` naming the file and line of the first bad row.
    """
    path = Path(path)
    out: list[Demonstration] = []
    for lineno, obj in _read_jsonl(path, "demonstrations"):
        d = _demo_from(obj)
        if d is None:
            raise ConfigError(
                f"{path}:{lineno}: a demonstration needs an input ({'/'.join(_INPUT_KEYS)}) "
                f"and an output ({'/'.join(_OUTPUT_KEYS)}) string"
            )
        out.append(d)
    return out


def _demo_from(obj: Any) -> Demonstration | None:
    if not isinstance(obj, Mapping):
        return None
    x, y = _field(obj, _INPUT_KEYS), _field(obj, _OUTPUT_KEYS)
    if x is None or y is None:
        return None
    return Demonstration(x, y)


def load_validation(path: Path | str) -> list[ValidationExample]:
    """Validation requests from JSONL, same keys as :func:`load_demonstrations`.

    Raises :class:`ConfigError` naming the line of a row without an input or answer.
    """
    path = Path(path)
    out: list[ValidationExample] = []
    for lineno, obj in _read_jsonl(path, "validation"):
        d = _demo_from(obj)
        if d is None:
            raise ConfigError(
                f"{path}:{lineno}: a validation request needs an input and an answer string "
                "(gold, or the target's own answer for agreement)"
            )
        out.append(ValidationExample(d.input, d.output))
    return out


def label_with_target(
    demos: Sequence[Demonstration],
    inputs: Iterable[str],
    ask: Callable[[str], str],
    fmt: DemoFormat | None = None,
) -> list[ValidationExample]:
    """Validation examples labelled by the target itself (agreement mode).

    ``ask(prompt) -> answer`` sends the full prompt (all demonstrations) to the target once
    per input; its answer, stripped, becomes the answer the proxy scores.
    """
    fmt = fmt or DemoFormat()
    return [ValidationExample(x, ask(fmt.render(demos, x)).strip()) for x in inputs]


# --------------------------------------------------------------------------- value functions


class LMDemoScorer:
    """:class:`CoalitionScorer` on the ONNX LM proxy, sharing its KV cache along prefixes.

    ``lm=None`` loads :class:`promptsieve.proxy.lm.LMProxy` with ``config`` on first use.
    """

    def __init__(self, lm: Any = None, config: Any = None) -> None:
        self._lm = lm
        self._config = config
        self._lock = threading.Lock()

    @property
    def lm(self) -> Any:
        with self._lock:
            if self._lm is None:
                from promptsieve.proxy.lm import LMProxy

                self._lm = LMProxy.load(self._config)
            return self._lm

    @property
    def fingerprint(self) -> str:
        return f"lm:{self.lm.fingerprint}"

    def values(
        self,
        demos: Sequence[Demonstration],
        validation: Sequence[ValidationExample],
        fmt: DemoFormat,
        coalitions: Sequence[tuple[int, ...]],
    ) -> np.ndarray:
        return self.matrix(demos, validation, fmt, coalitions).mean(axis=1)

    def matrix(
        self,
        demos: Sequence[Demonstration],
        validation: Sequence[ValidationExample],
        fmt: DemoFormat,
        coalitions: Sequence[tuple[int, ...]],
    ) -> np.ndarray:
        """``(len(coalitions), len(validation))`` answer log-probs (nats)."""
        from promptsieve.proxy.lm import chatml

        lm = self.lm
        opening, closing = chatml(fmt.system) if fmt.chat else ("", "")
        head = lm.encode(opening + fmt.header)
        demo_ids = [lm.encode(fmt.render_demo(d)) for d in demos]
        conts = [
            (lm.encode(fmt.render_query(v.input) + closing), lm.encode(fmt.render_answer(v.answer)))
            for v in validation
        ]
        bad = [i for i, (_, t) in enumerate(conts) if len(t) == 0]
        if bad:
            raise ConfigError(f"validation answers {bad} are empty: the proxy cannot score them")
        out = np.empty((len(coalitions), len(validation)))
        stack: list[tuple[tuple[int, ...], Any]] = [((), lm.extend(None, head))]
        for i in sorted(range(len(coalitions)), key=lambda j: coalitions[j]):
            c = coalitions[i]
            while c[: len(stack[-1][0])] != stack[-1][0]:
                stack.pop()
            while len(stack[-1][0]) < len(c):
                prefix, state = stack[-1]
                nxt = c[len(prefix)]
                stack.append((c[: len(prefix) + 1], lm.extend(state, demo_ids[nxt])))
            out[i] = lm.score(stack[-1][1], conts)
        return out

    @property
    def tokens_run(self) -> int:
        return int(getattr(self._lm, "tokens_run", 0)) if self._lm is not None else 0


class HeadDemoScorer:
    """The cheap fallback: rank demonstrations by the MiniLM query head, no LM proxy.

    A demonstration's score is its mean keep-probability under the query head with each
    validation input as the question, averaged over inputs, centred on the mean over
    demonstrations. Not a Shapley value; :func:`clean_demos` refuses it.
    """

    def __init__(self, proxy: Any = None) -> None:
        self._proxy = proxy

    @property
    def proxy(self) -> Any:
        if self._proxy is None:
            from promptsieve.proxy import Proxy

            self._proxy = Proxy.load()
        return self._proxy

    @property
    def fingerprint(self) -> str:
        p = self.proxy
        _ = p.scorer_session
        return f"head:{p.scorer_fingerprint}"

    def scores(
        self,
        demos: Sequence[Demonstration],
        validation: Sequence[ValidationExample],
        fmt: DemoFormat,
    ) -> np.ndarray:
        s = np.zeros(len(demos))
        for v in validation:
            for i, d in enumerate(demos):
                out = self.proxy.keep_probs(fmt.render_demo(d), question=v.input)
                s[i] += float(out.keep_probs.mean()) if len(out.keep_probs) else 0.0
        s /= max(1, len(validation))
        return s - s.mean()


# ----------------------------------------------------------------------------- attribution


def _key(
    demos: Sequence[Demonstration],
    validation: Sequence[ValidationExample],
    fmt: DemoFormat,
    method: str,
    config: DemoAttributionConfig,
    proxy: str,
) -> str:
    blob = {
        "version": DEMOS_VERSION,
        "proxy": proxy,
        "method": method,
        "samples": config.samples if method == "kernel" else None,
        "seed": config.seed if method == "kernel" else None,
        "format": asdict(fmt),
        "demos": [[d.input, d.output] for d in demos],
        "validation": [[v.input, v.answer] for v in validation],
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:32]


def _cache_dir(config: DemoAttributionConfig) -> Path:
    if config.cache_dir is not None:
        return Path(config.cache_dir)
    from promptsieve._paths import cache_dir

    return cache_dir() / "demos"


def _read_cache(path: Path, proxy: str) -> DemoAttribution | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    # never reuse another proxy's or version's values, even under a colliding file name
    if data.get("version") != DEMOS_VERSION or data.get("proxy") != proxy:
        log.info("ignoring demo attribution cache %s (other proxy or version)", path.name)
        return None
    try:
        return DemoAttribution(
            values=tuple(float(v) for v in data["values"]),
            empty_value=float(data["empty_value"]),
            full_value=float(data["full_value"]),
            method=data["method"],
            evaluations=int(data["evaluations"]),
            proxy=proxy,
            key=str(data["key"]),
            seconds=float(data["seconds"]),
            tokens=0,
            cached=True,
        )
    except (KeyError, TypeError, ValueError):
        return None


def _write_cache(path: Path, attr: DemoAttribution) -> None:
    data = asdict(attr)
    data["version"] = DEMOS_VERSION
    data.pop("cached", None)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache only costs a recomputation
        log.warning("cannot write demo attribution cache %s: %s", path, exc)


def attribute_demos(
    demos: Sequence[Demonstration],
    validation: Sequence[ValidationExample],
    *,
    fmt: DemoFormat | None = None,
    config: DemoAttributionConfig | None = None,
    scorer: CoalitionScorer | HeadDemoScorer | None = None,
) -> DemoAttribution:
    """Each demonstration's Shapley value on the proxy (see the module docstring).

    Args:
        demos: the task's demonstrations, in prompt order.
        validation: validation requests with answers (gold or the target's own); the first
            ``config.max_validation`` are used.
        fmt: the prompt layout (default :class:`DemoFormat`).
        config: method, Kernel SHAP samples, seed, cache.
        scorer: the value function; None = :class:`LMDemoScorer` (the ONNX LM proxy).

    Returns a :class:`DemoAttribution`; method "none" with zero values when fewer than two
    demonstrations are given (nothing to attribute).

    Raises:
        ConfigError: no validation request, an empty answer, or answers the proxy cannot
            score (a non-finite log-probability; the message names which), or the LM proxy
            cannot be loaded.
    """
    fmt = fmt or DemoFormat()
    config = config or DemoAttributionConfig()
    demos = list(demos)
    n = len(demos)
    if n < 2:
        return DemoAttribution((0.0,) * n, 0.0, 0.0, "none", 0, "", "", 0.0, 0)
    validation = list(validation)[: config.max_validation]
    if not validation:
        raise ConfigError("attribution needs at least one validation request with an answer")
    empty = [i for i, v in enumerate(validation) if not v.answer.strip()]
    if empty:
        raise ConfigError(
            f"validation answers {empty} are empty: the proxy can only score a non-empty answer"
        )
    if scorer is None:
        scorer = _default_scorer(config)
    t0 = time.perf_counter()
    if isinstance(scorer, HeadDemoScorer):
        vals = scorer.scores(demos, validation, fmt)
        key = _key(demos, validation, fmt, "head", config, scorer.fingerprint)
        return DemoAttribution(
            tuple(float(v) for v in vals), 0.0, 0.0, "head", 0, scorer.fingerprint, key,
            time.perf_counter() - t0, 0,
        )  # fmt: skip
    method = config.resolved_method(n)
    proxy = scorer.fingerprint
    key = _key(demos, validation, fmt, method, config, proxy)
    path = _cache_dir(config) / f"{key}.json"
    if config.cache:
        hit = _read_cache(path, proxy)
        if hit is not None:
            return hit
    needed = _shapley.needed(n, method, config.samples, config.seed)
    tokens0 = int(getattr(scorer, "tokens_run", 0))
    if isinstance(scorer, LMDemoScorer):
        mat = scorer.matrix(demos, validation, fmt, needed)
        _check_scorable(mat, validation)
        vals = mat.mean(axis=1)
    else:
        vals = np.asarray(scorer.values(demos, validation, fmt, needed), dtype=float)
        if not np.all(np.isfinite(vals)):
            raise ConfigError("the scorer returned non-finite values for the validation answers")
    table = _shapley.as_table(needed, vals)
    if method == "exact":
        phi = _shapley.exact_shapley(n, table)
    else:
        phi = _shapley.kernel_shap(n, table, config.samples, config.seed)
    attr = DemoAttribution(
        values=tuple(float(v) for v in phi),
        empty_value=table[()],
        full_value=table[tuple(range(n))],
        method=method,
        evaluations=len(needed),
        proxy=proxy,
        key=key,
        seconds=time.perf_counter() - t0,
        tokens=int(getattr(scorer, "tokens_run", 0)) - tokens0,
    )
    if config.cache:
        _write_cache(path, attr)
    log.info(
        "attributed %d demonstrations (%s, %d coalitions) in %.1f s",
        n, method, len(needed), attr.seconds,
    )  # fmt: skip
    return attr


def _default_scorer(config: DemoAttributionConfig) -> CoalitionScorer | HeadDemoScorer:
    lm = LMDemoScorer(config=config.lm)
    try:
        _ = lm.lm  # load (or export) now, so that a missing LM proxy is known here
    except ConfigError as exc:
        if not config.fallback:
            raise
        log.warning("no LM proxy (%s); ranking demonstrations with the MiniLM head", exc)
        return HeadDemoScorer()
    return lm


def _check_scorable(mat: np.ndarray, validation: Sequence[ValidationExample]) -> None:
    bad = sorted({int(j) for j in np.argwhere(~np.isfinite(mat))[:, 1]})
    if bad:
        raise ConfigError(
            f"the proxy cannot score the answers of validation requests {bad} "
            f"(non-finite log-probability), e.g. {validation[bad[0]].answer[:80]!r}"
        )


# ------------------------------------------------------------------------------- selection


def demo_ladder(n: int, fractions: Sequence[float] = (0.75, 0.5, 0.25)) -> list[int]:
    """Numbers of demonstrations kept, conservative to aggressive: ``ceil(f * n)`` per
    fraction, at least 1, below ``n``, without repeats. Empty for ``n < 2``."""
    out: list[int] = []
    for f in fractions:
        k = max(1, min(n - 1, math.ceil(f * n)))
        if n >= 2 and k not in out:
            out.append(k)
    return out


def select_demos(
    demos: Sequence[Demonstration], attribution: DemoAttribution, keep: int
) -> list[Demonstration]:
    """The ``keep`` most useful demonstrations (least useful removed first), in order."""
    if attribution.n != len(demos):
        raise ConfigError(
            f"the attribution covers {attribution.n} demonstrations, not {len(demos)}"
        )
    return [demos[i] for i in attribution.keep(keep)]


# -------------------------------------------------------------------------------- cleaning


@dataclass(frozen=True)
class CleanReport:
    """Which demonstrations cleaning removed, and why (their attribution values)."""

    kept: tuple[int, ...]
    removed: tuple[int, ...]
    attribution: DemoAttribution
    demos: tuple[Demonstration, ...] = field(repr=False)
    margin: float = 0.0

    @property
    def cleaned(self) -> list[Demonstration]:
        return [self.demos[i] for i in self.kept]

    def rows(self, preview: int = 80) -> list[dict[str, Any]]:
        """One row per demonstration, most negative first."""
        rows = []
        for i in sorted(range(len(self.demos)), key=lambda j: self.attribution.values[j]):
            d = self.demos[i]
            rows.append({
                "index": i,
                "value": round(self.attribution.values[i], 6),
                "removed": i in self.removed,
                "input": d.input[:preview],
                "output": d.output[:preview],
            })  # fmt: skip
        return rows

    def to_json(self, preview: int = 80) -> dict[str, Any]:
        a = self.attribution
        return {
            "kept": list(self.kept),
            "removed": list(self.removed),
            "reason": f"attribution value < {-self.margin:g} nats (lowers the mean "
            "log-probability of the validation answers)",
            "method": a.method,
            "proxy": a.proxy,
            "v_none": round(a.empty_value, 6),
            "v_all": round(a.full_value, 6),
            "coalitions": a.evaluations,
            "seconds": round(a.seconds, 2),
            "cached": a.cached,
            "demonstrations": self.rows(preview),
        }

    def to_html(self, preview: int = 80) -> str:
        """A standalone HTML page with one table row per demonstration."""
        a = self.attribution
        head = (
            f"<p>{len(self.removed)} of {len(self.demos)} demonstrations removed "
            f"(attribution &lt; {-self.margin:g} nats). Method: {html.escape(a.method)}, "
            f"{a.evaluations} coalitions on proxy {html.escape(a.proxy)}; "
            f"v(none) = {a.empty_value:.4f}, v(all) = {a.full_value:.4f}.</p>"
        )
        body = "".join(
            f'<tr class="{"removed" if r["removed"] else "kept"}"><td>{r["index"]}</td>'
            f"<td>{r['value']:+.4f}</td><td>{'removed' if r['removed'] else 'kept'}</td>"
            f"<td>{html.escape(r['input'])}</td><td>{html.escape(r['output'])}</td></tr>"
            for r in self.rows(preview)
        )
        return (
            '<!doctype html><html><head><meta charset="utf-8"><title>promptsieve clean'
            "</title><style>body{font-family:sans-serif}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}"
            "tr.removed{background:#fdd}</style></head><body><h1>Demonstration cleaning</h1>"
            f"{head}<table><tr><th>#</th><th>attribution (nats)</th><th>decision</th>"
            f"<th>input</th><th>output</th></tr>{body}</table></body></html>"
        )


def clean_demos(
    demos: Sequence[Demonstration],
    validation: Sequence[ValidationExample],
    *,
    fmt: DemoFormat | None = None,
    config: DemoAttributionConfig | None = None,
    scorer: CoalitionScorer | None = None,
    margin: float = 0.0,
) -> CleanReport:
    """Drop every demonstration with a negative attribution (below ``-margin`` nats).

    The validation answers should be gold answers (cleaning aims at accuracy). Fewer than
    two demonstrations: nothing is removed. Raises :class:`ConfigError` as
    :func:`attribute_demos` does, and for the head fallback (it has no sign).
    """
    if isinstance(scorer, HeadDemoScorer):
        raise ConfigError("cleaning needs Shapley values from the LM proxy, not the head ranking")
    demos = tuple(demos)
    config = replace(config or DemoAttributionConfig(), fallback=False)
    attr = attribute_demos(demos, validation, fmt=fmt, config=config, scorer=scorer)
    removed = tuple(attr.negative(margin)) if attr.method != "none" else ()
    kept = tuple(i for i in range(len(demos)) if i not in removed)
    return CleanReport(kept, removed, attr, demos, margin)


# ------------------------------------------------------------------ screen-and-apply compressor


@dataclass(frozen=True)
class DemoCompression:
    """A prompt with some demonstrations removed (what :class:`DemoCompressor` returns)."""

    prompt: str | tuple[Message, ...]
    kept: tuple[int, ...]
    dropped: tuple[int, ...]
    #: The instance guard's input: the question and instruction are untouched by removing
    #: whole demonstrations, so there is no per-request similarity to judge.
    similarity: float | None = 1.0

    @property
    def changed(self) -> bool:
        return bool(self.dropped)


class DemoCompressor:
    """A compressor for :class:`promptsieve.Sieve` that removes whole demonstrations.

    ``Sieve(config, compressor=DemoCompressor(demos, validation))`` turns the gate's ratio
    ladder into a ladder over how many demonstrations are kept: at ratio ``r`` the
    ``max(1, round(r * n))`` most useful are kept (least useful removed first) and the
    sequential test confirms the rung against the target, as for any compressor. Works
    through every adapter that takes a sieve (``wrap_openai``, LangChain).

    The prompt must contain the demonstrations as ``fmt`` renders them (in a string prompt
    or a user/assistant text part), or as user/assistant message pairs (``input`` then
    ``output``, as LangChain's ``FewShotChatMessagePromptTemplate`` produces). A prompt in
    which they are not all found goes out unchanged.

    Attribution is computed once, in a background thread started by the first
    :meth:`compress` (which returns the prompt unchanged until it is ready) or up front by
    :meth:`prepare`. Any attribution failure is logged once and leaves prompts unchanged
    (fail open).
    """

    def __init__(
        self,
        demos: Sequence[Demonstration],
        validation: Sequence[ValidationExample],
        *,
        fmt: DemoFormat | None = None,
        config: DemoAttributionConfig | None = None,
        scorer: CoalitionScorer | HeadDemoScorer | None = None,
    ) -> None:
        self.demos = tuple(demos)
        self.validation = tuple(validation)
        self.fmt = fmt or DemoFormat()
        self.config = config or DemoAttributionConfig()
        self._scorer = scorer
        self._attr: DemoAttribution | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        if len(self.demos) >= 2 and not self.validation:
            raise ConfigError("DemoCompressor needs validation requests with answers")
        blob = json.dumps([[d.input, d.output] for d in self.demos]).encode()
        self._set_hash = hashlib.sha256(blob).hexdigest()[:16]

    @property
    def fingerprint(self) -> str:
        """Names the demonstration set and the method (part of the sieve's verdict key)."""
        method = self.config.resolved_method(len(self.demos))
        return f"demos-v{DEMOS_VERSION}-{self._set_hash}-{method}"

    @property
    def attribution(self) -> DemoAttribution | None:
        return self._attr

    def prepare(self) -> DemoAttribution:
        """Compute (or read from the cache) the attribution now; raises what it raises."""
        with self._lock:
            if self._attr is None:
                self._attr = attribute_demos(
                    self.demos, self.validation, fmt=self.fmt, config=self.config,
                    scorer=self._scorer,
                )  # fmt: skip
            return self._attr

    def _background(self) -> None:
        try:
            self.prepare()
        except BaseException as exc:  # fail open: prompts stay unchanged
            self._error = exc
            log.warning("demonstration attribution failed; prompts go out unchanged: %s", exc)

    def _ready(self) -> DemoAttribution | None:
        if self._attr is not None or self._error is not None:
            return self._attr
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._background, name="promptsieve-demos", daemon=True
                )
                self._thread.start()
        return None

    def wait(self, timeout: float | None = None) -> DemoAttribution | None:
        """Start the attribution if need be and wait for it (None on time-out or failure)."""
        self._ready()
        if self._thread is not None:
            self._thread.join(timeout)
        return self._attr

    def similarity(self, a: str, b: str) -> float:
        """1.0: removing whole demonstrations leaves the question untouched (see above)."""
        return 1.0

    def keep_count(self, ratio: float | None) -> int:
        n = len(self.demos)
        r = 1.0 if ratio is None else ratio
        return max(1, min(n, round(r * n)))

    def compress(self, prompt: Any, *, ratio: float | None = None) -> DemoCompression:
        """Remove the least useful demonstrations so that ``keep_count(ratio)`` remain."""
        n = len(self.demos)
        if n < 2:
            return DemoCompression(prompt, tuple(range(n)), ())
        attr = self._ready()
        if attr is None or attr.method == "none":
            return DemoCompression(prompt, tuple(range(n)), ())
        kept = attr.keep(self.keep_count(ratio))
        drop = tuple(i for i in range(n) if i not in kept)
        new = remove_demos(prompt, self.demos, drop, self.fmt)
        if new is None or not drop:
            return DemoCompression(prompt, tuple(range(n)), ())
        return DemoCompression(new, tuple(kept), drop)


def remove_demos(
    prompt: str | Sequence[Message],
    demos: Sequence[Demonstration],
    drop: Sequence[int],
    fmt: DemoFormat,
) -> str | tuple[Message, ...] | None:
    """``prompt`` without the demonstrations ``drop``; None when they are not all found.

    Looks for each demonstration's rendered text (``fmt.render_demo``) in the text parts of
    user/assistant messages, in order, else for user/assistant message pairs whose texts are
    the demonstration's input and output.
    """
    messages, bare = as_messages(prompt)
    if not drop:
        return prompt if isinstance(prompt, str) else tuple(messages)
    out = _remove_rendered(messages, demos, set(drop), fmt)
    if out is None:
        out = _remove_pairs(messages, demos, set(drop))
    if out is None:
        return None
    if bare:
        return out[0].content
    return out


def _remove_rendered(
    messages: Sequence[Message], demos: Sequence[Demonstration], drop: set[int], fmt: DemoFormat
) -> tuple[Message, ...] | None:
    blocks = [fmt.render_demo(d) for d in demos]
    msgs = list(messages)
    found: dict[int, tuple[int, int, int]] = {}  # demo -> (message, part, start)
    for mi, m in enumerate(msgs):
        if m.role not in COMPRESSIBLE_ROLES:
            continue
        for pi, p in enumerate(m.parts):
            if not isinstance(p, TextPart) or p.protected:
                continue
            pos = 0
            for di, b in enumerate(blocks):
                if di in found:
                    continue
                j = p.text.find(b, pos)
                if j >= 0:
                    found[di] = (mi, pi, j)
                    pos = j + len(b)
    if len(found) != len(demos):
        return None
    for mi in sorted({found[d][0] for d in drop}):
        m = msgs[mi]
        parts = list(m.parts)
        for pi in sorted({found[d][1] for d in drop if found[d][0] == mi}):
            part = parts[pi]
            assert isinstance(part, TextPart)
            cuts = sorted((found[d][2], found[d][2] + len(blocks[d])) for d in drop
                          if found[d][:2] == (mi, pi))  # fmt: skip
            pieces: list[str] = []
            last = 0
            for cut_start, cut_end in cuts:
                pieces.append(part.text[last:cut_start])
                last = cut_end
            pieces.append(part.text[last:])
            parts[pi] = replace(part, text="".join(pieces))
        msgs[mi] = m.with_parts(parts)
    return tuple(msgs)


def _remove_pairs(
    messages: Sequence[Message], demos: Sequence[Demonstration], drop: set[int]
) -> tuple[Message, ...] | None:
    where: dict[int, int] = {}
    i, di = 0, 0
    msgs = list(messages)
    while i + 1 < len(msgs) and di < len(demos):
        a, b = msgs[i], msgs[i + 1]
        d = demos[di]
        if (
            a.role == "user" and b.role == "assistant"
            and a.content.strip() == d.input.strip() and b.content.strip() == d.output.strip()
        ):  # fmt: skip
            where[di] = i
            di += 1
            i += 2
        else:
            i += 1
    if len(where) != len(demos):
        return None
    gone = {where[d] for d in drop} | {where[d] + 1 for d in drop}
    return tuple(m for k, m in enumerate(msgs) if k not in gone)
