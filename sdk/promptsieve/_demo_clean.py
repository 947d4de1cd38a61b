"""Cleaning: drop every demonstration with a negative attribution, and report which and
why (JSON, HTML table)."""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from promptsieve._demo_attribution import attribute_demos
from promptsieve._demo_scorers import HeadDemoScorer
from promptsieve._demo_types import (
    CoalitionScorer,
    DemoAttribution,
    DemoAttributionConfig,
    DemoFormat,
    Demonstration,
    ValidationExample,
)
from promptsieve._errors import ConfigError

__all__ = ["CleanReport", "clean_demos"]


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
    :func:`attribute_demos` does, for the head fallback (it has no sign), and for a
    ``margin`` that is not a finite number >= 0 (a negative one would remove demonstrations
    that help; NaN would remove none).
    """
    real = isinstance(margin, numbers.Real) and not isinstance(margin, bool)
    if not (real and math.isfinite(margin) and margin >= 0):
        raise ConfigError(f"margin must be a finite number >= 0 (nats), got {margin!r}")
    if isinstance(scorer, HeadDemoScorer):
        raise ConfigError("cleaning needs Shapley values from the LM proxy, not the head ranking")
    demos = tuple(demos)
    config = replace(config or DemoAttributionConfig(), fallback=False)
    attr = attribute_demos(demos, validation, fmt=fmt, config=config, scorer=scorer)
    removed = tuple(attr.negative(margin)) if attr.method != "none" else ()
    kept = tuple(i for i in range(len(demos)) if i not in removed)
    return CleanReport(kept, removed, attr, demos, margin)
