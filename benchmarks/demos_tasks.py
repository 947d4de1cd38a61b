"""Tasks for the demonstration benchmarks: BBH-style questions from BIG-bench's full sets.

Each task gives hundreds of (question, gold answer) pairs from its BIG-bench ``task.json`` (the
``bigbench==1.0.0`` sdist, verified by :mod:`benchmarks.bigbench._sdist`, or the task folder it
names), laid out the way BBH lays them out: multiple-choice options appended as ``Options:``
with letters, answers ``(A)``..; binary tasks answered with their label. A *draw* (seeded by
task and repeat) takes disjoint demonstrations, validation requests and test questions, so
every repeat has a different demonstration set and different test questions.
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import re
from dataclasses import dataclass
from typing import Any

from promptsieve.demos import DemoFormat, Demonstration, ValidationExample

__all__ = ["LAYOUTS", "TASKS", "Draw", "TaskSpec", "draw", "fmt_for", "items", "parse_answer"]


@dataclass(frozen=True)
class TaskSpec:
    """How one BIG-bench task becomes BBH-style questions."""

    name: str
    folder: str  # under bigbench/benchmark_tasks
    header: str
    labels: dict[str, str] | None = None  # binary: target_scores key -> answer word
    letters: bool = False  # multiple choice with (A).. options
    #: keep only the examples whose gold label is in ``labels`` (multiemo: positive and
    #: negative of its four sentiment classes, an SST-2-like binary task)
    subset: bool = False


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec(
            "sports_understanding", "sports_understanding",
            "Determine whether an artificially constructed sentence relating to sports is "
            "plausible or not. Answer Yes or No.\n\n",
            labels={"plausible": "Yes", "implausible": "No"},
        ),
        TaskSpec(
            "navigate", "navigate",
            "Given a series of navigation instructions, determine whether one would end up "
            "back at the starting point. Answer Yes or No.\n\n",
            labels={"True": "Yes", "False": "No"},
        ),
        TaskSpec(
            "causal_judgment", "causal_judgment",
            "Answer questions about causal attribution. Answer Yes or No.\n\n",
            labels={"Yes": "Yes", "No": "No"},
        ),
        TaskSpec(
            "snarks", "snarks",
            "Determine which of two sentences is sarcastic. Answer with the option letter.\n\n",
            letters=True,
        ),
        TaskSpec(
            "date_understanding", "date_understanding",
            "Infer the date from context. Answer with the option letter.\n\n",
            letters=True,
        ),
        TaskSpec(
            "logical_deduction_three_objects", "logical_deduction/three_objects",
            "A logical deduction task which requires deducing the order of a sequence of "
            "objects. Answer with the option letter.\n\n",
            letters=True,
        ),
        TaskSpec(
            "disambiguation_qa", "disambiguation_qa",
            "Clarify the meaning of sentences with ambiguous pronouns. Answer with the option "
            "letter.\n\n",
            letters=True,
        ),
        # not GSM8K: MathQA-derived word problems with 5 numeric options (BIG-bench
        # elementary_math_qa/question_only), the offline stand-in for GSM8K's arithmetic
        TaskSpec(
            "elementary_math_qa", "elementary_math_qa/question_only",
            "Solve the math word problem. Answer with the option letter.\n\n",
            letters=True,
        ),
        TaskSpec(
            "sentiment", "multiemo/all_sentence_en",
            "Classify the sentiment of the review sentence. Answer positive or negative.\n\n",
            labels={"positive": "positive", "negative": "negative"}, subset=True,
        ),
        TaskSpec(
            "fever", "fact_checker/fever",
            "Verify the claim. Answer true or false.\n\n",
            labels={"true": "true", "false": "false"},
        ),
        TaskSpec(
            "implicatures", "implicatures",
            "Does Speaker 2's answer mean yes or no? Answer yes or no.\n\n",
            labels={"yes": "yes", "no": "no"},
        ),
        TaskSpec(
            "metaphor_boolean", "metaphor_boolean",
            "Given a metaphoric sentence, identify if the second sentence is the correct "
            "paraphrase of the first. Answer True or False.\n\n",
            labels={"True": "True", "False": "False"},
        ),
        TaskSpec(
            "strategyqa", "strategyqa",
            "Answer the question. Answer Yes or No.\n\n",
            labels={"Yes": "Yes", "No": "No"},
        ),
        TaskSpec(
            "vitaminc_fact_verification", "vitaminc_fact_verification",
            "Based only on the passage, answer whether the claim is True, False or Neither.\n\n",
            labels={"True": "True", "False": "False", "Neither": "Neither"},
        ),
    )
}  # fmt: skip

#: The prompt layout the target and the proxies see (BBH's direct-answer layout).
FORMAT_TEMPLATE = {"demo": "Q: {input}\nA: {output}\n\n", "query": "Q: {input}\nA:"}


#: How demonstrations reach the target: ``turn``, all in one user message (BBH's layout);
#: ``turns``, one user/assistant message pair per demonstration before the question (how a
#: chat client sends few-shot examples, e.g. LangChain's ``FewShotChatMessagePromptTemplate``).
LAYOUTS = ("turn", "turns")


def fmt_for(spec: TaskSpec, layout: str = "turn") -> DemoFormat:
    """The layout of ``spec``'s prompts, with :data:`benchmarks.suites.CHAT_ANSWER_FORMAT`
    as the system prompt (without it the instruct target opens with a preamble and no answer
    is parsed: 0/40 on date_understanding).

    ``turn``: BBH's direct-answer layout as one chat user turn. ``turns``: the task's
    instruction ends the system message, and each demonstration is a user message (its
    input) answered by an assistant message (its label) (``DemoFormat(pairs=True)``).
    """
    from .suites import CHAT_ANSWER_FORMAT

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return DemoFormat(
        header=spec.header,
        chat=True,
        system=CHAT_ANSWER_FORMAT,
        pairs=layout == "turns",
        **FORMAT_TEMPLATE,
    )


def _examples(folder: str) -> list[dict[str, Any]]:
    from .bigbench._sdist import TASK_FILES, task_examples

    name = next(k for k, v in TASK_FILES.items() if v == folder)
    return [dict(e) for e in task_examples(name)]


def _scores(e: dict[str, Any]) -> dict[str, float]:
    ts = e["target_scores"]
    if isinstance(ts, str):
        ts = ast.literal_eval(ts)
    return {str(k): float(v) for k, v in ts.items()}


def items(spec: TaskSpec) -> list[tuple[str, str, tuple[str, ...]]]:
    """``(question, gold answer, answer choices)`` for every usable example, in file order."""
    out = []
    for e in _examples(spec.folder):
        scores = _scores(e)
        if sum(1 for v in scores.values() if v == 1) != 1:
            continue
        gold = max(scores, key=lambda k: scores[k])
        text = str(e["input"]).strip()
        if spec.labels is not None:
            if spec.subset:
                if gold not in spec.labels or not set(spec.labels) <= set(scores):
                    continue
            elif set(scores) != set(spec.labels):
                continue
            out.append((text, spec.labels[gold], tuple(spec.labels.values())))
        else:
            opts = list(scores)
            # BIG-bench often lists the right option first: shuffle, seeded by the question
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            random.Random(seed).shuffle(opts)
            letters = [f"({chr(65 + i)})" for i in range(len(opts))]
            q = (
                text
                + "\nOptions:\n"
                + "\n".join(f"{lt} {o}" for lt, o in zip(letters, opts, strict=True))
            )
            out.append((q, letters[opts.index(gold)], tuple(letters)))
    return out


@dataclass(frozen=True)
class Draw:
    task: str
    repeat: int
    demos: tuple[Demonstration, ...]
    validation: tuple[ValidationExample, ...]
    test: tuple[tuple[str, str], ...]  # (question, gold)
    choices: tuple[str, ...]


def draw(
    task: str, repeat: int, n_demos: int, n_val: int, n_test: int, *, max_chars: int = 700
) -> Draw:
    """Disjoint demonstrations / validation / test questions for one repeat (seeded).

    Questions longer than ``max_chars`` are skipped (CPU budget); the label balance of the
    demonstrations is whatever the draw gives.
    """
    spec = TASKS[task]
    pool = [it for it in items(spec) if len(it[0]) <= max_chars]
    seed = int(hashlib.sha256(f"{task}:{repeat}".encode()).hexdigest()[:8], 16)
    rng = random.Random(seed)
    rng.shuffle(pool)
    need = n_demos + n_val + n_test
    if len(pool) < need:
        raise ValueError(f"{task}: {len(pool)} usable questions, {need} needed")
    d = pool[:n_demos]
    v = pool[n_demos : n_demos + n_val]
    t = pool[n_demos + n_val : need]
    return Draw(
        task, repeat,
        tuple(Demonstration(q, a) for q, a, _ in d),
        tuple(ValidationExample(q, a) for q, a, _ in v),
        tuple((q, a) for q, a, _ in t),
        pool[0][2],
    )  # fmt: skip


def parse_answer(text: str, choices: tuple[str, ...]) -> str | None:
    """The first choice the reply states: a letter ``(B)`` / ``B`` or a label word."""
    t = text.strip()
    if choices and choices[0].startswith("("):
        m = re.search(r"\(([A-Z])\)", t) or re.match(r"^\s*([A-Z])\b", t)
        if m:
            cand = f"({m.group(1)})"
            return cand if cand in choices else None
        return None
    low = t.lower()
    first = None
    for c in choices:
        m = re.search(r"\b" + re.escape(c.lower()) + r"\b", low)
        if m and (first is None or m.start() < first[0]):
            first = (m.start(), c)
    return first[1] if first else None


def describe() -> str:
    return json.dumps({k: v.folder for k, v in TASKS.items()})
