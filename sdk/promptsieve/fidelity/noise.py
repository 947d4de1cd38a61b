"""The noise floor: how often the target agrees with itself under a meaning-preserving rewrite.

A target that answers differently when only the layout of a prompt changes cannot show
agreement above that rate for *any* compression. Measuring it tells a user whether τ is
reachable at all: the original prompt is sent once as is and once as a *variant* that
says the same thing (whitespace reflowed, retrieved passages reordered), and the two
answers are compared with the task's metric. The share that agree is the floor; it comes
with a Wilson interval (``scipy.stats.binomtest(...).proportion_ci``).

When the floor's upper bound is below τ, no compression can pass honestly, and
:meth:`NoiseFloor.warning` says so. τ is never lowered automatically: that is the user's
call.

Variant builders work on the neutral prompt (``str`` or a tuple of
:class:`~promptsieve.prompt.Message`) and rewrite only text parts of compressible roles,
leaving code, tables, lists and indented blocks byte-identical.
"""

from __future__ import annotations

import logging
import random
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from scipy.stats import binomtest

from promptsieve._errors import ConfigError
from promptsieve.fidelity.agree import Metric, TargetOutput, auto_metric
from promptsieve.prompt import COMPRESSIBLE_ROLES, Message, Prompt, TextPart

__all__ = [
    "NoiseFloor",
    "VariantKind",
    "measure_noise_floor",
    "noise_floor",
    "reflow",
    "reorder_passages",
    "variant",
]

log = logging.getLogger(__name__)

VariantKind = Literal["reflow", "reorder", "auto"]

_BLOCK_SPLIT = re.compile(r"\n[ \t]*\n")
#: A block that starts like a retrieved passage: "Document 3:", "[2]", "Passage 1 (title)",
#: "Source:", "Title: ..."; runs of two or more such blocks are shuffled.
_PASSAGE_START = re.compile(
    r"^\s*(?:\[\d+\]|(?:document|doc|passage|source|context|article|title|snippet|"
    r"result)\b\s*#?\d*\s*[:.\]\)\-(])",
    re.IGNORECASE,
)
_NOT_PROSE = re.compile(r"^(?:\s|[-*+>|#]|\d+[.)]\s|```|~~~)", re.MULTILINE)


@dataclass(frozen=True)
class NoiseFloor:
    """Agreement of the original with meaning-preserving variants of itself.

    ``agree`` of ``n`` comparisons agreed; ``lower``/``upper`` is the two-sided Wilson
    interval at ``confidence`` (scipy ``binomtest(...).proportion_ci(method="wilson")``);
    ``tau`` is the agreement the screening test requires.
    """

    agree: int
    n: int
    lower: float
    upper: float
    confidence: float
    tau: float | None = None

    @property
    def rate(self) -> float:
        return self.agree / self.n if self.n else float("nan")

    @property
    def tau_above_floor(self) -> bool:
        """True when even the floor's upper bound is below tau: tau is out of reach."""
        return self.tau is not None and self.n > 0 and self.upper < self.tau

    def warning(self) -> str:
        """A one-line warning for logs and the CLI ("" when tau is within reach)."""
        if not self.tau_above_floor:
            return ""
        return (
            f"tau {self.tau:g} is above the target's noise floor: it agrees with itself under "
            f"meaning-preserving rewrites only {self.agree}/{self.n} times "
            f"({self.confidence:.0%} interval [{self.lower:.2f}, {self.upper:.2f}]); no "
            "compression can pass this test. Lower tau yourself, use a deterministic "
            "target (temperature 0), a looser metric, or labelled mode."
        )

    def summary(self) -> str:
        if not self.n:
            return "noise floor: not measured"
        return (
            f"noise floor: {self.agree}/{self.n} = {self.rate:.2f} agree "
            f"({self.confidence:.0%} interval [{self.lower:.2f}, {self.upper:.2f}])"
        )


def noise_floor(
    agree: int, n: int, *, tau: float | None = None, confidence: float = 0.95
) -> NoiseFloor:
    """The floor estimate from counts: ``agree`` of ``n`` variant comparisons agreed.

    Raises ValueError on impossible counts and ConfigError on a confidence outside (0, 1).
    """
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    if n < 0 or not 0 <= agree <= n:
        raise ValueError(f"need 0 <= agree <= n, got {agree}/{n}")
    if n == 0:
        return NoiseFloor(0, 0, 0.0, 1.0, confidence, tau)
    ci = binomtest(agree, n).proportion_ci(confidence_level=confidence, method="wilson")
    return NoiseFloor(agree, n, float(ci.low), float(ci.high), confidence, tau)


# -- variants -------------------------------------------------------------------------------


def _is_prose(block: str) -> bool:
    return bool(block.strip()) and not _NOT_PROSE.search(block) and "|" not in block


def reflow(text: str, width: int = 72) -> str:
    """Re-wrap prose paragraphs at ``width`` columns (whitespace only; words unchanged).

    Paragraphs are separated by blank lines. Code, lists, tables, quotes, headings and
    indented blocks are left byte-identical. Long words (URLs) are never broken.
    """
    if width < 20:
        raise ConfigError(f"width must be >= 20 columns, got {width}")
    seps = _BLOCK_SPLIT.findall(text)
    blocks = _BLOCK_SPLIT.split(text)
    out = []
    fenced = False
    for block in blocks:
        if block.count("```") % 2 == 1:
            fenced = not fenced
            out.append(block)
            continue
        if fenced or not _is_prose(block):
            out.append(block)
            continue
        lead = block[: len(block) - len(block.lstrip())]
        trail = block[len(block.rstrip()) :]
        body = " ".join(block.split())
        out.append(
            lead
            + textwrap.fill(body, width=width, break_long_words=False, break_on_hyphens=False)
            + trail
        )
    return "".join(b + (seps[i] if i < len(seps) else "") for i, b in enumerate(out))


def reorder_passages(text: str, rng: random.Random) -> str:
    """Shuffle each run of two or more consecutive passage blocks (``Document 1:``, ``[2]``).

    Nothing else moves: instructions before and the question after stay where they are.
    Returns ``text`` unchanged when it holds no such run.
    """
    seps = _BLOCK_SPLIT.findall(text)
    blocks = _BLOCK_SPLIT.split(text)
    i = 0
    while i < len(blocks):
        if not _PASSAGE_START.match(blocks[i]):
            i += 1
            continue
        j = i
        while j + 1 < len(blocks) and _PASSAGE_START.match(blocks[j + 1]):
            j += 1
        if j > i:
            run = blocks[i : j + 1]
            shuffled = run[:]
            for _ in range(8):  # prefer an order that differs
                rng.shuffle(shuffled)
                if shuffled != run:
                    break
            blocks[i : j + 1] = shuffled
        i = j + 1
    return "".join(b + (seps[k] if k < len(seps) else "") for k, b in enumerate(blocks))


def check_variant_kind(kind: object, name: str = "variant kind") -> None:
    """Raise ConfigError unless ``kind`` is a :data:`VariantKind`; ``name`` labels the message."""
    if kind not in ("reflow", "reorder", "auto"):
        raise ConfigError(f"{name} must be 'reflow', 'reorder' or 'auto', got {kind!r}")


def _rewrite_text(text: str, kind: VariantKind, rng: random.Random) -> str:
    out = text
    if kind in ("reorder", "auto"):
        out = reorder_passages(out, rng)
    if kind == "reflow" or (kind == "auto" and out == text):
        out = reflow(out, width=rng.choice((60, 72, 88)))
    return out


def variant(
    prompt: Prompt,
    kind: VariantKind = "auto",
    *,
    seed: int = 0,
    roles: frozenset[str] = COMPRESSIBLE_ROLES,
) -> Prompt:
    """A meaning-preserving variant of ``prompt`` (same shape: ``str`` or messages).

    ``"reorder"`` shuffles runs of retrieved passages, ``"reflow"`` re-wraps prose,
    ``"auto"`` reorders where passages exist and reflows otherwise. Only unprotected text
    parts of ``roles`` change; text around a run of passages (instructions, the question)
    stays in place.
    Deterministic for a ``seed``. Raises ConfigError on an unknown ``kind``.
    """
    check_variant_kind(kind)
    rng = random.Random(seed)
    if isinstance(prompt, str):
        return _rewrite_text(prompt, kind, rng)
    messages = list(prompt)
    out: list[Message] = []
    for m in messages:
        if m.role not in roles:
            out.append(m)
            continue
        parts = [
            TextPart(_rewrite_text(p.text, kind, rng))
            if isinstance(p, TextPart) and not p.protected
            else p
            for p in m.parts
        ]
        out.append(m.with_parts(parts))
    return tuple(out)


def measure_noise_floor(
    prompts: Sequence[Prompt],
    complete: Callable[[Prompt], TargetOutput],
    *,
    metric: Metric | None = None,
    originals: Sequence[TargetOutput | None] | None = None,
    kind: VariantKind = "auto",
    tau: float | None = None,
    confidence: float = 0.95,
    seed: int = 0,
) -> NoiseFloor:
    """Measure the floor: send each prompt's variant and compare with the original's answer.

    ``complete`` sends a neutral prompt to the target (any exception: that prompt is not
    counted). ``originals`` reuses answers already paid for (one call per prompt saved);
    ``metric`` defaults to :func:`auto_metric` of each original. Prompts whose variant is
    identical to them are skipped (no information, no call). Costs one call per prompt
    (two without ``originals``). Returns a :class:`NoiseFloor`.
    """
    agree = n = 0
    for i, prompt in enumerate(prompts):
        changed = variant(prompt, kind, seed=seed + i)
        if changed == prompt:
            continue
        try:
            original = originals[i] if originals is not None else None
            if original is None:
                original = complete(prompt)
            other = complete(changed)
        except Exception as exc:
            log.info("noise-floor call failed, not counted: %s", type(exc).__name__)
            continue
        n += 1
        agree += bool((metric or auto_metric(original))(original, other))
    return noise_floor(agree, n, tau=tau, confidence=confidence)
