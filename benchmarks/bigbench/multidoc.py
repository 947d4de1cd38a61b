"""Multi-document QA over BIG-bench's ``disfl_qa`` (SQuAD 2.0 dev passages), split by article.

``disfl_qa`` holds 1,204 SQuAD passages with 8,000 disfluent questions ("What part the
composition of the Earth's biosphere ... no sorry the Earth's atmosphere?"), 5,893 of them
answerable. An item is a question, its gold passage and k distractor passages from *other*
articles of the same split, at a seeded gold position, sized to about 1k, 2k or 4k tokens
(tiktoken gpt-4o): the "lost in the middle" shape (Liu et al., TACL 2024) on which
LongLLMLingua, EXIT and Provence are measured.

**Split by article.** disfl_qa drops SQuAD's article titles, so the 35 articles of SQuAD 2.0
dev are recovered by clustering: each passage is seeded to a title by title keywords, then
TF-IDF nearest-centroid iterations settle the assignment (:func:`build_split`). Articles are
then split train 21 / dev 5 / test 9 by a seeded shuffle, and the result is written down in
``benchmarks/splits/disfl_qa.json`` (passage id → article → split). Every passage is in
exactly one split; a passage the clustering puts in a wrong article still stays in one split
only. Code that trains anything (the relevance model) reads :func:`train_passages`, which
refuses the test split; benchmark items for reports use ``split="test"``.

Text is SQuAD-tokenised ("Earth ' s", "( see Occurrence )", "1 . 5"); :func:`detokenize`
restores ordinary spacing for passages, questions and answers alike.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import os
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from promptsieve import ConfigError

from ..data import BenchItem
from ..stats import squad_normalize
from ._sdist import DIR_ENV, REQUIREMENT, _folder, source, task_examples

__all__ = [
    "QA",
    "SPLIT_FILE",
    "MultiDocItem",
    "Passage",
    "TrainPassage",
    "build_split",
    "data_read",
    "data_source",
    "detokenize",
    "multidoc_items",
    "passages",
    "split_path",
    "train_passages",
]

Split = Literal["train", "dev", "test"]
SPLIT_FILE = Path(__file__).resolve().parent.parent / "splits" / "disfl_qa.json"
#: Names another split file: for task files that are not the 1.0.0 sdist's (see
#: ``benchmarks.bigbench._sdist``), whose passages the committed split does not list.
SPLIT_ENV = "PROMPTSIEVE_BIGBENCH_SPLIT"
SIZES = (1000, 2000, 4000)

#: SQuAD 2.0 dev's 35 article titles and the keywords that seed the clustering.
ARTICLE_SEEDS: dict[str, str] = {
    "Normans": r"\bNorman",
    "Computational complexity theory": r"complexity|Turing machine",
    "Southern California": r"Southern California|Los Angeles|San Diego",
    "Sky (United Kingdom)": r"\bSky\b|BSkyB",
    "Victoria (Australia)": r"\bVictoria\b|Melbourne",
    "Huguenot": r"Huguenot",
    "Steam engine": r"steam",
    "Oxygen": r"oxygen|\bO2\b",
    "1973 oil crisis": r"oil|OPEC",
    "European Union law": r"European Union|\bEU\b|Treaty|Court of Justice",
    "Amazon rainforest": r"Amazon",
    "Ctenophora": r"ctenophore|Ctenophor",
    "Fresno, California": r"Fresno",
    "Packet switching": r"packet|network",
    "Black Death": r"Black Death|plague",
    "Geology": r"geolog|rock",
    "Pharmacy": r"pharmac",
    "Civil disobedience": r"civil disobedience",
    "Construction": r"construction",
    "Private school": r"private school",
    "Harvard University": r"Harvard",
    "Jacksonville, Florida": r"Jacksonville",
    "Economic inequality": r"inequality|income",
    "University of Chicago": r"University of Chicago|\bChicago\b",
    "Yuan dynasty": r"Yuan|Kublai|Mongol",
    "Immune system": r"immune",
    "Intergovernmental Panel on Climate Change": r"IPCC",
    "Prime number": r"\bprime",
    "Rhine": r"Rhine",
    "Scottish Parliament": r"Scottish Parliament|\bMSP",
    "Islamism": r"Islamis",
    "Imperialism": r"imperialis",
    "Warsaw": r"Warsaw",
    "French and Indian War": r"French and Indian War|Fort Duquesne|Braddock",
    "Force": r"\bforce",
}
SPLIT_SIZES = {"train": 21, "dev": 5, "test": 9}
SPLIT_SEED = 12


# -- text -----------------------------------------------------------------------------------


def detokenize(text: str) -> str:
    """Undo SQuAD-style tokenisation: ``"Earth ' s ( see Occurrence ) , 1 . 5"`` →
    ``"Earth's (see Occurrence), 1.5"``. Idempotent on ordinary text."""
    s = " ".join(text.split())
    s = re.sub(r"(\d) ([.,:]) (\d)", r"\1\2\3", s)  # 1 . 5, 2 , 000, 10 : 30
    s = re.sub(r"(\w) ' (s|t|re|ve|ll|d|m)\b", r"\1'\2", s)
    s = re.sub(r"(\w)s ' (?=\s|$)", r"\1s' ", s)
    s = re.sub(r"(\w) - (?=\w)", r"\1-", s)
    s = re.sub(r" ([,.;:?!%)\]}])", r"\1", s)
    s = re.sub(r"([(\[{$]) ", r"\1", s)
    # straight double quotes: pair them up, opening glued right, closing glued left
    out: list[str] = []
    for i, part in enumerate(s.split('"')):
        if i == 0:
            out.append(part)
        elif i % 2:  # opening
            out.append('"' + part.lstrip())
        else:
            out[-1] = out[-1].rstrip()
            out.append('"' + part)
    if s.count('"') % 2:  # unbalanced: leave the text as it was
        return s.strip()
    return "".join(out).strip()


def sentences(text: str) -> list[str]:
    """Sentences of a detokenised passage (sentencex, the project's segmenter dependency)."""
    try:
        from sentencex import segment
    except ImportError:  # pragma: no cover - sentencex is a core dependency
        return [p for p in re.split(r"(?<=[.!?])\s+(?=[A-Z\"(])", text) if p.strip()]
    return [s.strip() for s in segment("en", text) if s.strip()]


# -- passages and the split -----------------------------------------------------------------


@dataclass(frozen=True)
class QA:
    question: str  # detokenised, disfluent as in disfl_qa
    answer: str  # detokenised gold span


@dataclass(frozen=True)
class Passage:
    id: str  # sha256 of the raw (tokenised) passage text, 16 hex digits
    article: str
    split: Split
    text: str  # detokenised
    qas: tuple[QA, ...]  # the answerable questions on this passage


def _raw_passages() -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """id → (raw passage, [(raw question, raw answer)]) for every passage (answerable only)."""
    out: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    for ex in task_examples("disfl_qa"):
        question, _, context = str(ex["input"]).partition("\ncontext:")
        context = context.strip()
        pid = hashlib.sha256(context.encode("utf-8")).hexdigest()[:16]
        entry = out.setdefault(pid, (context, []))
        target = str(ex["target"])
        if target != "unknown":
            entry[1].append((question.strip(), target))
    return out


def build_split() -> dict[str, object]:
    """Recompute the article clustering and the split (what ``disfl_qa.json`` holds)."""
    raw = _raw_passages()
    ids = sorted(raw)
    texts = [raw[i][0] for i in ids]
    names = list(ARTICLE_SEEDS)
    docs = [re.findall(r"[a-z]{3,}", t.lower()) for t in texts]
    df: collections.Counter[str] = collections.Counter()
    for d in docs:
        df.update(set(d))
    vocab = {w: j for j, w in enumerate(sorted(w for w, c in df.items() if c >= 2))}
    x = np.zeros((len(docs), len(vocab)))
    for i, d in enumerate(docs):
        for w, c in collections.Counter(d).items():
            if w in vocab:
                x[i, vocab[w]] = (1 + np.log(c)) * np.log(len(docs) / df[w])
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-9
    hits = np.array(
        [
            [
                len(re.findall(p, t, flags=re.I if p.islower() else 0))
                for p in ARTICLE_SEEDS.values()
            ]
            for t in texts
        ]
    )
    label = np.where(hits.max(1) >= 2, hits.argmax(1), -1)
    for _ in range(50):
        cent = np.stack(
            [
                x[label == k].mean(0) if (label == k).any() else np.zeros(x.shape[1])
                for k in range(len(names))
            ]
        )
        cent /= np.linalg.norm(cent, axis=1, keepdims=True) + 1e-9
        new = (x @ cent.T).argmax(1)
        if (new == label).all():
            break
        label = new
    order = names[:]
    random.Random(SPLIT_SEED).shuffle(order)
    split_of: dict[str, str] = {}
    start = 0
    for split, n in SPLIT_SIZES.items():
        for name in order[start : start + n]:
            split_of[name] = split
        start += n
    return {
        "source": (
            f"disfl_qa/task.json of {source()}"
            if _folder()
            else "bigbench==1.0.0 benchmark_tasks/disfl_qa/task.json"
        ),
        "method": "articles: SQuAD 2.0 dev titles, keyword-seeded TF-IDF nearest-centroid "
        f"clustering; split: articles shuffled with seed {SPLIT_SEED}, {SPLIT_SIZES}",
        "articles": {name: split_of[name] for name in names},
        "passages": {pid: names[int(k)] for pid, k in zip(ids, label, strict=True)},
    }


def split_path() -> Path:
    """The split file in use: ``$PROMPTSIEVE_BIGBENCH_SPLIT`` if set, else the committed one."""
    return Path(os.environ[SPLIT_ENV]) if os.environ.get(SPLIT_ENV) else SPLIT_FILE


def data_source() -> dict[str, str]:
    """For a results file's ``meta``: ``bigbench_data`` (:func:`._sdist.source`, the verified
    sdist or an unverified folder) and, when it is not the committed one, ``bigbench_split``."""
    path = split_path()
    return {
        "bigbench_data": source(),
        **({} if path == SPLIT_FILE else {"bigbench_split": str(path)}),
    }


def data_read(meta: Mapping[str, object]) -> str:
    """What a run's ``meta`` (written with :func:`data_source`) says it read: ``"sdist"`` (the
    verified 1.0.0 sdist and the committed split; runs from before ``bigbench_data`` existed
    all read that) or the unverified source, with any other split."""
    data = str(meta.get("bigbench_data", "sdist"))
    split = meta.get("bigbench_split")
    verified = data == "sdist" or data.startswith(f"{REQUIREMENT} sdist")
    return ("sdist" if verified else data) + (f" with split {split}" if split else "")


_WRITE = (
    f"write one for them with: {DIR_ENV}=<their folder> {SPLIT_ENV}=<new file> "
    "python -m promptsieve_bench.bigbench.multidoc --write-split"
)


@functools.lru_cache(maxsize=2)
def _split_file(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        fix = "it is committed with the benchmarks" if path == SPLIT_FILE else _WRITE
        raise ConfigError(f"{path} is missing or damaged ({exc}); {fix}") from exc
    return dict(data)


def _all_passages() -> tuple[Passage, ...]:
    return _passages_of(split_path(), _folder())


@functools.lru_cache(maxsize=2)
def _passages_of(path: Path, folder: str | None) -> tuple[Passage, ...]:
    # keyed by the split file and the task files' source: changing either never serves
    # the other's passages
    split = _split_file(path)
    articles = dict(split["articles"])  # type: ignore[call-overload]
    of = dict(split["passages"])  # type: ignore[call-overload]
    raw = _raw_passages()
    # the same passages both ways: task files with other passages never pass as the
    # split's (item draws would change silently); their questions are not checked
    extra, missing = sorted(set(raw) - set(of)), sorted(set(of) - set(raw))
    if extra or missing:
        which = f"passage {extra[0]} is not in" if extra else f"passage {missing[0]} of"
        raise ConfigError(
            f"{which} {path}{'' if extra else ' is not in the task files'}: that split belongs "
            f"to other task files; {_WRITE}"
        )
    out = []
    for pid, (text, qas) in sorted(raw.items()):
        article = str(of[pid])
        out.append(
            Passage(
                pid,
                article,
                articles[article],
                detokenize(text),
                tuple(QA(detokenize(q), detokenize(a)) for q, a in qas),
            )
        )
    return tuple(out)


def passages(split: Split) -> list[Passage]:
    """Every passage of ``split`` (with its answerable questions), in id order."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"split must be one of {sorted(SPLIT_SIZES)}, not {split!r}")
    return [p for p in _all_passages() if p.split == split]


# -- training data (never test) -------------------------------------------------------------


@dataclass(frozen=True)
class TrainQuestion:
    question: str
    answer: str
    answer_sentence: int | None  # index into the passage's sentences; None: spans two


@dataclass(frozen=True)
class TrainPassage:
    id: str
    article: str
    split: Split
    sentences: tuple[str, ...]
    questions: tuple[TrainQuestion, ...]


def train_passages(split: Literal["train", "dev"] = "train") -> list[TrainPassage]:
    """Passages split into sentences, each question with its answer-bearing sentence marked.

    For training relevance models: only ``"train"`` and ``"dev"``; the test articles are
    refused (ValueError), so a trained model never sees a passage that reports use.
    """
    if split not in ("train", "dev"):
        raise ValueError("train_passages serves 'train' and 'dev' only; test articles are held out")
    out = []
    for p in passages(split):
        sents = tuple(sentences(p.text))
        qs = []
        for qa in p.qas:
            gold = squad_normalize(qa.answer)
            where = [i for i, s in enumerate(sents) if gold and gold in squad_normalize(s)]
            qs.append(TrainQuestion(qa.question, qa.answer, where[0] if where else None))
        out.append(TrainPassage(p.id, p.article, p.split, sents, tuple(qs)))
    return out


# -- benchmark items ------------------------------------------------------------------------

INSTRUCTION = (
    "Answer the question using only the documents above. Reply with the shortest phrase "
    "from the documents that answers it, and nothing else."
)


@dataclass(frozen=True)
class MultiDocItem:
    """A multi-document QA item before rendering: the documents in order, the gold's index."""

    id: str
    question: str
    answer: str
    docs: tuple[str, ...]
    doc_ids: tuple[str, ...]
    gold_index: int
    size: int

    def render(self, docs: Sequence[str] | None = None) -> BenchItem:
        """The BenchItem for the target: numbered documents, then the instruction + question.

        ``docs`` replaces the documents (a noise-floor edit such as a shuffled order).
        """
        shown = self.docs if docs is None else tuple(docs)
        context = "".join(f"Document [{i + 1}]\n{d}\n\n" for i, d in enumerate(shown))
        question = f"{INSTRUCTION}\n\nQuestion: {self.question}\nAnswer:"
        return BenchItem(
            f"multidoc_{self.size // 1000}k",
            self.id,
            context + question,
            question,
            self.answer,
            "qa",
            docs=shown,
        )


def _count(text: str) -> int:
    from promptsieve.tokens import count_tokens

    return count_tokens(text, "gpt-4o")


def multidoc_raw(
    split: Split = "test",
    size: int = 1000,
    n: int = 100,
    seed: int = 0,
    *,
    count: Callable[[str], int] | None = None,
) -> list[MultiDocItem]:
    """``n`` seeded items of about ``size`` tokens from ``split`` (see the module docstring).

    Questions are drawn without replacement; distractors come from other articles of the
    same split; the gold position is uniform over the slots. Deterministic in the arguments,
    and prefix-stable: the first k items are the same for every ``n >= k`` (so a larger run
    reuses a smaller run's cached calls).
    """
    count = count or _count
    pool = passages(split)
    qs = [(p, qa) for p in pool for qa in p.qas]
    rng = random.Random(f"disfl_qa:{split}:{size}:{seed}")
    if n > len(qs):
        raise ValueError(f"{split} has {len(qs)} answerable questions, fewer than n={n}")
    order = list(range(len(qs)))
    rng.shuffle(order)  # a prefix-stable draw: the first n items do not depend on n
    picks = order[:n]
    out = []
    for j, q_index in enumerate(picks):
        gold, qa = qs[q_index]
        others = [p for p in pool if p.article != gold.article]
        rng.shuffle(others)
        docs = [gold]
        total = count(gold.text) + 40
        for p in others:
            if total >= size:
                break
            docs.append(p)
            total += count(p.text) + 6
        distractors = docs[1:]
        pos = rng.randrange(len(docs))
        ordered = [*distractors[:pos], gold, *distractors[pos:]]
        out.append(
            MultiDocItem(
                id=f"multidoc_{size // 1000}k#{split}:{seed}:{j}",
                question=qa.question,
                answer=qa.answer,
                docs=tuple(p.text for p in ordered),
                doc_ids=tuple(p.id for p in ordered),
                gold_index=pos,
                size=size,
            )
        )
    return out


def multidoc_items(
    split: Split = "test", size: int = 1000, n: int = 100, seed: int = 0
) -> list[BenchItem]:
    """Rendered items (``BenchItem``, kind ``"qa"``, task ``multidoc_<size/1000>k``)."""
    return [m.render() for m in multidoc_raw(split, size, n, seed)]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m promptsieve_bench.bigbench.multidoc [--write-split]``: the article split of
    the task files in use (printed; written to :func:`split_path` with ``--write-split``).
    Returns the exit status (2 with one error line on bad input)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(description="disfl_qa article split")
    ap.add_argument(
        "--write-split", action="store_true", help=f"rewrite {SPLIT_FILE} (or ${SPLIT_ENV})"
    )
    args = ap.parse_args(argv)
    path = split_path()
    if args.write_split and os.environ.get(DIR_ENV) and path.resolve() == SPLIT_FILE.resolve():
        ap.error(
            f"${DIR_ENV} is set: name a new split file with ${SPLIT_ENV} (the committed split "
            "belongs to the bigbench 1.0.0 sdist's passages)"
        )
    try:
        data = build_split()
        if args.write_split:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        else:
            passages("test")  # the split in use against the task files in use
    except ConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"Error: cannot write {path} ({exc.strerror or exc})", file=sys.stderr)
        return 2
    counts = collections.Counter(dict(data["articles"])[a] for a in dict(data["passages"]).values())  # type: ignore[call-overload]
    print(f"passages per split: {dict(counts)}")
    print(f"split in use: {path} (it lists exactly these task files' passages)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
