"""Benchmark items built from real prompts that installed packages ship.

* BBH chain-of-thought 3-shot prompts (27 tasks) and BBH direct-answer 3-shot prompts, and
  the GSM8K 8-shot chain-of-thought prompt, all read from the installed ``lm-eval`` task
  files and formatted the way lm-eval formats them (description, exemplars joined by the
  few-shot delimiter, then the query).
* Needle-in-a-haystack retrieval (RULER style) over real long text that ships with Python
  (``pydoc_data.topics`` and standard-library docstrings): several needles, paraphrased
  questions, seeded.

An lm-eval item is made from the k real exemplars of a prompt: k−1 stay as demonstrations
and the held-out exemplar's question is asked, with its own target as gold. Rotating the
held-out exemplar gives k items per prompt. No test split is downloaded.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "BenchItem",
    "FewShotPrompt",
    "Kind",
    "NeedleConfig",
    "answers_agree",
    "bbh_items",
    "extract_answer",
    "gsm8k_items",
    "lm_eval_tasks_dir",
    "load_bbh_prompts",
    "load_gsm8k_prompt",
    "needle_items",
    "normalize_answer",
]

Kind = Literal["cot", "direct", "gsm8k", "needle", "qa"]


@dataclass(frozen=True)
class BenchItem:
    """One prompt for the target: ``prompt`` ends with ``question``, which is never compressed.

    ``task`` groups items for per-task screening; ``gold`` is the reference answer in the
    form :func:`extract_answer` returns for ``kind``.
    """

    task: str
    id: str
    prompt: str
    question: str
    gold: str
    kind: Kind
    docs: tuple[str, ...] = ()  # multi-document items: the documents, in prompt order

    def __post_init__(self) -> None:
        if not self.prompt.endswith(self.question):
            raise ValueError(f"{self.id}: prompt must end with its question")

    @property
    def context(self) -> str:
        """The compressible part: everything before the question."""
        return self.prompt[: len(self.prompt) - len(self.question)]


@dataclass(frozen=True)
class FewShotPrompt:
    """An lm-eval few-shot prompt: its rendered parts, before items are built from it."""

    task: str
    description: str
    exemplars: tuple[tuple[str, str], ...]  # (rendered question, rendered target)
    target_delimiter: str
    fewshot_delimiter: str
    until: tuple[str, ...]
    kind: Kind

    def render(self, demos: Sequence[int], query: int) -> tuple[str, str]:
        """(prompt, question) with ``demos`` as demonstrations and exemplar ``query`` asked.

        Mirrors lm-eval's plain-text ``fewshot_context``: the description, then each demo as
        question + target delimiter + target + few-shot delimiter, then the query question.
        """
        parts = [self.description]
        for i in demos:
            q, a = self.exemplars[i]
            parts.append(q + self.target_delimiter + a + self.fewshot_delimiter)
        question = self.exemplars[query][0]
        return "".join(parts) + question, question


# -- lm-eval task files ---------------------------------------------------------------------


def lm_eval_tasks_dir() -> Path:
    """The ``tasks`` folder of the installed lm-eval package."""
    try:
        import lm_eval
    except ImportError as exc:  # pragma: no cover - the bench extra installs it
        raise RuntimeError("benchmarks need lm-eval: pip install 'promptsieve[bench]'") from exc
    return Path(lm_eval.__file__).parent / "tasks"


def _load_yaml(path: Path) -> dict[str, Any]:
    """Load a task YAML with its ``include`` chain (local keys win), like lm-eval does."""

    class _Loader(yaml.SafeLoader):
        pass

    # Task files may tag Python callables with !function; none of the prompts we read need them.
    _Loader.add_constructor("!function", lambda loader, node: None)
    with path.open(encoding="utf-8") as fh:
        cfg = yaml.load(fh, Loader=_Loader)
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a mapping")
    include = cfg.pop("include", None)
    if include is None:
        return cfg
    merged: dict[str, Any] = {}
    for inc in include if isinstance(include, list) else [include]:
        merged.update(_load_yaml(path.parent / inc))
    merged.update(cfg)
    return merged


def _render(template: str, doc: dict[str, Any]) -> str:
    try:
        from lm_eval.utils import apply_template
    except ImportError:  # pragma: no cover - older/newer layouts: same Jinja settings
        import jinja2

        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
        return env.from_string(template).render(**doc)
    return str(apply_template(template, doc))


def _fewshot_prompt(path: Path, kind: Kind) -> FewShotPrompt:
    cfg = _load_yaml(path)
    fs = cfg.get("fewshot_config") or {}
    samples = fs.get("samples")
    if not isinstance(samples, list) or not samples:
        raise ValueError(f"{path}: no fewshot_config.samples")
    text_tpl = fs.get("doc_to_text") or cfg["doc_to_text"]
    target_tpl = fs.get("doc_to_target") or cfg["doc_to_target"]
    exemplars = tuple((_render(text_tpl, s), _render(target_tpl, s)) for s in samples)
    tgt_delim = fs.get("target_delimiter", cfg.get("target_delimiter", " "))
    few_delim = fs.get("fewshot_delimiter", cfg.get("fewshot_delimiter", "\n\n"))
    until = tuple(cfg.get("generation_kwargs", {}).get("until", [few_delim]))
    return FewShotPrompt(
        task=str(cfg.get("task", path.stem)),
        description=str(cfg.get("description") or ""),
        exemplars=exemplars,
        target_delimiter=str(tgt_delim),
        fewshot_delimiter=str(few_delim),
        until=until,
        kind=kind,
    )


@functools.lru_cache(maxsize=2)
def load_bbh_prompts(cot: bool = True) -> tuple[FewShotPrompt, ...]:
    """The 27 BBH few-shot prompts: chain-of-thought (``cot_fewshot``) or direct (``fewshot``)."""
    folder = lm_eval_tasks_dir() / "bbh" / ("cot_fewshot" if cot else "fewshot")
    paths = sorted(p for p in folder.glob("*.yaml") if not p.name.startswith("_"))
    return tuple(_fewshot_prompt(p, "cot" if cot else "direct") for p in paths)


@functools.lru_cache(maxsize=1)
def load_gsm8k_prompt() -> FewShotPrompt:
    """The GSM8K 8-shot chain-of-thought prompt (``gsm8k-cot.yaml``)."""
    return _fewshot_prompt(lm_eval_tasks_dir() / "gsm8k" / "gsm8k-cot.yaml", "gsm8k")


def _rotated_items(p: FewShotPrompt, limit: int | None) -> Iterator[BenchItem]:
    k = len(p.exemplars)
    for held in range(k if limit is None else min(k, limit)):
        demos = [i for i in range(k) if i != held]
        prompt, question = p.render(demos, held)
        gold = extract_answer(p.kind, p.exemplars[held][1])
        if gold is None:
            raise ValueError(f"{p.task}: no answer in exemplar {held}'s target")
        yield BenchItem(p.task, f"{p.task}#{held}", prompt, question, gold, p.kind)


def bbh_items(
    *, cot: bool = True, tasks: Sequence[str] | None = None, per_task: int | None = None
) -> list[BenchItem]:
    """Items from BBH prompts; ``tasks`` filters by short name (e.g. ``"navigate"``)."""
    out: list[BenchItem] = []
    for p in load_bbh_prompts(cot):
        if tasks is not None and _short_name(p.task) not in tasks:
            continue
        out.extend(_rotated_items(p, per_task))
    return out


def gsm8k_items(limit: int | None = None) -> list[BenchItem]:
    """Items from the GSM8K 8-shot prompt (7 demonstrations + one held-out question each)."""
    return list(_rotated_items(load_gsm8k_prompt(), limit))


def _short_name(task: str) -> str:
    return re.sub(r"^bbh_(cot_)?fewshot_", "", task)


# -- answer extraction ----------------------------------------------------------------------

_COT_RE = re.compile(r"(?<=the answer is )(.*)(?=.)")  # lm-eval's bbh cot "get-answer" filter
_GSM_STRICT = re.compile(r"The answer is (\-?[0-9\.\,]+).")  # lm-eval's gsm8k strict-match
_GSM_FLEX = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")  # lm-eval's flexible-extract
_CHOICE_RE = re.compile(r"\([A-R]\)")
_NEEDLE_RE = re.compile(r"\d{5,}")


def extract_answer(kind: Kind, text: str) -> str | None:
    """The final answer in ``text`` for ``kind``, normalised; None when there is none.

    Chain-of-thought uses lm-eval's "the answer is X." regex, GSM8K its strict
    "The answer is N." then its flexible last-number match, direct answers the first line,
    needles the first long number.
    """
    if kind == "cot":
        m = _COT_RE.search(text)
        if m:
            return normalize_answer(m.group(1))
        return None
    if kind == "gsm8k":
        m = _GSM_STRICT.search(text)
        if m:
            return _number(m.group(1))
        flex = [g for tup in _GSM_FLEX.findall(text) for g in tup if g]
        nums = [n for n in (_number(f) for f in flex) if n]
        return nums[-1] if nums else None
    if kind == "direct":
        line = text.strip().split("\n", 1)[0]
        m = _CHOICE_RE.match(line.strip())
        return normalize_answer(m.group(0) if m else line) or None
    if kind == "needle":
        m = _NEEDLE_RE.search(text)
        return m.group(0) if m else None
    raise ValueError(f"unknown kind {kind!r}")


def normalize_answer(s: str) -> str:
    """Whitespace collapsed, a trailing period dropped, lower case."""
    s = " ".join(s.split()).rstrip(".").strip()
    return s.lower()


def _number(s: str) -> str:
    s = s.replace(",", "").replace("$", "").rstrip(".")
    try:
        f = float(s)
    except ValueError:
        return ""
    return str(int(f)) if f == int(f) else str(f)


def answers_agree(a: str | None, b: str | None) -> bool:
    """Agreement on extracted answers; two missing answers do not count as agreement."""
    return a is not None and a == b


# -- needle in a haystack -------------------------------------------------------------------

_NEEDLE_KEYS = (
    "amber", "basalt", "cobalt", "delta", "ember", "falcon", "granite", "harbor", "indigo",
    "juniper", "kestrel", "lagoon", "meadow", "nectar", "orchid", "pebble", "quartz", "raven",
    "saffron", "tundra", "umber", "violet", "willow", "zephyr",
)  # fmt: skip
_QUESTIONS = (
    "What is the special magic number for {key} mentioned in the provided text?",
    "Which number does the text give as the special magic number for {key}?",
    "According to the document above, what special magic number belongs to {key}?",
    "Recall the special magic number that was stated for {key}. What is it?",
)
_INTRO = (
    "Some special magic numbers are hidden within the following text. Make sure to memorize "
    "them. I will quiz you about the numbers afterwards.\n\n"
)
_DOC_MODULES = (
    "argparse", "asyncio", "collections", "csv", "datetime", "decimal", "functools", "heapq",
    "json", "logging", "pathlib", "pickle", "re", "sqlite3", "string", "subprocess", "textwrap",
    "threading", "typing", "unittest", "zipfile",
)  # fmt: skip


@functools.lru_cache(maxsize=1)
def _prose_paragraphs() -> tuple[str, ...]:
    """Prose paragraphs of Python's pydoc topics and stdlib docstrings (no code, no rules)."""
    import importlib
    from pydoc_data.topics import topics

    texts = [topics[k] for k in sorted(topics)]
    for name in _DOC_MODULES:
        try:
            doc = importlib.import_module(name).__doc__
        except ImportError:  # pragma: no cover - stdlib
            continue
        if doc:
            texts.append(doc)
    paras: list[str] = []
    for text in texts:
        for para in re.split(r"\n\s*\n", text):
            lines = para.split("\n")
            if any(ln.startswith((" ", "\t")) for ln in lines):  # code, grammar, tables
                continue
            if re.fullmatch(r"[*=\-~^ ]+", lines[-1]) or len(para) < 80:  # headings
                continue
            paras.append(" ".join(ln.strip() for ln in lines))
    return tuple(paras)


@dataclass(frozen=True)
class NeedleConfig:
    """Shape of the retrieval items; sizes are haystack tokens (tiktoken o200k)."""

    sizes: tuple[int, ...] = (2000, 4000, 7000)
    per_size: int = 4
    needles: int = 4
    seed: int = 0


def needle_items(
    config: NeedleConfig | None = None, *, count: Callable[[str], int] | None = None
) -> list[BenchItem]:
    """Seeded RULER-style multi-key needle items over real text; the question asks for one key.

    Each item hides ``needles`` "special magic number" facts at random paragraph boundaries
    of a haystack cut from a random point of the pydoc/docstring corpus, then asks one of
    them with a paraphrased question. Task names are ``niah_<size>``.
    """
    cfg = config or NeedleConfig()
    count = count or _default_count
    paras = _prose_paragraphs()
    out: list[BenchItem] = []
    for size in cfg.sizes:
        for j in range(cfg.per_size):
            rng = random.Random(f"{cfg.seed}:{size}:{j}")
            hay = _haystack(paras, size, rng, count)
            keys = rng.sample(_NEEDLE_KEYS, cfg.needles)
            values = [str(rng.randrange(1_000_000, 10_000_000)) for _ in keys]
            slots = sorted(rng.sample(range(len(hay) + 1), cfg.needles))
            needles = zip(keys, values, slots, strict=True)
            for key, value, slot in reversed(list(needles)):  # back to front: slots stay valid
                hay.insert(slot, f"One of the special magic numbers for {key} is: {value}.")
            ask = rng.randrange(cfg.needles)
            q = rng.choice(_QUESTIONS).format(key=keys[ask])
            question = (
                f"\n\nQuestion: {q}\nAnswer: The special magic number for {keys[ask]} "
                "mentioned in the provided text is"
            )
            prompt = _INTRO + "\n\n".join(hay) + question
            task = f"niah_{size / 1000:g}k"
            out.append(BenchItem(task, f"{task}#{j}", prompt, question, values[ask], "needle"))
    return out


def _haystack(
    paras: Sequence[str], size: int, rng: random.Random, count: Callable[[str], int]
) -> list[str]:
    start = rng.randrange(len(paras))
    hay: list[str] = []
    total = 0
    i = start
    while total < size:
        p = paras[i % len(paras)]
        hay.append(p)
        total += count(p) + 1
        i += 1
    return hay


def _default_count(text: str) -> int:
    from promptsieve.tokens import count_tokens

    return count_tokens(text, "gpt-4o")
