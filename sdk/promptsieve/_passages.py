"""Passages and sentences of a segmented text: the coarse levels of the coarse-to-fine budget.

* **Passage**: a block of text separated from the next by a blank line (a retrieved
  document, a paragraph, a message part when it has no blank lines). A whole message part is
  at least one passage; the Compressor treats every text part as its own set of passages.
* **Sentence**: inside a passage, the boundaries of `sentencex
  <https://github.com/wikimedia/sentencex>`_ (Wikimedia's rule-based segmenter for ~300
  languages: abbreviations such as "Dr." / "e.g." / "z.B." do not end a sentence; CJK full
  stops 。！？ do), and every line break (a list item, a table row or a heading is a unit of
  its own).

Units of the :class:`~promptsieve.segment.Segmentation` are assigned to the sentence holding
their first character; a protected region that spans several sentences (a code block) stays
one unit and belongs to the sentence where it starts. Everything is linear in the text length
(sentencex is compiled code: about 2 ms for 175k characters on one core).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # segment.py imports split_passages from here
    from promptsieve.segment import Segmentation

__all__ = ["Structure", "split_passages", "split_sentences", "structure"]

Range = tuple[int, int]

_BLANK = re.compile(r"\n[ \t]*\r?\n\s*")
_LINE = re.compile(r"\r\n|\r|\n")
#: A CJK full stop with the closing quotes or brackets after it: always a sentence end. The
#: text is cut there before sentencex reads it, which otherwise takes "。Dr." for one word
#: and then ends a sentence at the abbreviation ("首都。Dr. Smith" -> "Dr." alone).
_CJK_END = re.compile(r"[。！？｡]+[」』）》〉】〕”’\"')\]]*")


def split_passages(text: str) -> list[Range]:
    """``[start, end)`` of each blank-line separated block, whitespace trimmed, in order."""
    out: list[Range] = []
    pos = 0
    for m in [*_BLANK.finditer(text), None]:
        end = m.start() if m else len(text)
        chunk = text[pos:end]
        if chunk.strip():
            s = pos + len(chunk) - len(chunk.lstrip())
            out.append((s, pos + len(chunk.rstrip())))
        if m:
            pos = m.end()
    return out


def split_sentences(
    text: str, start: int = 0, end: int | None = None, language: str = "en"
) -> list[Range]:
    """Sentences of ``text[start:end]`` as absolute ``[start, end)`` ranges, trimmed, in order.

    Boundaries: every CJK full stop (``。！？｡`` with the closing quotes after it), then
    sentencex's for ``language`` (an ISO 639 code; unknown codes fall back along sentencex's
    language chain to English rules) inside, then every line break.
    """
    import sentencex

    end = len(text) if end is None else end
    body = text[start:end]
    out: list[Range] = []
    for s0, e0 in _boundaries(sentencex, language, body):
        pos = s0
        for m in [*_LINE.finditer(body, s0, e0), None]:
            e = m.start() if m else e0
            chunk = body[pos:e]
            if chunk.strip():
                a = pos + len(chunk) - len(chunk.lstrip())
                out.append((start + a, start + pos + len(chunk.rstrip())))
            if m:
                pos = m.end()
    return out


def _boundaries(sentencex: Any, language: str, body: str) -> list[Range]:
    """sentencex's sentences of ``body``, read chunk by chunk between CJK full stops."""
    cuts = [m.end() for m in _CJK_END.finditer(body) if m.end() < len(body)]
    out: list[Range] = []
    for a, z in zip([0, *cuts], [*cuts, len(body)], strict=True):
        for b in sentencex.get_sentence_boundaries(language, body[a:z]):
            out.append((a + int(b["start_index"]), a + int(b["end_index"])))
    return out


@dataclass(frozen=True)
class Structure:
    """Passages and sentences of one text part, and which sentence each unit belongs to.

    ``sentence_of[u]`` is the sentence index of unit ``u`` (``-1``: none — cannot happen for
    a unit with visible characters); ``passage_of[s]`` the passage index of sentence ``s``.
    Only sentences holding at least one unit are listed.
    """

    passages: tuple[Range, ...]
    sentences: tuple[Range, ...]
    passage_of: np.ndarray  # (n_sentences,) int64
    sentence_of: np.ndarray  # (n_units,) int64


def structure(seg: Segmentation, language: str = "en") -> Structure:
    """Passages → sentences → units of ``seg`` (see module docstring)."""
    text = seg.text
    passages = split_passages(text)
    sents: list[Range] = []
    owner: list[int] = []
    for p, (a, b) in enumerate(passages):
        for s in split_sentences(text, a, b, language):
            sents.append(s)
            owner.append(p)
    starts = [s for s, _ in sents]
    raw = np.full(len(seg.units), -1, dtype=np.int64)
    for i, u in enumerate(seg.units):
        j = bisect.bisect_right(starts, u.start) - 1
        if j < 0:  # before the first sentence (cannot happen: sentences cover the text)
            j = 0 if sents else -1
        raw[i] = j
    used = sorted({int(j) for j in raw if j >= 0})
    remap = {old: new for new, old in enumerate(used)}
    sentence_of = np.array([remap.get(int(j), -1) for j in raw], dtype=np.int64)
    return Structure(
        passages=tuple(passages),
        sentences=tuple(sents[j] for j in used),
        passage_of=np.array([owner[j] for j in used], dtype=np.int64),
        sentence_of=sentence_of,
    )
