"""Protected regions of a text: what segmentation keeps whole, found by regex scans and walks.

The ``PATTERNS`` scans (URLs, e-mails, dates, times, numbers, versions, identifiers, ids with
digits, UUIDs, hex/base64/key-like runs, inline SQL, special tokens and tags, dotted names, file
paths, inline code, quotations in every script's marks, line-start labels and option markers),
fenced blocks, JSON and object literals, words glued to digits in any script; then
:func:`snap` grows every region to whole words, and the words of scripts written without spaces
come from ICU's dictionary word breaker (:func:`nospace_words`, ``icu4py``). Each pass is a
regex scan or a single left-to-right walk (linear in the text). Used by
:mod:`promptsieve.segment`, which turns regions and words into units.
"""

from __future__ import annotations

import bisect
import functools
import json
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any

import regex

from promptsieve._shapes import bracket_spans

__all__ = [
    "NOSPACE",
    "NS_CLASS",
    "finditer_spans",
    "icu_words",
    "merge",
    "nospace_words",
    "protected_spans",
    "snap",
]

log = logging.getLogger(__name__)

Range = tuple[int, int]


_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_SP = r"[ \t\u00a0]+"
_ORD = r"(?:st|nd|rd|th)?"
_DAY = r"\d{1,2}"
_NUMBER = (
    r"(?<![\w.])[-+\u2212]?(?:[$€£¥₹]" + r"[ \u00a0]?)?"
    r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:[eE][-+]?\d+)?(?:/\d+)?(?:[ \u00a0]?[%‰]|[A-Za-z]{1,3}|[$€£¥₹₽₩₪₫฿¢])?(?![\w])"
)
# Letters and digits of scripts written with spaces ("W"), and those written without ("NS").
NS_CLASS = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\u30fc\u3005"

# any length, inside one paragraph, never over another opening mark of its kind (linear scans)
_QUOTE_BODY = r"(?:[^{close}\n]|\r?\n(?![ \t]*\r?\n))*?"


def _quoted(open_: str, close: str, before: str = "", after: str = "", behind: str = "") -> str:
    """A quotation of any length inside one paragraph; ``behind`` is a lookbehind placed after
    the opening mark, so that the pattern starts with a literal (fast scan)."""
    body = _QUOTE_BODY.format(close=re.escape(close + open_ if open_ != close else close))
    q0, q1 = re.escape(open_), re.escape(close)
    return f"{before}{q0}{behind}(?=\\S){body}(?<=\\S){q1}{after}"


def _compile(pattern: str, flags: int) -> re.Pattern[str] | regex.Pattern[str]:
    """``re`` where it can (faster), ``regex`` for Unicode properties and set operations."""
    if "\\p{" in pattern or "[[" in pattern:
        return regex.compile(pattern, flags | regex.V1)
    return re.compile(pattern, flags)


_PATTERNS: tuple[re.Pattern[str] | regex.Pattern[str], ...] = tuple(
    _compile(p, flags)
    for p, flags in (
        # URLs (trailing punctuation trimmed afterwards), data URLs and e-mail addresses
        (r"\b(?:(?:https?|ftp|file)://|www\.)[^\s<>\"'`]+", 0),
        (r"\bdata:[\w.+-]+/[\w.+-]+(?:;[\w.+-]+(?:=[\w.+-]+)?)*,[A-Za-z0-9+/=%._~-]*", 0),
        (r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+", 0),
        # dates and times
        (
            r"(?<!\w)\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
            r"(?:Z|[+-]\d{2}:?\d{2})?)?(?!\w)",
            0,
        ),
        (r"(?<![\w/.-])\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4}(?![\w/-])", 0),
        (rf"(?<!\w){_DAY}{_ORD}(?:{_SP}of)?{_SP}{_MONTH}\.?(?:,?{_SP}\d{{4}})?(?!\w)", 0),
        (rf"(?<!\w){_MONTH}\.?{_SP}\d{{1,2}}{_ORD}(?:,?{_SP}\d{{4}})?(?!\w)", 0),
        (rf"(?<!\w){_MONTH}{_SP}\d{{4}}(?!\w)", 0),
        (r"(?<![\w:])\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:[ \t]?[AaPp]\.?[Mm]\.?)?(?![\w:])", 0),
        (r"(?<!\w)\d{1,2}[ \t]?(?:[ap]\.m\.|[AaPp][Mm])(?!\w)", 0),
        # numbers, versions; numbers glued to letters of any script
        (_NUMBER, 0),
        (r"(?<![\w.])v?\d+(?:\.\d+){1,3}(?:-[0-9A-Za-z.]+)?(?![\w])", 0),
        # identifiers: snake_case, camelCase, PascalCase with inner capitals
        (r"(?<!\w)(?=\w*_)(?=\w*[A-Za-z])[A-Za-z0-9_]+(?!\w)", 0),
        (r"(?<!\w)[a-z]+[A-Z][A-Za-z0-9]*(?!\w)", 0),
        (r"(?<!\w)(?:[A-Z][a-z0-9]+[A-Z]|[A-Z]{2,}[a-z])[A-Za-z0-9]*(?!\w)", 0),
        # upper-case groups with a letters+digits group (AB12 CDE, GB82 WEST 1234 5698 76)
        (
            r"(?<![\w-])(?=(?:[A-Z0-9]+[ \t\u00a0])*[A-Z0-9]*(?:[A-Z]\d|\d[A-Z]))"
            r"[A-Z0-9]{2,}(?:[ \t\u00a0][A-Z0-9]{2,})+(?![\w-])",
            0,
        ),
        # UUIDs (letters-only hex blocks too), hex, base64 and key-like runs
        (r"(?<![\w-])[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}(?![\w-])", 0),
        (r"(?<!\w)(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{7,}(?!\w)", 0),
        # an SQL statement inside a sentence (upper-case keywords), to its ";" or line end
        (
            r"\b(?:SELECT\b[^;\n]*?\bFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM)\b"
            r"[^;\n]*;?",
            0,
        ),
        # special tokens and markup tags
        (r"<\|[^|<>\s]{1,64}\|>|<<\s?/?[A-Z_]{2,20}\s?>>|\[/?[A-Z][A-Z_]{1,19}\]", 0),
        (r"</?[A-Za-z][\w.:-]*(?:\s+[\w:.-]+(?:=(?:\"[^\"\n]*\"|'[^'\n]*'|[^\s>]+))?)*\s*/?>", 0),
        # dotted.names, file paths (absolute, ~/ ./, Windows, relative with an extension)
        (r"(?<![\w.-])[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)+(?:\(\))?(?!\w)", 0),
        (r"(?<![\w/.])(?:~|\.{1,2})?/(?:[\w.@+-]+/)*[\w.@+-]+/?", 0),
        (r"(?<!\w)[A-Za-z]:\\(?:[\w.@+-]+\\)*[\w.@+-]*", 0),
        (r"(?<![\w/.-])[\w.-]+(?:/[\w.-]+)+\.[A-Za-z0-9]{1,8}(?!\w)", 0),
        # inline code; quoted strings of any length inside a paragraph, ASCII and typographic
        (r"(?<!`)(`{1,3})(?!`)[^\n]+?(?<!`)\1(?!`)", 0),
        (_quoted('"', '"', "", r"(?!\w)", r'(?<![\w"]")'), 0),
        (_quoted("'", "'", "", r"(?!\w)", r"(?<![\w']')"), 0),
        (_quoted("“", "”") + "|" + _quoted("„", "“") + "|" + _quoted("„", "”"), 0),
        (_quoted("‘", "’", "", r"(?!\w)") + "|" + _quoted("‚", "‘"), 0),
        (r"«[ \u00a0\u202f]?" + _QUOTE_BODY.format(close="»«") + "»", 0),
        (_quoted("‹", "›") + "|" + _quoted("「", "」") + "|" + _quoted("『", "』"), 0),
        # structure: line-start labels ("Q:", "Answer:", "Example 3:") and option markers "(A)"
        (r"^[ \t]*(?:[A-Z][\w-]{0,20}|Q|A)(?:[ \t]+\d+)?[ \t]*:(?=[ \t\r\n]|$)", regex.MULTILINE),
        (r"\((?:[A-Za-z]|[ivx]{1,4}|\d{1,2})\)", 0),
    )
)
_KEYLIKE = re.compile(r"(?<![\w+/=-])[\w+/-]{20,}={0,2}(?![\w+/=-])")
_KEYLIKE_NEEDS = (re.compile(r"[\d+/]"), re.compile(r"[A-Za-z]"))
_DIGITS = re.compile(r"\d+")
_NUMBER_RUN = re.compile(r"\d+(?:[.,:/]\d+)*")
_ID_SEPARATORS = "/#:._-"


def _digit_words(text: str) -> list[Range]:
    """Words holding a digit and a letter in any script (``25кг``, ``H2O``, ``3rd``), ids of
    parts joined by ``/#:._-`` with a digit somewhere (``INV/2024/00042``, ``ORD-77-A``), and
    numbers glued to a no-space script with the words on both sides (``超过7天``, ``10時30分``;
    ``snap`` grows them to whole ICU words). Walks out from each digit run, so prose without
    digits costs one regex scan."""
    spans: list[Range] = []
    covered = 0
    n = len(text)
    for m in _NUMBER_RUN.finditer(text):
        a, b = m.start(), m.end()
        if (a > 0 and NOSPACE.match(text[a - 1])) or (b < n and NOSPACE.match(text[b])):
            while b + 1 < n and NOSPACE.match(text[b]) and text[b + 1].isdigit():
                nxt = _NUMBER_RUN.match(text, b + 1)
                assert nxt is not None
                b = nxt.end()
            a -= a > 0 and bool(NOSPACE.match(text[a - 1]))
            b += b < n and bool(NOSPACE.match(text[b]))
            spans.append((a, b))
    for m in _DIGITS.finditer(text):
        if m.start() < covered:
            continue
        a, b = m.start(), m.end()
        while a > 0 and _is_w(text[a - 1]):
            a -= 1
        while b < n and _is_w(text[b]):
            b += 1
        a2, b2 = a, b
        while a2 > 1 and text[a2 - 1] in _ID_SEPARATORS and _is_w(text[a2 - 2]):
            a2 -= 1
            while a2 > 0 and _is_w(text[a2 - 1]):
                a2 -= 1
        while b2 + 1 < n and text[b2] in _ID_SEPARATORS and _is_w(text[b2 + 1]):
            b2 += 1
            while b2 < n and _is_w(text[b2]):
                b2 += 1
        if (a2, b2) != (a, b) or any(c.isalpha() for c in text[a:b]):
            spans.append((a2, b2))
        covered = b2
    return spans


def _is_w(c: str) -> bool:
    """A letter, digit, mark or underscore of a script written with spaces."""
    return (c.isalnum() or c == "_" or unicodedata.category(c)[0] == "M") and not NOSPACE.match(c)


_URL_TRAIL = ".,;:!?'\"”’)]}>"
_FENCE_OPEN = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})[^\n]*$", re.MULTILINE)
_BRACKET = re.compile(r"[\[\]{}]")
_JSON_KEY = re.compile(r"\"[^\"\n]{1,100}\"\s*:")
_JSON_DEC = json.JSONDecoder()


def protected_spans(text: str) -> list[Range]:
    spans = _fences(text)
    spans += _json_spans(text)
    spans += _digit_words(text)
    for m in _KEYLIKE.finditer(text):
        if all(need.search(m.group()) for need in _KEYLIKE_NEEDS):
            spans.append(m.span())
    for pat in _PATTERNS:
        for m in pat.finditer(text):
            start, end = m.span()
            if end <= start:
                continue
            if pat is _PATTERNS[0]:
                end = _trim_url(text, start, end)
            spans.append((start, end))
    return spans


def _trim_url(text: str, start: int, end: int) -> int:
    while end > start + 1 and text[end - 1] in _URL_TRAIL:
        c = text[end - 1]
        if c == ")" and text.count("(", start, end) >= text.count(")", start, end):
            break
        end -= 1
    return end


def _fences(text: str) -> list[Range]:
    """Fenced code blocks. An unclosed ``` runs to the end of the text; an unclosed ~~~, or a
    bare ~~~ line as long as the text line above it (an RST heading underline), is no fence."""
    spans: list[Range] = []
    pos = 0
    while True:
        m = _FENCE_OPEN.search(text, pos)
        if m is None:
            return spans
        fence = m.group(1)
        tilde = fence[0] == "~"
        if tilde and not text[m.end(1) : m.end()].strip():
            line_before = text[text.rfind("\n", 0, max(m.start() - 1, 0)) + 1 : m.start()]
            if line_before.strip() and len(fence) >= len(line_before.strip()) - 1:
                pos = m.end()
                continue
        close = re.compile(
            r"^[ \t]{0,3}" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*$",
            re.MULTILINE,
        ).search(text, m.end())
        if close is None and tilde:
            pos = m.end()
            continue
        end = close.end() if close else len(text.rstrip())
        spans.append((m.start(), end))
        pos = end + 1 if close else len(text)


_MAX_DEPTH = 8  # brackets nested deeper inside an unparsed block are not tried on their own


def _match_brackets(text: str) -> dict[int, int]:
    """Matching ``[]``/``{}`` pairs (open -> close) nested at most ``_MAX_DEPTH`` deep, so the
    JSON checks that try each pair stay linear on pathological nesting."""
    pairs: dict[int, int] = {}
    stack: list[tuple[str, int]] = []
    for m in _BRACKET.finditer(text):
        c, p = m.group(), m.start()
        if c in "[{":
            stack.append((c, p))
        elif stack and stack[-1][0] == ("[" if c == "]" else "{"):
            start = stack.pop()[1]
            if len(stack) < _MAX_DEPTH:
                pairs[start] = p
    return pairs


def _json_spans(text: str) -> list[Range]:
    """JSON that parses (``raw_decode``), or bracketed blocks spanning lines with "key": pairs."""
    if "{" not in text and "[" not in text:
        return []
    pairs = _match_brackets(text)
    spans: list[Range] = []
    covered = 0
    for p in sorted(pairs):
        if p < covered:
            continue
        q = pairs[p] + 1
        end = -1
        try:
            _, end = _JSON_DEC.raw_decode(text, p)
        except (ValueError, RecursionError):  # deep nesting: not JSON we can check
            if text.find("\n", p, q) >= 0 and _JSON_KEY.search(text, p, q):
                end = q
        if end > p + 1:
            spans.append((p, end))
            covered = end
    return spans + bracket_spans(text, pairs)


def finditer_spans(pat: re.Pattern[str], text: str) -> Iterable[Range]:
    return (m.span() for m in pat.finditer(text) if m.end() > m.start())


def merge(spans: Iterable[Range]) -> list[Range]:
    """Union of ranges; touching ranges merge too."""
    out: list[Range] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


NOSPACE = regex.compile(f"[{NS_CLASS}]")
_NS_RUN = regex.compile(f"[{NS_CLASS}]+")


def _is_word_char(c: str) -> bool:
    return (c.isalnum() or c == "_") and not NOSPACE.match(c)


def nospace_words(text: str) -> list[Range]:
    """Words inside runs of scripts written without spaces, from ICU's dictionary word breaker
    (``icu4py.breakers.WordBreaker``); one unit per character where ICU is unavailable."""
    words: list[Range] = []
    for m in _NS_RUN.finditer(text):
        words.extend((m.start() + a, m.start() + b) for a, b in icu_words(m.group()))
    return words


@functools.lru_cache(maxsize=4096)
def icu_words(run: str) -> tuple[Range, ...]:
    breaker = _word_breaker()
    if breaker is None:
        return tuple((i, i + 1) for i in range(len(run)))
    bounds = [(a, b) for a, b in breaker(run, "root").segments()]
    if any(ord(c) > 0xFFFF for c in run):  # ICU counts UTF-16 code units
        at: list[int] = []  # UTF-16 offset -> character offset
        for i, c in enumerate(run):
            at.extend([i, i] if ord(c) > 0xFFFF else [i])
        at.append(len(run))
        bounds = [(at[a], at[b]) for a, b in bounds]
    return tuple((a, b) for a, b in bounds if b > a)


@functools.lru_cache(maxsize=1)
def _word_breaker() -> Callable[[str, str], Any] | None:
    try:
        from icu4py.breakers import WordBreaker
    except ImportError:  # pragma: no cover - icu4py is a dependency; a platform without wheels
        log.warning("icu4py is not installed; CJK/Thai text is cut per character")
        return None
    return WordBreaker


def snap(text: str, regions: list[Range], words: list[Range] = []) -> list[Range]:  # noqa: B006
    """Grow regions to whole words so that no word is split between a region and a unit
    (``words``: the ICU words of no-space scripts, sorted)."""
    out: list[Range] = []
    n = len(text)
    starts = [w[0] for w in words]
    for start, end in regions:
        while start > 0 and _is_word_char(text[start - 1]) and _is_word_char(text[start]):
            start -= 1
        while end < n and _is_word_char(text[end]) and _is_word_char(text[end - 1]):
            end += 1
        if words:
            j = bisect.bisect_right(starts, start) - 1
            if j >= 0 and words[j][0] < start < words[j][1]:
                start = words[j][0]
            j = bisect.bisect_right(starts, end - 1) - 1
            if j >= 0 and words[j][0] < end < words[j][1]:
                end = words[j][1]
        out.append((start, end))
    return merge(out)
