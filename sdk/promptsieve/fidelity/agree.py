"""Does the target answer the compressed prompt the way it answers the original?

A metric compares two :class:`TargetOutput` (original, compressed) and says agree or not.
Comparisons work on what matters for the task (the final answer, the choice letter, the
parsed JSON, the tool calls), not on raw text, because compression legitimately changes
wording around an unchanged answer.
"""

from __future__ import annotations

import json
import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from promptsieve._errors import ConfigError

__all__ = [
    "Embed",
    "Metric",
    "TargetOutput",
    "answer_match",
    "auto_metric",
    "extract_answer",
    "extract_choice",
    "extract_number",
    "get_metric",
    "normalize",
    "token_f1",
]


@dataclass(frozen=True)
class TargetOutput:
    """What the target answered: its text and any tool calls as (name, arguments-json)."""

    text: str
    tool_calls: tuple[tuple[str, str], ...] = ()


Metric = Callable[[TargetOutput, TargetOutput], bool]
Embed = Callable[[Sequence[str]], Any]  # texts -> (n, d) array, e.g. Proxy.embed

_SHORT_WORDS = 12  # an answer this short is a short free-text answer
_CONTAIN_SHORT = 5  # a normalised answer of at most this many tokens ...
_CONTAIN_LONG = 30  # ... may agree with a sentence of at most this many that contains it
_ANSWER_F1 = 0.5  # token-F1 at which two short answers agree (SQuAD's partial credit)
#: A sentence that negates ("not red") does not agree with the bare answer ("red") it contains.
_NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "nor",
        "neither",
        "none",
        "cannot",
        "isnt",
        "arent",
        "wasnt",
        "werent",
        "dont",
        "doesnt",
        "didnt",
        "wont",
        "cant",
    ]
)

_FINAL_MARK = re.compile(r"####\s*(?P<ans>[^\n]+)")
_ANSWER_IS = re.compile(
    r"(?:the\s+(?:final\s+)?answer\s+is|answer\s*:)\s*[:\-]?\s*(?P<ans>[^\n]+)", re.IGNORECASE
)
_NUMBER = re.compile(r"[-+]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_CHOICE_PAREN = re.compile(r"\(([A-Z])\)")
_CHOICE_LONE = re.compile(r"^\(?([A-Z])\)?(?:[.:)]|\s*$)")
_FENCE = re.compile(r"^```(?:json|JSON)?\s*\n?(.*?)\n?```\s*$", re.DOTALL)
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """Case-, whitespace-, punctuation- and article-insensitive form (SQuAD style)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.translate(_PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _clean_answer(ans: str) -> str:
    ans = ans.strip().strip("*").strip()
    ans = re.split(r"(?<=[^\d])\.\s|\.$", ans, maxsplit=1)[0]  # first sentence, keep 3.14
    return ans.strip().strip("*").strip()


def extract_answer(text: str) -> str:
    """The final answer in ``text``.

    Understands "#### 42" (GSM8K), "The answer is X." (chain of thought; the last one wins)
    and "Answer: X"; otherwise the first non-empty line, because a base model continuing a
    few-shot prompt tends to run on into the next made-up question.
    """
    marks = list(_FINAL_MARK.finditer(text))
    if marks:
        return _clean_answer(marks[-1].group("ans"))
    said = list(_ANSWER_IS.finditer(text))
    if said:
        return _clean_answer(said[-1].group("ans"))
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def extract_number(text: str) -> float | None:
    """The last number of the extracted answer (falling back to the whole text)."""
    for source in (extract_answer(text), text):
        found = _NUMBER.findall(source)
        if found:
            raw = found[-1].replace(",", "").replace("$", "").replace(" ", "")
            try:
                return float(raw)
            except ValueError:
                continue
    return None


def extract_choice(text: str) -> str | None:
    """A multiple-choice letter: "(B)", "B", "B.", "The answer is (B)"."""
    answer = extract_answer(text)
    for source in (answer, text):
        paren = _CHOICE_PAREN.findall(source)
        if paren:
            return paren[-1]
    lone = _CHOICE_LONE.match(answer.strip())
    return lone.group(1) if lone else None


def _parse_json(text: str) -> tuple[bool, Any]:
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    if not body or body[0] not in "[{":
        return False, None
    try:
        return True, json.loads(body)
    except ValueError:
        return False, None


def token_f1(a: str, b: str) -> float:
    """Token-overlap F1 of the normalised texts (1.0 when both are empty)."""
    ta, tb = normalize(a).split(), normalize(b).split()
    if not ta and not tb:
        return 1.0
    common = sum((Counter(ta) & Counter(tb)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(tb), common / len(ta)
    return 2 * precision * recall / (precision + recall)


# -- metrics ------------------------------------------------------------------------------


def exact(original: TargetOutput, compressed: TargetOutput) -> bool:
    """The normalised texts are equal."""
    return normalize(original.text) == normalize(compressed.text)


def answer(original: TargetOutput, compressed: TargetOutput) -> bool:
    """The extracted final answers are equal (normalised)."""
    return normalize(extract_answer(original.text)) == normalize(extract_answer(compressed.text))


def numeric(original: TargetOutput, compressed: TargetOutput) -> bool:
    """The final numbers are equal (relative tolerance 1e-6); no number: compare answers."""
    a, b = extract_number(original.text), extract_number(compressed.text)
    if a is None or b is None:
        return a is None and b is None and answer(original, compressed)
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def choice(original: TargetOutput, compressed: TargetOutput) -> bool:
    """The multiple-choice letters are equal; no letter in either: compare answers."""
    a, b = extract_choice(original.text), extract_choice(compressed.text)
    if a is None or b is None:
        return a is None and b is None and answer(original, compressed)
    return a == b


def json_equal(original: TargetOutput, compressed: TargetOutput) -> bool:
    """The parsed JSON values are equal (key order and formatting ignored)."""
    ok_a, a = _parse_json(original.text)
    ok_b, b = _parse_json(compressed.text)
    if not (ok_a and ok_b):
        return not ok_a and not ok_b and exact(original, compressed)
    return bool(a == b)


def _canonical_calls(out: TargetOutput) -> list[tuple[str, str]]:
    calls = []
    for name, args in out.tool_calls:
        ok, parsed = _parse_json(args) if args.strip() else (True, {})
        canon = json.dumps(parsed, sort_keys=True) if ok else args.strip()
        calls.append((name, canon))
    return sorted(calls)


def tool_calls(original: TargetOutput, compressed: TargetOutput) -> bool:
    """The same tools called with the same (parsed) arguments, in any order."""
    return _canonical_calls(original) == _canonical_calls(compressed)


def f1_at_least(threshold: float) -> Metric:
    """Token-F1 of the texts ≥ threshold."""
    _check_threshold(threshold, "f1")

    def f1(original: TargetOutput, compressed: TargetOutput) -> bool:
        return token_f1(original.text, compressed.text) >= threshold

    f1.__name__ = f"f1:{threshold:g}"
    return f1


def _contains(short: list[str], long: list[str]) -> bool:
    n = len(short)
    return any(long[i : i + n] == short for i in range(len(long) - n + 1))


def answer_match(threshold: float = _ANSWER_F1) -> Metric:
    """SQuAD-style free-text answer match (Rajpurkar et al. 2016's normalisation).

    The extracted final answers (:func:`extract_answer`) agree when, after
    :func:`normalize`, they are equal; or the shorter has at most 5 tokens and appears as a
    whole-token run in the longer one of at most 30 ("Chur" and "The Posterior Rhine turns
    north near Chur."; the containment rule of lost-in-the-middle/LongLLMLingua QA scoring)
    unless the longer one adds a negation ("not red" does not agree with "red"); or their
    token-F1 is at least ``threshold``. Raises ConfigError outside [0, 1].
    """
    _check_threshold(threshold, "answer")

    def squad(original: TargetOutput, compressed: TargetOutput) -> bool:
        a = normalize(extract_answer(original.text)).split()
        b = normalize(extract_answer(compressed.text)).split()
        if a == b:
            return True
        short, long = (a, b) if len(a) <= len(b) else (b, a)
        negated = any(w in _NEGATIONS for w in long) and not any(w in _NEGATIONS for w in short)
        if (
            short
            and len(short) <= _CONTAIN_SHORT
            and len(long) <= _CONTAIN_LONG
            and not negated
            and _contains(short, long)
        ):
            return True
        return token_f1(" ".join(a), " ".join(b)) >= threshold

    squad.__name__ = f"squad:{threshold:g}"
    return squad


def cosine_at_least(threshold: float, embed: Embed) -> Metric:
    """Cosine of the two texts' embeddings ≥ threshold (``embed`` e.g. the proxy's)."""
    _check_threshold(threshold, "cosine", low=-1.0)

    def cosine(original: TargetOutput, compressed: TargetOutput) -> bool:
        if original.text == compressed.text:
            return True
        vecs = np.asarray(embed([original.text, compressed.text]), dtype=np.float64)
        a, b = vecs[0], vecs[1]
        denom = float(np.linalg.norm(a) * np.linalg.norm(b))
        sim = float(a @ b) / denom if denom > 0 else 0.0
        return sim >= threshold

    cosine.__name__ = f"cosine:{threshold:g}"
    return cosine


def _check_threshold(value: float, name: str, low: float = 0.0) -> None:
    if not low <= value <= 1.0:
        raise ConfigError(f"{name} threshold must be in [{low:g}, 1], got {value}")


_NAMED: dict[str, Metric] = {
    "exact": exact,
    "answer": answer,
    "numeric": numeric,
    "choice": choice,
    "json": json_equal,
    "tool_calls": tool_calls,
}


def get_metric(
    spec: str | Metric | None, *, embed: Embed | None = None, judge: Metric | None = None
) -> Metric | None:
    """Resolve a metric spec.

    ``"exact" | "answer" | "numeric" | "choice" | "json" | "tool_calls" | "f1:0.8" |
    "squad:0.5" | "cosine:0.9" | "judge"`` or a callable ``(original, compressed) -> bool``;
    ``None`` means "pick per output with :func:`auto_metric`". ``"judge"`` is the
    target-as-judge metric passed as ``judge`` (see :mod:`promptsieve.fidelity.judge`).
    Unknown specs, or ``cosine``/``judge`` without their callable, raise ConfigError.
    """
    if spec is None:
        return None
    if callable(spec):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"metric must be a name or a callable, got {type(spec).__name__}")
    name, _, arg = spec.strip().partition(":")
    if name in _NAMED and not arg:
        return _NAMED[name]
    if name == "judge" and not arg:
        if judge is None:
            raise ConfigError("the judge metric needs the target: build it with target_judge()")
        return judge
    if name in ("f1", "cosine", "squad"):
        default = {"f1": 0.8, "cosine": 0.9, "squad": _ANSWER_F1}[name]
        try:
            threshold = float(arg) if arg else default
        except ValueError:
            raise ConfigError(f"bad threshold in metric {spec!r}; write e.g. 'f1:0.8'") from None
        if name == "f1":
            return f1_at_least(threshold)
        if name == "squad":
            return answer_match(threshold)
        if embed is None:
            raise ConfigError("the cosine metric needs an embed callable (e.g. proxy.embed)")
        return cosine_at_least(threshold, embed)
    known = ", ".join([*_NAMED, "f1:θ", "squad:θ", "cosine:θ", "judge"])
    raise ConfigError(f"unknown metric {spec!r}; use one of {known} or a callable")


def auto_metric(original: TargetOutput) -> Metric:
    """A sane metric from the shape of the original output.

    tool calls → same tool calls; JSON → JSON-equal; a lone choice letter → choice; a
    final number → numeric; an explicit final answer ("The answer is …") → answer; a short
    free-text answer (one line, at most 12 words) → :func:`answer_match` (SQuAD
    normalisation, containment of a short answer, token-F1 ≥ 0.5), so "Chur" and "The
    Posterior Rhine turns north near Chur." agree; anything longer → token-F1 ≥ 0.8.
    """
    if original.tool_calls:
        return tool_calls
    text = original.text.strip()
    if _parse_json(text)[0]:
        return json_equal
    final = extract_answer(text)
    if _CHOICE_LONE.match(final) or re.fullmatch(r"\(?[A-Z]\)?", final):
        return choice
    if _CHOICE_PAREN.fullmatch(final.strip()):
        return choice
    number = _NUMBER.fullmatch(final.strip().rstrip("."))
    if number:
        return numeric
    if _FINAL_MARK.search(text) or _ANSWER_IS.search(text):
        return answer
    if len(text.split()) <= _SHORT_WORDS and "\n" not in text:
        return _SHORT_ANSWER
    return f1_at_least(0.8)


_SHORT_ANSWER = answer_match()
