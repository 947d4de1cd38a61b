"""A BIG-bench-shaped task folder, written by the tests, for machines without the real data.

The ``bigbench==1.0.0`` sdist is no longer listed on the package index (2026-12-05: its simple
page lists only 0.0.1, and its JSON page for 1.0.0 answers 403), so a machine whose cache
does not already hold it has no BIG-bench data. The benchmark then reads task files from
``$PROMPTSIEVE_BIGBENCH_DIR`` (the layout of the BIG-bench repository's
``bigbench/benchmark_tasks``) and the multi-document split from ``$PROMPTSIEVE_BIGBENCH_SPLIT``.
:func:`write_fixture` writes such a folder with synthetic examples in each task's real schema
(``input`` and ``target`` / ``target_scores``; disfl_qa's ``question\\ncontext: passage``;
vitaminc's ``evidence\\nClaim: claim``; BBH inputs in the shapes its renderers parse), so the
loaders, the split, the item builders and the whole ``quick`` profile run for real on it.
Tests that state facts about the real data (its sizes, the committed split, committed
figures) need the real sdist and skip without it.
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import Any

__all__ = ["write_fixture"]

_N = 72  # examples per BBH-style task: above the profiles' 60 requests


def _word(rng: random.Random) -> str:
    return "".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(3))


def _keyword(pattern: str) -> str:
    """A phrase that the article's seed pattern matches (its first alternative)."""
    return pattern.split("|")[0].replace(r"\b", "")


def _disfl_qa(rng: random.Random) -> dict[str, Any]:
    from benchmarks.bigbench.multidoc import ARTICLE_SEEDS

    examples: list[dict[str, str]] = []
    year = 1500
    for pattern in ARTICLE_SEEDS.values():
        key = _keyword(pattern)
        vocab = [_word(rng) for _ in range(60)]
        for _ in range(10):  # 90 test passages, 630 questions: the 600 a registration draws
            sents, facts = [], []
            for _ in range(7):
                year += 1
                words = rng.sample(vocab, 9)
                sents.append(f"The {key} {' '.join(words[:5])} in {year} , {' '.join(words[5:])} .")
                facts.append((words[0], words[1], str(year)))
            passage = " ".join(sents)
            for w0, w1, when in facts:
                q = f"When did the {key} {w0} uh I mean {w1} ?"
                examples.append({"input": f"{q}\ncontext: {passage}", "target": when})
            examples.append(
                {"input": f"Why was the {key} blue ?\ncontext: {passage}", "target": "unknown"}
            )
    return {"name": "disfl_qa", "examples": examples}


def _binary(rng: random.Random, yes: str, no: str, make: Any) -> list[dict[str, Any]]:
    out = []
    for i in range(_N):
        gold = rng.random() < 0.5
        out.append({"input": make(i), "target_scores": {yes: int(gold), no: int(not gold)}})
    return out


def _choice(rng: random.Random, n_opts: int, make: Any, opts: Any = None) -> list[dict[str, Any]]:
    out = []
    for i in range(_N):
        options = opts(i) if opts else [f"{_word(rng)} {_word(rng)}" for _ in range(n_opts)]
        gold = rng.randrange(len(options))
        scores = {o: int(j == gold) for j, o in enumerate(options)}
        out.append({"input": make(i), "target_scores": scores})
    return out


def _tasks(rng: random.Random) -> dict[str, dict[str, Any]]:
    w = lambda: _word(rng)  # noqa: E731
    story = lambda i: f"{w().title()} {w()} the {w()} on day {i}. Did {w()} cause the {w()}?"  # noqa: E731
    tasks: dict[str, list[dict[str, Any]]] = {
        "causal_judgment": _binary(rng, "Yes", "No", story),
        "navigate": _binary(rng, "True", "False", lambda i: f"Take {i} steps. Turn left."),
        "sports_understanding": _binary(
            rng, "plausible", "implausible", lambda i: f"{w().title()} {w()} scored {i} goals."
        ),
        "hyperbaton": _binary(
            rng, "a", "b", lambda i: f'a " {w()} old {i} car " b " old {w()} {i} car "'
        ),
        "snarks": _binary(rng, "(a)", "(b)", lambda i: f"(a) {w()} is {i} great (b) {w()} is fine"),
        "fever": _binary(rng, "true", "false", lambda i: f"{w().title()} was born in {1800 + i}."),
        "implicatures": _binary(rng, "yes", "no", lambda i: f"A: {w()} {i}? B: no."),
        "metaphor_boolean": _binary(
            rng, "True", "False", lambda i: f"The {w()} is a {w()} <--> The {w()} is {i} {w()}."
        ),
        "strategyqa": _binary(rng, "Yes", "No", lambda i: f"Could a {w()} lift {i} {w()}?"),
        "multiemo_sentence_en": _choice(
            rng, 4, lambda i: f"The {w()} hotel was {w()} on night {i}.",
            lambda i: ["positive", "negative", "neutral", "ambivalent"],
        ),
        "elementary_math_qa": _choice(
            rng, 5, lambda i: f"A {w()} costs {i} dollars; what do 3 cost?",
            lambda i: [str(3 * i + k) for k in range(5)],
        ),
    }  # fmt: skip
    for name in (
        "disambiguation_qa", "geometric_shapes", "logical_deduction_three_objects",
        "logical_deduction_five_objects", "movie_recommendation", "reasoning_about_colored_objects",
        "ruin_names", "temporal_sequences", "tracking_shuffled_objects_three_objects",
        "date_understanding",
    ):  # fmt: skip
        n_opts = 5 if "five" in name else 3 if "three" in name else 4
        tasks[name] = _choice(rng, n_opts, lambda i: f"The {w()} {w()} the {w()} at {i}.")
    vitaminc = []
    for i in range(_N):
        gold = ("True", "False", "Neither")[i % 3]
        vitaminc.append(
            {
                "input": f"The {w()} of {w()} had {i} {w()} .\nClaim: It had {i} {w()} .",
                "target_scores": {k: int(k == gold) for k in ("True", "False", "Neither")},
            }
        )
    # lm-eval's exemplars are in BIG-bench's own sets: the questions must leave them out
    from benchmarks.bigbench.bbh import demonstrations

    for q, a in demonstrations("sports_understanding"):
        said = re.search(r'"(.*)"', q)
        assert said is not None
        gold = {"plausible": int(a == "yes"), "implausible": int(a != "yes")}
        tasks["sports_understanding"].append({"input": said.group(1), "target_scores": gold})
    out = {name: {"name": name, "examples": ex} for name, ex in tasks.items()}
    out["vitaminc_fact_verification"] = {
        "name": "vitaminc_fact_verification",
        "task_prefix": "Decide whether the passage supports the claim.\n\n",
        "examples": vitaminc,
    }
    return out


def write_fixture(root: Path) -> None:
    """Write every task of ``benchmarks.bigbench._sdist.TASK_FILES`` under ``root/tasks``
    (seeded: the same bytes every time), point ``$PROMPTSIEVE_BIGBENCH_DIR`` at it, write the
    split that ``benchmarks.bigbench.multidoc`` computes for its passages to
    ``root/disfl_qa.json`` and point ``$PROMPTSIEVE_BIGBENCH_SPLIT`` at that (``os.environ``:
    subprocesses see both).
    """
    from benchmarks.bigbench import _sdist, multidoc

    rng = random.Random(0)
    data = {"disfl_qa": _disfl_qa(rng), **_tasks(rng)}
    tasks = root / "tasks"
    for name, folder in _sdist.TASK_FILES.items():
        path = tasks / folder / "task.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data[name]), encoding="utf-8")
    os.environ[_sdist.DIR_ENV] = str(tasks)
    os.environ[multidoc.SPLIT_ENV] = str(root / "disfl_qa.json")
    multidoc.main(["--write-split"])
