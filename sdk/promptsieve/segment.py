"""Text -> units (words and protected regions), sentences, few-shot demonstrations, question.

Pruning only ever drops whole units, so everything that must come out byte-identical (code,
JSON, URLs, numbers, dates, identifiers, quoted strings, user pins, ...) becomes ONE protected
unit, and every other word is its own droppable unit. The gaps between units are *glue*
(whitespace and punctuation); ``prune`` rebuilds the glue around dropped units.

Protected, whatever the script and whether fenced (see ``_regions`` and ``_shapes``):

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
import logging
import re
from dataclasses import dataclass

import regex

from promptsieve._config_types import check_field_types
from promptsieve._errors import ConfigError
from promptsieve._passages import split_passages
from promptsieve._regions import (
    NS_CLASS,
    finditer_spans,
    merge,
    nospace_words,
    protected_spans,
    snap,
)
from promptsieve._shapes import line_spans

__all__ = ["SegmentConfig", "Segmentation", "Unit", "check_text", "segment"]

log = logging.getLogger(__name__)

Range = tuple[int, int]


@dataclass(frozen=True)
class SegmentConfig:
    """How to cut text into units; see module docstring."""

    #: user regexes (text or compiled) whose matches are protected
    keep_patterns: tuple[str | re.Pattern[str], ...] = ()
    keep_open: str = "<keep>"  # explicit keep-marker, removed from the output
    keep_close: str = "</keep>"
    detect_demos: bool = True
    protect_question: bool = True  # the final question (last Q:/question sentence) is protected

    def __post_init__(self) -> None:
        check_field_types(self)
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


def check_text(text: str, what: str = "prompt text") -> None:
    """Raise :class:`~promptsieve.ConfigError` unless ``text`` is valid Unicode (encodes as
    UTF-8): lone surrogates come from decoding bytes with ``surrogateescape``/``surrogatepass``
    and cannot be sent to any model API either (nor can anything that is not a ``str``).
    ``what`` names the text in the message."""
    if not isinstance(text, str):
        raise ConfigError(f"{what} must be a str, got {type(text).__name__}")
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        bad = (
            f"undecodable byte 0x{code - 0xDC00:02x}"  # surrogateescape, e.g. from argv
            if 0xDC80 <= code <= 0xDCFF
            else f"lone surrogate {text[exc.start]!r}"
        )
        raise ConfigError(
            f"{what} is not valid Unicode: {bad} at character {exc.start}; "
            "decode the source with errors='replace' or fix it"
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
        pinned.extend(finditer_spans(_compile_user(pattern), text))
    pinned = merge(pinned)
    words = nospace_words(text)
    shapes = line_spans(text)  # code, config and table lines
    regions = snap(text, merge([*pinned, *shapes, *protected_spans(text)]), words)

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
    protected = merge([*regions, *([question] if question else [])])
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
def _compile_user(pattern: str | re.Pattern[str]) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"invalid keep_pattern {pattern!r}: {exc}") from exc


# ---------------------------------------------------------------------------- units, sentences

_UNIT = regex.compile(
    r"""(?V1)
    (?P<ns>[NS]+)
    |[[\w\p{M}\p{N}\u200c\u200d]--[NS]]+
        (?:['’\-][[\w\p{M}\p{N}\u200c\u200d]--[NS]]+)*
    |(?=[\p{Extended_Pictographic}\p{Regional_Indicator}])\X
    |[\p{S}\p{Co}\p{Cn}]+
    """.replace("NS", NS_CLASS),
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
    """An unanswered block: empty answer, only the answers' shared preamble, a bare label,
    or no answer label at all after answered blocks ("Q: ...?" following "Q: ...\nA: 4")."""
    if answer is None:
        return bool(done) or bool(_OPEN_END.search(text, rng[0], rng[1]))
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
        key = _label_key(text, p[0]) if p[0] not in code_lines else None
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
    blocks.append((last, not _template_open(text, last, best[:-1])))
    return blocks


def _template_open(text: str, last: Range, answered: list[Range]) -> bool:
    """Whether ``last``, the final block of a run of template blocks, is the unanswered
    query rather than one more demonstration. It is when it ends in an open label
    ("Sentiment:") or a question mark, when its final line is the shared answer prompt
    without the answer (``True, False, or Neither?`` after blocks ending
    ``True, False, or Neither? True``), or when its labelled lines are a strict prefix of
    every earlier block's (``Passage: ...`` alone after ``Passage: ...`` / ``Claim: ...``)."""
    body = text[last[0] : last[1]].rstrip()
    if _OPEN_END.search(body) or body.endswith(("?", "？")):
        return True
    lines = body.splitlines()
    finals = [text[a:b].rstrip().splitlines()[-1].strip() for a, b in answered]
    tail = lines[-1].strip()
    if all(len(f) > len(tail) and f.startswith(tail) for f in finals):
        return True
    keys = _line_keys(lines)
    return all(
        len(k) > len(keys) and k[: len(keys)] == keys
        for k in (_line_keys(text[a:b].splitlines()) for a, b in answered)
    )


def _line_keys(lines: list[str]) -> list[str]:
    """The "Label:" prefixes of ``lines``, in order (lines without one are skipped)."""
    return [k for k in map(_label_key, lines) if k is not None]


def _label_key(text: str, pos: int = 0) -> str | None:
    """The "Label:" prefix at ``text[pos:]`` with its digits as ``#``, or None."""
    m = _TEMPLATE_PREFIX.match(text, pos)
    return re.sub(r"\d+", "#", m.group(1)) if m else None


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
