"""Render token importance as a self-contained HTML heat map."""

from __future__ import annotations

import html

import numpy as np

from promptsieve.proxy import TokenScores


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
