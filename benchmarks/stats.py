"""Per-item scoring and the statistics of the report: Wilson intervals, McNemar, answer match.

* **Accuracy against gold.** Multiple-choice and label answers: the extracted answer equals
  the gold label. Free-text QA: SQuAD's answer normalisation (Rajpurkar et al., 2016),
  then equal, or the shorter answer (≤ 5 tokens) appears as a token run in the other
  (≤ 30 tokens; the containment rule of lost-in-the-middle / LongLLMLingua QA scoring), or
  token-F1 ≥ :data:`QA_F1` (0.5). The rule of the SDK's ``answer_match(0.5)``, fixed here
  so that reports do not move with the SDK.
* **Agreement with the uncompressed answer**, under the same metric as the task's
  screening (the same function, applied to the two answers).
* **Intervals.** Wilson 95 % (``scipy.stats.binomtest(k, n).proportion_ci("wilson")``).
* **Paired test.** McNemar's exact test: a two-sided binomial test on the discordant pairs
  (``binomtest(b, b + c, 0.5)``), each method against the strongest baseline at the same
  ratio on the same items.
* **Paired accuracy difference.** A method's accuracy minus the other's on the same items,
  with a 95 % paired bootstrap percentile interval (``scipy.stats.bootstrap`` over the items,
  10,000 resamples, seed 0): a fixed-sample reading of non-inferiority (lower bound above
  −ε), not the SDK's anytime-valid test.
"""

from __future__ import annotations

import collections
import math
import re
import string
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest, bootstrap

from .data import Kind, extract_answer

__all__ = [
    "QA_F1", "agree", "correct", "mcnemar", "paired_difference", "parse_answer",
    "squad_normalize", "token_f1", "wilson",
]  # fmt: skip

QA_F1 = 0.5
_SHORT, _LONG = 5, 30  # containment: a short answer inside a sentence-length one
_LABEL_WORDS = ("yes", "no", "true", "false", "neither", "valid", "invalid")
_CHOICE = re.compile(r"\(([A-Ra-r])\)")


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Wilson interval of ``k``/``n`` (``(nan, nan)`` when ``n == 0``)."""
    if n == 0:
        return (math.nan, math.nan)
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> dict[str, Any]:
    """Exact McNemar test of paired outcomes: ``a_only``/``b_only`` discordant counts, ``p``."""
    if len(a) != len(b):
        raise ValueError("paired outcomes must have the same length")
    a_only = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    b_only = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    n = a_only + b_only
    p = 1.0 if n == 0 else float(binomtest(a_only, n, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "p": p}


def paired_difference(
    a: Sequence[bool], b: Sequence[bool], *, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``a`` minus mean of ``b`` on paired items, with its 95 % paired bootstrap
    percentile interval: ``(difference, low, high)`` as proportions (``nan`` when empty).

    ``scipy.stats.bootstrap`` resamples the items (pairs stay together), ``resamples``
    times with ``numpy.random.default_rng(seed)``. Raises ``ValueError`` on unequal lengths.
    """
    if len(a) != len(b):
        raise ValueError("paired outcomes must have the same length")
    if not a:
        return (math.nan, math.nan, math.nan)
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if np.all(d == d[0]):  # no spread: every resample gives the same difference
        return (float(d[0]), float(d[0]), float(d[0]))
    res = bootstrap(
        (d,),
        np.mean,
        n_resamples=resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = res.confidence_interval
    return (float(d.mean()), float(ci.low), float(ci.high))


def parse_answer(kind: Kind, text: str) -> str | None:
    """The answer in a completion, tolerant of chat models' extra words.

    ``direct``: a leading ``(X)`` choice, else a leading yes/no/true/false/neither word, else
    the first line; ``cot``: lm-eval's "the answer is X" then the same rules on X; ``qa``:
    the first non-empty line without an "Answer:" prefix. Other kinds as
    :func:`benchmarks.data.extract_answer`.
    """
    if kind == "qa":
        for line in text.strip().splitlines():
            line = re.sub(r"^\s*(?:final\s+)?answer\s*[:\-]\s*", "", line, flags=re.I).strip()
            if line:
                return line
        return None
    if kind in ("direct", "cot"):
        body = text
        if kind == "cot":
            m = re.search(r"the answer is\s*(.*)", text, flags=re.I | re.S)
            if not m:
                return None
            body = m.group(1)
        line = body.strip().split("\n", 1)[0].strip().strip("*").strip()
        m = _CHOICE.match(line)
        if m:
            return f"({m.group(1).lower()})"
        word = re.match(r"[A-Za-z]+", line)
        if word and word.group(0).lower() in _LABEL_WORDS:
            return word.group(0).lower()
        m = re.fullmatch(r"([A-Ra-r])[.)]?", line)
        if m:
            return f"({m.group(1).lower()})"
        return extract_answer("direct", line)
    return extract_answer(kind, text)


_PUNCT = set(string.punctuation)


def squad_normalize(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(a: str, b: str) -> float:
    """SQuAD's token-overlap F1 of the normalised answers."""
    ta, tb = squad_normalize(a).split(), squad_normalize(b).split()
    if not ta or not tb:
        return float(ta == tb)
    common = sum((collections.Counter(ta) & collections.Counter(tb)).values())
    if common == 0:
        return 0.0
    p, r = common / len(tb), common / len(ta)
    return 2 * p * r / (p + r)


def _contains(short: list[str], long: list[str]) -> bool:
    n = len(short)
    return n > 0 and any(long[i : i + n] == short for i in range(len(long) - n + 1))


def _qa_match(a: str | None, b: str | None) -> bool:
    """Equal after normalisation, or the shorter (≤ 5 tokens) is a token run of the longer
    (≤ 30 tokens), or token-F1 ≥ :data:`QA_F1`."""
    if a is None or b is None:
        return False
    ta, tb = squad_normalize(a).split(), squad_normalize(b).split()
    if ta == tb:
        return bool(ta)
    short, long = (ta, tb) if len(ta) <= len(tb) else (tb, ta)
    if len(short) <= _SHORT and len(long) <= _LONG and _contains(short, long):
        return True
    return token_f1(a, b) >= QA_F1


def correct(kind: Kind, answer: str | None, gold: str) -> bool:
    """Accuracy against gold for one item (see the module docstring)."""
    if kind == "qa":
        return _qa_match(gold, answer)
    return answer is not None and answer == gold


def agree(kind: Kind, base: str | None, other: str | None) -> bool:
    """Agreement of two answers under the task's metric; two missing answers do not agree."""
    if kind == "qa":
        return _qa_match(base, other)
    return base is not None and base == other
