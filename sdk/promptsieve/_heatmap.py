"""Render token importance as a self-contained HTML heat map."""

from __future__ import annotations

import bisect
import html
from typing import TYPE_CHECKING

import numpy as np

from promptsieve.proxy import TokenScores

if TYPE_CHECKING:
    from promptsieve.compressor import Decision, Explanation


def render_html(scores: TokenScores, *, title: str = "promptsieve explain") -> str:
    """Colour each token by its importance (white = low, red = high); hover shows the score."""
    text = scores.text
    vals = np.asarray(scores.scores, dtype=float)
    lo, hi = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 1.0)
    span = (hi - lo) or 1.0
    out: list[str] = []
    pos = 0
    for (s, e), v in zip(scores.offsets.tolist(), vals.tolist(), strict=False):
        if s < pos or e <= s:
            continue
        out.append(html.escape(text[pos:s]))
        a = (v - lo) / span
        out.append(
            f'<span style="background:rgba(220,40,40,{a:.2f})" title="{v:.4f}">'
            f"{html.escape(text[s:e])}</span>"
        )
        pos = e
    out.append(html.escape(text[pos:]))
    body = "".join(out)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;line-height:1.7}}
pre{{white-space:pre-wrap;font-family:inherit}} .legend span{{padding:0 .4em}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Scorer: <b>{html.escape(scores.scorer)}</b> &middot; {len(vals)} tokens &middot; darker red =
more important to the proxy (hover a token for its score).</p>
<p class="legend"><span style="background:rgba(220,40,40,0.05)">low</span>
<span style="background:rgba(220,40,40,0.5)">medium</span>
<span style="background:rgba(220,40,40,1)">high</span></p>
<pre>{body}</pre></body></html>
"""


_STATUS_STYLE = {
    "kept": "",
    "thinned": "",
    "passage": "text-decoration:line-through;color:#999",
    "sentence": "text-decoration:line-through;color:#999",
    "word": "text-decoration:line-through;color:#b55",
    "demo": "text-decoration:line-through;color:#999",
}
_PASSAGE_BORDER = {"kept": "#2a7", "thinned": "#e90", "passage": "#bbb", "demo": "#bbb"}


def render_decisions_html(expl: Explanation, *, title: str = "promptsieve explain") -> str:
    """Passage, sentence and token decisions of one compression as a self-contained page.

    Each passage is a block with a coloured left border (green kept, orange thinned, grey
    dropped whole); each sentence is underlined with its relevance (darker = more relevant,
    hover for the score and decision); each token is shaded by the proxy's per-token score;
    dropped text is struck through (grey: with its passage or sentence, red: a thinned word).
    """
    text = expl.text
    ts = expl.token_scores
    vals = np.asarray(ts.scores, dtype=float)
    lo, hi = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 1.0)
    span = (hi - lo) or 1.0
    tok_starts = ts.offsets[:, 0] if len(vals) else np.zeros(0, dtype=np.int64)
    sent_vals = np.array([d.score for d in expl.sentences], dtype=float)
    s_lo, s_hi = (float(sent_vals.min()), float(sent_vals.max())) if sent_vals.size else (0, 1)
    s_span = (s_hi - s_lo) or 1.0
    words = sorted(expl.words, key=lambda w: w.start)
    word_starts = [w.start for w in words]

    def tokens_html(a: int, b: int) -> str:
        out: list[str] = []
        pos = a
        i = int(np.searchsorted(tok_starts, a, side="left")) if len(vals) else 0
        while i < len(vals) and int(ts.offsets[i, 0]) < b:
            s, e = int(ts.offsets[i, 0]), min(int(ts.offsets[i, 1]), b)
            if s >= pos and e > s:
                out.append(_words_html(text, pos, s, words, word_starts))
                alpha = (vals[i] - lo) / span
                w = _word_at(words, word_starts, s)
                style = _STATUS_STYLE.get(w.status if w is not None else "kept", "")
                out.append(
                    f'<span style="background:rgba(220,40,40,{alpha:.2f});{style}" '
                    f'title="token {vals[i]:.3f}">{html.escape(text[s:e])}</span>'
                )
                pos = e
            i += 1
        out.append(_words_html(text, pos, b, words, word_starts))
        return "".join(out)

    blocks: list[str] = []
    for p in expl.passages:
        inner: list[str] = []
        pos = p.start
        for d in expl.sentences:
            if d.start < p.start or d.end > p.end:
                continue
            inner.append(html.escape(text[pos : d.start]))
            a = (d.score - s_lo) / s_span
            inner.append(
                f'<span class="s s-{d.status}" style="border-bottom:3px solid '
                f'rgba(30,90,200,{a:.2f})" title="sentence {d.score:.3f}: {d.status}">'
                f"{tokens_html(d.start, d.end)}</span>"
            )
            pos = d.end
        inner.append(html.escape(text[pos : p.end]))
        border = _PASSAGE_BORDER.get(p.status, "#bbb")
        faded = "opacity:.55;" if p.status in ("passage", "demo") else ""
        blocks.append(
            f'<div class="p" style="border-left:5px solid {border};{faded}" '
            f'title="passage {p.score:.3f}: {p.status}"><pre>{"".join(inner)}</pre></div>'
        )
    counts = {k: sum(d.status == k for d in expl.sentences) for k in ("kept", "thinned")}
    dropped_s = len(expl.sentences) - counts["kept"] - counts["thinned"]
    dropped_p = sum(d.status in ("passage", "demo") for d in expl.passages)
    q = html.escape(expl.question or "(none: query-free importance)")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:62rem;margin:2rem auto;line-height:1.8}}
pre{{white-space:pre-wrap;font-family:inherit;margin:0}} .p{{padding:.3em .8em;margin:.6em 0}}
.legend span{{padding:0 .4em;margin-right:.6em}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Scorer: <b>{html.escape(ts.scorer)}</b> &middot; ratio {expl.ratio:g} &middot;
question: <i>{q}</i></p>
<p>{len(expl.passages)} passages ({dropped_p} dropped whole) &middot; {len(expl.sentences)}
sentences ({dropped_s} dropped, {counts["thinned"]} thinned) &middot; {len(vals)} tokens.</p>
<p class="legend"><span style="border-left:5px solid #2a7">passage kept</span>
<span style="border-left:5px solid #e90">passage thinned</span>
<span style="border-left:5px solid #bbb;opacity:.55">passage dropped</span>
<span style="border-bottom:3px solid rgba(30,90,200,1)">relevant sentence</span>
<span style="background:rgba(220,40,40,.6)">important token</span>
<span style="{_STATUS_STYLE["sentence"]}">dropped</span>
<span style="{_STATUS_STYLE["word"]}">thinned word</span> (hover for scores)</p>
{"".join(blocks)}</body></html>
"""


def _word_at(words: list[Decision], starts: list[int], pos: int) -> Decision | None:
    i = bisect.bisect_right(starts, pos) - 1
    if i >= 0 and words[i].start <= pos < words[i].end:
        return words[i]
    return None


def _words_html(text: str, a: int, b: int, words: list[Decision], starts: list[int]) -> str:
    """Text between tokens (whitespace, or characters no token covers), struck if dropped."""
    if b <= a:
        return ""
    w = _word_at(words, starts, a)
    style = _STATUS_STYLE.get(w.status, "") if w is not None else ""
    chunk = html.escape(text[a:b])
    return f'<span style="{style}">{chunk}</span>' if style else chunk
