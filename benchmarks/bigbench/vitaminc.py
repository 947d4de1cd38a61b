"""Evidence → claim: BIG-bench's ``vitaminc_fact_verification`` (True / False / Neither).

Each BIG-bench example is a Wikipedia quote ("Title: evidence ...") and a claim. The prompt
is BIG-bench's own task prefix, three fixed demonstrations (one per label, taken from the
first examples and never asked), then the evidence (compressible) and the claim with the
answer cue (the question, never compressed).
"""

from __future__ import annotations

import random

from ..data import BenchItem
from ._sdist import task_examples, task_meta
from .multidoc import detokenize

__all__ = ["vitaminc_items"]

TASK = "vitaminc_fact_verification"
_LABELS = ("True", "False", "Neither")


def _parse(ex: dict[str, object]) -> tuple[str, str, str] | None:
    evidence, sep, claim = str(ex["input"]).partition("\nClaim:")
    scores = dict(ex.get("target_scores") or {})  # type: ignore[call-overload]
    gold = [k for k, v in scores.items() if v == 1]
    if not sep or len(gold) != 1 or gold[0] not in _LABELS:
        return None
    return detokenize(evidence), detokenize(claim), gold[0]


def _demos() -> tuple[list[int], str]:
    examples = task_examples(TASK)
    picked: dict[str, int] = {}
    for i, ex in enumerate(examples):
        parsed = _parse(ex)
        if parsed and parsed[2] not in picked:
            picked[parsed[2]] = i
        if len(picked) == 3:
            break
    prefix = str(task_meta(TASK).get("task_prefix") or "")
    parts = [prefix]
    for label in _LABELS:
        parsed = _parse(examples[picked[label]])
        assert parsed is not None
        evidence, claim, gold = parsed
        parts.append(f"Passage: {evidence}\nClaim: {claim}\nTrue, False, or Neither? {gold}\n\n")
    return sorted(picked.values()), "".join(parts)


def vitaminc_items(n: int = 100, seed: int = 0) -> list[BenchItem]:
    """``n`` seeded items (task ``vitaminc``, kind ``direct``, gold ``true|false|neither``)."""
    examples = task_examples(TASK)
    used, head = _demos()
    pool = [i for i in range(len(examples)) if i not in used and _parse(examples[i])]
    rng = random.Random(f"vitaminc:{seed}")
    out = []
    rng.shuffle(pool)  # prefix-stable: the first k items do not depend on n
    for i in pool[:n]:
        parsed = _parse(examples[i])
        assert parsed is not None
        evidence, claim, gold = parsed
        question = f"Claim: {claim}\nTrue, False, or Neither?"
        prompt = f"{head}Passage: {evidence}\n{question}"
        out.append(BenchItem("vitaminc", f"vitaminc#{i}", prompt, question, gold.lower(), "direct"))
    return out
