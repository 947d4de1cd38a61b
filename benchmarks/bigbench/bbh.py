"""BBH tasks with their full BIG-bench question sets: lm-eval's exemplars as demonstrations.

BIG-Bench Hard (Suzgun et al., 2022) keeps 250 questions per task and lm-eval ships only its
3 exemplars per task, too few requests to screen a task on. BIG-bench itself holds each
task's full question set (date_understanding 369, navigate 1,000, ...). Here each BIG-bench
question is rendered the way BBH renders it (the same preamble, ``Options:`` list and
answer labels), the questions that *are* lm-eval exemplars are dropped, and the prompt is
lm-eval's BBH few-shot prompt (direct ``fewshot`` or chain-of-thought ``cot_fewshot``):
description, the 3 exemplars, then ``Q: <question>\\nA:``. The demonstration prefix is
identical across a task's requests, so a llama.cpp server reuses its KV cache for it.

Option order: where BIG-bench lists the correct option first (date_understanding,
temporal_sequences, ruin_names, movie_recommendation, ...), options are shuffled with a
seed derived from the question text; where BBH keeps a fixed vocabulary
(geometric_shapes, colored objects, tracking_shuffled_objects) the BIG-bench order is kept.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..data import BenchItem, FewShotPrompt, Kind, extract_answer, load_bbh_prompts
from ._sdist import task_examples

__all__ = ["BBH_TASKS", "BBHQuestion", "bbh_questions", "bbh_task_items", "bbh_tasks"]

_LETTERS = "ABCDEFGHIJKLMNOPQR"


@dataclass(frozen=True)
class BBHQuestion:
    """One BIG-bench question rendered in BBH's format; ``gold`` like "(B)" or "Yes"."""

    task: str  # lm-eval's BBH short name
    index: int  # position in BIG-bench's task.json
    input: str
    gold: str


def _mc(
    stem: str,
    scores: dict[str, Any],
    *,
    shuffle: bool,
    key: str,
    strip_period: bool = False,
    last: str | None = None,
) -> tuple[str, str]:
    opts = list(scores)
    if shuffle:
        fixed = [o for o in opts if o == last]
        rest = [o for o in opts if o != last]
        random.Random(key).shuffle(rest)
        opts = rest + fixed
    correct = [o for o in opts if scores[o] == max(scores.values())]
    if len(correct) != 1:
        raise ValueError("not exactly one correct option")
    shown = [o.rstrip(".").strip() if strip_period else o.strip() for o in opts]
    lines = "\n".join(f"({_LETTERS[i]}) {o}" for i, o in enumerate(shown))
    return f"{stem}\nOptions:\n{lines}", f"({_LETTERS[opts.index(correct[0])]})"


def _yes_no(stem: str, scores: dict[str, Any], yes: str) -> tuple[str, str]:
    gold = "Yes" if scores[yes] == 1 else "No"
    return f"{stem}\nOptions:\n- Yes\n- No", gold


def _pair(text: str, pattern: str) -> tuple[str, str]:
    m = re.search(pattern, text)
    if not m:
        raise ValueError("unexpected input format")
    return m.group(1).strip(), m.group(2).strip()


def _render(task: str, ex: dict[str, Any]) -> tuple[str, str]:
    inp = str(ex["input"])
    scores = dict(ex.get("target_scores") or {})
    key = f"{task}:{inp}"
    if task == "causal_judgement":
        stem = "How would a typical person answer each of the following questions about causation?"
        return _yes_no(f"{stem}\n{inp.strip()}", scores, "Yes")
    if task == "navigate":
        stem = "If you follow these instructions, do you return to the starting point?"
        return _yes_no(f"{stem} {inp.strip()}", scores, "True")
    if task == "sports_understanding":
        gold = "yes" if scores["plausible"] == 1 else "no"
        return f'Is the following sentence plausible? "{inp.strip().rstrip(".")}."', gold
    if task == "hyperbaton":
        a, b = _pair(inp, r'\ba " (.+?) " b " (.+?) "')
        stem = "Which sentence has the correct adjective order:"
        return _mc(stem, {a: scores["a"], b: scores["b"]}, shuffle=False, key=key)
    if task == "snarks":
        a, b = _pair(inp, r"\(a\) (.+?) \(b\) (.+)$")
        stem = "Which statement is sarcastic?"
        return _mc(stem, {a: scores["(a)"], b: scores["(b)"]}, shuffle=False, key=key)
    if task == "disambiguation_qa":
        stem = (
            "In the following sentences, explain the antecedent of the pronoun (which thing the "
            f"pronoun refers to), or state that it is ambiguous.\nSentence: {inp.strip()}"
        )
        return _mc(stem, scores, shuffle=False, key=key)
    if task.startswith("logical_deduction"):
        n = {"three": "three", "five": "five", "seven": "seven"}[task.split("_")[2]]
        stem = (
            f"The following paragraphs each describe a set of {n} objects arranged in a fixed "
            f"order. The statements are logically consistent within each paragraph. {inp.strip()}"
        )
        return _mc(stem, scores, shuffle=False, key=key, strip_period=True)
    if task.startswith("tracking_shuffled_objects"):
        stem = re.sub(r"[ \t]*\n\s*\n[ \t]*", "\n", inp.strip())  # as BBH prints it
        return _mc(stem, scores, shuffle=False, key=key, strip_period=True)
    if task == "movie_recommendation":
        stem = f"Find a movie similar to {inp.strip().rstrip(':')}:"
        return _mc(stem, scores, shuffle=True, key=key)
    if task in ("geometric_shapes", "reasoning_about_colored_objects"):
        return _mc(inp.strip(), scores, shuffle=False, key=key)
    if task in ("date_understanding", "ruin_names", "temporal_sequences"):
        return _mc(inp.strip(), scores, shuffle=True, key=key)
    raise KeyError(task)


#: lm-eval BBH short name → BIG-bench task (``_sdist.TASK_FILES`` key).
BBH_TASKS: dict[str, str] = {
    "causal_judgement": "causal_judgment",
    "date_understanding": "date_understanding",
    "disambiguation_qa": "disambiguation_qa",
    "geometric_shapes": "geometric_shapes",
    "hyperbaton": "hyperbaton",
    "logical_deduction_three_objects": "logical_deduction_three_objects",
    "logical_deduction_five_objects": "logical_deduction_five_objects",
    "movie_recommendation": "movie_recommendation",
    "navigate": "navigate",
    "reasoning_about_colored_objects": "reasoning_about_colored_objects",
    "ruin_names": "ruin_names",
    "snarks": "snarks",
    "sports_understanding": "sports_understanding",
    "temporal_sequences": "temporal_sequences",
    "tracking_shuffled_objects_three_objects": "tracking_shuffled_objects_three_objects",
}


def bbh_tasks() -> list[str]:
    """The BBH tasks available with their BIG-bench question sets (lm-eval short names)."""
    return sorted(BBH_TASKS)


def _key(text: str) -> str:
    """A comparison key: the stem without spacing or punctuation, plus the options' letters as
    a multiset (BBH reorders options and splits some titles at commas: still the same key)."""
    stem, _, options = text.partition("\nOptions:")
    options = re.sub(r"\(([A-R])\)|^- ", "", options, flags=re.M)
    letters = "".join(sorted(re.sub(r"[^a-z0-9]+", "", options.lower())))
    return re.sub(r"[^a-z0-9]+", "", stem.lower()) + "|" + letters


def _prompt(task: str, cot: bool) -> FewShotPrompt:
    for p in load_bbh_prompts(cot):
        if re.sub(r"^bbh_(cot_)?fewshot_", "", p.task) == task:
            return p
    raise KeyError(f"lm-eval has no BBH prompt for {task!r}")


def _exemplar_input(rendered: str) -> str:
    m = re.match(r"Q: (.*)\nA:$", rendered, flags=re.S)
    return m.group(1) if m else rendered


def bbh_questions(task: str) -> list[BBHQuestion]:
    """Every BIG-bench question of ``task`` in BBH's format, minus lm-eval's exemplars."""
    if task not in BBH_TASKS:
        raise KeyError(f"{task!r} is not one of {bbh_tasks()}")
    exemplars = {_key(_exemplar_input(q)) for q, _ in _prompt(task, cot=False).exemplars}
    exemplars |= {_key(_exemplar_input(q)) for q, _ in _prompt(task, cot=True).exemplars}
    out: list[BBHQuestion] = []
    seen: set[str] = set()
    for i, ex in enumerate(task_examples(BBH_TASKS[task])):
        try:
            text, gold = _render(task, ex)
        except (ValueError, KeyError):  # a malformed BIG-bench example: skipped, not guessed
            continue
        k = _key(text)
        if k in exemplars or k in seen:
            continue
        seen.add(k)
        out.append(BBHQuestion(task, i, text, gold))
    return out


def bbh_task_items(
    task: str,
    *,
    cot: bool = False,
    n: int | None = None,
    seed: int = 0,
    prompt_hook: Callable[[FewShotPrompt], FewShotPrompt] | None = None,
) -> list[BenchItem]:
    """Items for one BBH task: lm-eval's few-shot prompt + ``n`` seeded BIG-bench questions.

    ``cot`` picks the chain-of-thought prompt (answers "... So the answer is (B).").
    Task names are ``bbh_<task>`` (direct) or ``bbh_cot_<task>``; kinds ``direct``/``cot``;
    gold is normalised like :func:`benchmarks.data.extract_answer` returns it.
    ``prompt_hook`` may rewrite the few-shot prompt (e.g. keep a subset of demonstrations).
    """
    p = _prompt(task, cot)
    if prompt_hook is not None:
        p = prompt_hook(p)
    qs = bbh_questions(task)
    rng = random.Random(f"bbh:{task}:{seed}")
    rng.shuffle(qs)  # prefix-stable: the first k questions do not depend on n
    if n is not None:
        qs = qs[:n]
    head, _ = p.render(range(len(p.exemplars)), 0)
    head = head[: len(head) - len(p.exemplars[0][0])]  # description + all demonstrations
    name = f"bbh_{'cot_' if cot else ''}{task}"
    kind: Kind = "cot" if cot else "direct"
    out = []
    for q in qs:
        question = f"Q: {q.input}\nA:"
        gold = extract_answer("direct", q.gold)
        assert gold is not None
        out.append(BenchItem(name, f"{name}#{q.index}", head + question, question, gold, kind))
    return out


def demonstrations(task: str, *, cot: bool = False) -> tuple[tuple[str, str], ...]:
    """lm-eval's rendered (question, answer) exemplars of ``task`` (for demonstration work)."""
    return _prompt(task, cot).exemplars


def split_questions(
    task: str, fractions: Sequence[float] = (0.5, 0.5), seed: int = 0
) -> list[list[BBHQuestion]]:
    """``task``'s questions in seeded disjoint parts (e.g. attribution vs evaluation)."""
    qs = bbh_questions(task)
    random.Random(f"bbh-split:{task}:{seed}").shuffle(qs)
    out, start = [], 0
    for f in fractions:
        end = start + round(f * len(qs))
        out.append(qs[start:end])
        start = end
    return out
