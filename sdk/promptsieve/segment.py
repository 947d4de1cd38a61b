"""Text -> units (words and protected regions), sentences, few-shot demonstrations, question.

Pruning only ever drops whole units, so everything that must come out byte-identical (code,
JSON, URLs, numbers, dates, identifiers, quoted strings, user pins, ...) becomes ONE protected
unit, and every other word is its own droppable unit. The gaps between units are *glue*
(whitespace and punctuation); ``prune`` rebuilds the glue around dropped units.

Protected, whatever the script and whether fenced (see ``_PATTERNS`` and ``_shapes``):

* code and config: fenced blocks, JSON (strict, with trailing commas, or JS/Python object
  literals), and unfenced lines whose shape is code or config (Python that parses, SQL,
  tracebacks, shell prompts, C-like lines, YAML, INI, CSV); markdown tables whole;
* numbers glued to letters of any script (``25кг``, ``1500руб``, ``7天``, ``10時30分``),
  dates, times, versions;
* identifiers: snake/camel case, letters+digits in any script, symbol-separated ids with a digit
  (``INV/2024/00042``), upper-case groups with a letters+digits group (``AB12 CDE``, IBANs),
  UUIDs, hex and base64 runs, data URLs, URLs, e-mails, file paths, dotted names, special
  tokens and tags (``<|im_start|>``, ``</s>``, ``[INST]``);
* quoted strings of any length inside one paragraph, for "…", “…”, „…“, «…», ‹…›, 「…」, 『…』,
  ‘…’, '…' (an unclosed quote protects nothing);
* user regexes, ``<keep>`` spans, the final question.

Words of scripts written without spaces (Chinese, Japanese, Thai, Lao, Khmer, Burmese) come
from ICU's dictionary word breaker (``icu4py``), so pruning never cuts a word in half.

Text that is not valid Unicode (a lone surrogate, e.g. from ``errors="surrogateescape"``)
raises :class:`~promptsieve.ConfigError` before anything else runs.

All passes are regex scans or single left-to-right walks, so time grows linearly with the text
(about 1 s for 400k characters of mixed prose on one core).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import regex

from promptsieve._errors import ConfigError
from promptsieve._passages import split_passages
from promptsieve._shapes import bracket_spans, line_spans

__all__ = ["SegmentConfig", "Segmentation", "Unit", "check_text", "segment"]

log = logging.getLogger(__name__)

Range = tuple[int, int]


@dataclass(frozen=True)
class SegmentConfig:
    """How to cut text into units; see module docstring."""

    keep_patterns: tuple[str, ...] = ()  # user regexes whose matches are protected
    keep_open: str = "<keep>"  # explicit keep-marker, removed from the output
    keep_close: str = "</keep>"
    detect_demos: bool = True
    protect_question: bool = True  # the final question (last Q:/question sentence) is protected

    def __post_init__(self) -> None:
        if bool(self.keep_open) != bool(self.keep_close):
            raise ConfigError("keep_open and keep_close must both be set or both be empty")
        for pattern in self.keep_patterns:
            _compile_user(pattern)


@dataclass(frozen=True, slots=True)
class Unit:
    """Smallest droppable atom: a word, or a protected region (never dropped on its own)."""

    start: int  # char offsets into Segmentation.text
    end: int
    sentence: int  # index into Segmentation.sentences
    demo: int | None  # index into Segmentation.demos, if inside a few-shot demonstration
    protected: bool


@dataclass(frozen=True)
class Segmentation:
    text: str  # input with keep-markers removed
    units: tuple[Unit, ...]  # ordered, non-overlapping; gaps are whitespace/punctuation glue
    sentences: tuple[Range, ...]
    demos: tuple[Range, ...]
    protected: tuple[Range, ...]  # protected char ranges (merged), the question included
    question: Range | None
    # Ranges the user pinned (keep-markers, keep_patterns): a demonstration holding one is never
    # dropped as a whole. Automatic protections inside a demo go when the whole demo goes.
    pinned: tuple[Range, ...] = ()


def check_text(text: str) -> None:
    """Raise :class:`~promptsieve.ConfigError` unless ``text`` is valid Unicode (encodes as
    UTF-8): lone surrogates come from decoding bytes with ``surrogateescape``/``surrogatepass``
    and cannot be sent to any model API either."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(
            f"prompt text is not valid Unicode: lone surrogate {text[exc.start]!r} at "
            f"character {exc.start}; decode the source with errors='replace' or fix it"
        ) from None


def segment(text: str, config: SegmentConfig | None = None) -> Segmentation:
    """Cut ``text`` into units; offsets refer to the returned ``text`` (keep-markers removed).

    Raises ``ConfigError`` when ``text`` holds a lone surrogate (see :func:`check_text`)."""
    cfg = config or SegmentConfig()
    check_text(text)
    text, pinned = _strip_keep_markers(text, cfg.keep_open, cfg.keep_close)
    if not text.strip():
        return Segmentation(text, (), (), (), (), None, tuple(pinned))
    for pattern in cfg.keep_patterns:
        pinned.extend(_finditer_spans(_compile_user(pattern), text))
    pinned = _merge(pinned)
    words = _nospace_words(text)
    shapes = line_spans(text)  # code, config and table lines
    regions = _snap(text, _merge([*pinned, *shapes, *_protected_spans(text)]), words)

    raw = _raw_units(text, regions, words)
    sentence_of, sentences = _sentences(text, raw)
    demos, question = _demos_and_question(text, cfg, sentences, {s for s, _ in shapes})

    units: list[Unit] = []
    demo_starts = [d[0] for d in demos]
    for k, (start, end, prot) in enumerate(raw):
        demo: int | None = None
        j = bisect.bisect_right(demo_starts, start) - 1
        if j >= 0 and start < demos[j][1]:
            demo = j
        if question is not None and start < question[1] and end > question[0]:
            prot = True
        units.append(Unit(start, end, sentence_of[k], demo, prot))
    protected = _merge([*regions, *([question] if question else [])])
    return Segmentation(
        text,
        tuple(units),
        tuple(sentences),
        tuple(demos),
        tuple(protected),
        question,
        tuple(pinned),
    )


# ---------------------------------------------------------------------------- keep-markers


def _strip_keep_markers(text: str, open_: str, close: str) -> tuple[str, list[Range]]:
    """Remove ``<keep>...</keep>`` pairs; their content becomes a pinned range."""
    if not open_ or open_ not in text:
        return text, []
    pat = re.compile(re.escape(open_) + "(.*?)" + re.escape(close), re.DOTALL)
    out: list[str] = []
    pinned: list[Range] = []
    pos = length = 0
    for m in pat.finditer(text):
        out.append(text[pos : m.start()])
        length += m.start() - pos
        content = m.group(1)
        if content:
            pinned.append((length, length + len(content)))
        out.append(content)
        length += len(content)
        pos = m.end()
    out.append(text[pos:])
    return "".join(out), pinned


@functools.lru_cache(maxsize=128)
def _compile_user(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"invalid keep_pattern {pattern!r}: {exc}") from exc


# ---------------------------------------------------------------------------- protected regions

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
_NS_CLASS = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\u30fc\u3005"

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
    ``_snap`` grows them to whole ICU words). Walks out from each digit run, so prose without
    digits costs one regex scan."""
    spans: list[Range] = []
    covered = 0
    n = len(text)
    for m in _NUMBER_RUN.finditer(text):
        a, b = m.start(), m.end()
        if (a > 0 and _NOSPACE.match(text[a - 1])) or (b < n and _NOSPACE.match(text[b])):
            while b + 1 < n and _NOSPACE.match(text[b]) and text[b + 1].isdigit():
                nxt = _NUMBER_RUN.match(text, b + 1)
                assert nxt is not None
                b = nxt.end()
            a -= a > 0 and bool(_NOSPACE.match(text[a - 1]))
            b += b < n and bool(_NOSPACE.match(text[b]))
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
    return (c.isalnum() or c == "_" or unicodedata.category(c)[0] == "M") and not _NOSPACE.match(c)


_URL_TRAIL = ".,;:!?'\"”’)]}>"
_FENCE_OPEN = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})[^\n]*$", re.MULTILINE)
_BRACKET = re.compile(r"[\[\]{}]")
_JSON_KEY = re.compile(r"\"[^\"\n]{1,100}\"\s*:")
_JSON_DEC = json.JSONDecoder()


def _protected_spans(text: str) -> list[Range]:
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


def _finditer_spans(pat: re.Pattern[str], text: str) -> Iterable[Range]:
    return (m.span() for m in pat.finditer(text) if m.end() > m.start())


def _merge(spans: Iterable[Range]) -> list[Range]:
    """Union of ranges; touching ranges merge too."""
    out: list[Range] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


_NOSPACE = regex.compile(f"[{_NS_CLASS}]")
_NS_RUN = regex.compile(f"[{_NS_CLASS}]+")


def _is_word_char(c: str) -> bool:
    return (c.isalnum() or c == "_") and not _NOSPACE.match(c)


def _nospace_words(text: str) -> list[Range]:
    """Words inside runs of scripts written without spaces, from ICU's dictionary word breaker
    (``icu4py.breakers.WordBreaker``); one unit per character where ICU is unavailable."""
    words: list[Range] = []
    for m in _NS_RUN.finditer(text):
        words.extend((m.start() + a, m.start() + b) for a, b in _icu_words(m.group()))
    return words


@functools.lru_cache(maxsize=4096)
def _icu_words(run: str) -> tuple[Range, ...]:
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


def _snap(text: str, regions: list[Range], words: list[Range] = []) -> list[Range]:  # noqa: B006
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
    return _merge(out)


# ---------------------------------------------------------------------------- units, sentences

_UNIT = regex.compile(
    r"""(?V1)
    (?P<ns>[NS]+)
    |[[\w\p{M}\p{N}\u200c\u200d]--[NS]]+
        (?:['’\-][[\w\p{M}\p{N}\u200c\u200d]--[NS]]+)*
    |(?=[\p{Extended_Pictographic}\p{Regional_Indicator}])\X
    |[\p{S}\p{Co}\p{Cn}]+
    """.replace("NS", _NS_CLASS),
    regex.VERBOSE,
)
_SENT_BREAK = re.compile(r"[.!?…](?=[\"'”’)\]]*(?:\s|$))|[。！？]|[\r\n]")


def _raw_units(text: str, regions: list[Range], words: list[Range]) -> list[tuple[int, int, bool]]:
    raw: list[tuple[int, int, bool]] = []
    pos = 0
    starts = [w[0] for w in words]
    for start, end in [*regions, (len(text), len(text))]:
        for m in _UNIT.finditer(text, pos, start):
            if m.group("ns") is None:
                raw.append((m.start(), m.end(), False))
                continue
            j = bisect.bisect_left(starts, m.start())
            while j < len(words) and words[j][0] < m.end():
                raw.append((max(words[j][0], m.start()), min(words[j][1], m.end()), False))
                j += 1
        if end > start:
            raw.append((start, end, True))
        pos = end
    return raw


def _sentences(text: str, raw: list[tuple[int, int, bool]]) -> tuple[list[int], list[Range]]:
    """Sentence index per unit and sentence ranges (a break: . ! ? before space, or a newline)."""
    sentence_of: list[int] = []
    sentences: list[Range] = []
    prev_end = 0
    for start, end, _ in raw:
        if not sentences or _SENT_BREAK.search(text, prev_end, start):
            if sentences:
                sentences[-1] = (sentences[-1][0], _with_trailing_punct(text, prev_end, start))
            sentences.append((start, end))
        sentence_of.append(len(sentences) - 1)
        prev_end = end
    if sentences:
        sentences[-1] = (sentences[-1][0], _with_trailing_punct(text, prev_end, len(text)))
    return sentence_of, sentences


def _with_trailing_punct(text: str, end: int, limit: int) -> int:
    while end < limit and not text[end].isspace():
        end += 1
    return end


# ---------------------------------------------------------------------------- demos, question

_Q_KINDS = (  # (question label, answer labels); earlier kinds win when several repeat
    ("Example", r"(?:A|Answer|Output|Solution|Label|Target)"),
    ("Question", r"(?:Answer|A)"),
    ("Q", r"(?:A|Answer)"),
    ("Problem", r"(?:Solution|Answer)"),
    ("Input", r"(?:Output|Answer|Label|Target)"),
)
_BLANK = re.compile(r"\n[ \t]*\r?\n")
_TEMPLATE_PREFIX = re.compile(r"[ \t]*([^\s:]{1,30}(?:[ \t]+\d+)?[ \t]*:)")
_OPEN_END = re.compile(r"[:：][ \t]*$")


def _label(kind: str) -> str:
    if kind == "Example":
        return r"(?m)^[ \t]*(?:Example|EXAMPLE)[ \t]*#?\d*[ \t]*[:：.]"
    return r"(?m)^[ \t]*" + kind + r"[ \t]*[:：]"


def _demos_and_question(
    text: str, cfg: SegmentConfig, sentences: list[Range], code_lines: set[int]
) -> tuple[list[Range], Range | None]:
    blocks = _label_blocks(text) or _template_blocks(text, code_lines)
    demos = [b for b, answered in blocks if answered]
    question: Range | None = None
    if blocks and not blocks[-1][1] and not text[blocks[-1][0][1] :].strip():
        question = blocks[-1][0]
    if cfg.protect_question and question is None:
        question = _question_sentence(text, sentences)
    if not cfg.protect_question:
        question = None
    if not cfg.detect_demos:
        demos = []
    return demos, question


def _label_blocks(text: str) -> list[tuple[Range, bool]]:
    """Blocks that start at a repeated question label; (range, answered)."""
    for kind, answer in _Q_KINDS:
        starts = [m.start() for m in re.finditer(_label(kind), text)]
        if not starts:
            continue
        starts = [
            s + len(text[s:e]) - len(text[s:e].lstrip(" \t"))
            for s, e in zip(starts, [*starts[1:], len(text)], strict=True)
        ]
        bounds = [*starts, len(text)]
        ranges = [(s, s + len(text[s:e].rstrip())) for s, e in itertools.pairwise(bounds)]
        answer_re = re.compile(r"(?m)^[ \t]*" + answer + r"[ \t]*[:：]")
        answers: list[str | None] = []
        for s, e in ranges:
            found = list(answer_re.finditer(text, s, e))
            answers.append(text[found[-1].end() : e].strip() if found else None)
        if len(ranges) == 1:  # a lone block counts only as a trailing unanswered question
            if _is_open(text, ranges[0], answers[0], []):
                return [(ranges[0], False)]
            continue
        done = [a for a in answers[:-1] if a]
        if kind == "Example":  # examples need no answer label
            blocks = [(r, True) for r in ranges[:-1]]
        else:
            blocks = [(r, bool(a)) for r, a in zip(ranges[:-1], answers[:-1], strict=True)]
        blocks.append((ranges[-1], not _is_open(text, ranges[-1], answers[-1], done)))
        return blocks
    return []


def _is_open(text: str, rng: Range, answer: str | None, done: list[str]) -> bool:
    """An unanswered block: empty answer, only the answers' shared preamble, or a bare label."""
    if answer is None:
        return bool(_OPEN_END.search(text, rng[0], rng[1]))
    if not answer:
        return True
    return bool(done) and all(a.startswith(answer) and len(a) > len(answer) for a in done)


def _template_blocks(text: str, code_lines: set[int]) -> list[tuple[Range, bool]]:
    """≥2 consecutive blank-line separated blocks starting with the same "Label:" token; a
    block whose first line is code or config (``code_lines``: their start offsets, e.g. two
    YAML blocks that both start with ``server:``) is no demonstration."""
    paras = split_passages(text)
    best: list[Range] = []
    run: list[Range] = []
    prev_key: str | None = None
    for p in paras:
        m = _TEMPLATE_PREFIX.match(text, p[0])
        key = re.sub(r"\d+", "#", m.group(1)) if m and p[0] not in code_lines else None
        if key is not None and key == prev_key:
            run.append(p)
        else:
            run = [p]
        prev_key = key
        if len(run) >= 2 and len(run) >= len(best):
            best = list(run)
    if len(best) < 2:
        return []
    blocks = [(r, True) for r in best[:-1]]
    last = best[-1]
    blocks.append((last, not _OPEN_END.search(text, last[0], last[1])))
    return blocks


_ANSWER_PREFIX_WORDS = 12


def _question_sentence(text: str, sentences: list[Range]) -> Range | None:
    """The last sentence ending in "?" inside the final paragraph."""
    stripped = text.rstrip()
    para_start = 0
    for m in _BLANK.finditer(stripped):
        para_start = m.end()
    for start, end in reversed(sentences):
        if start < para_start:
            break
        body = text[start:end].rstrip("\"'”’)]» \t")
        if body.endswith(("?", "？")):
            q_end = start + len(body)
            # A short tail after the question is the answer's opening ("Answer: The code
            # is"): the target continues from it, so it is part of what must stay.
            if len(stripped[q_end:].split()) <= _ANSWER_PREFIX_WORDS:
                q_end = len(stripped)
            return (start, q_end)
    return None
