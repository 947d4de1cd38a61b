"""Offline training text for the token head, and the attribution teacher's cached labels.

Sources (all shipped with installed packages or the OS, nothing downloaded):

* ``fewshot`` — lm-eval's BBH chain-of-thought and plain few-shot prompts and the GSM8K CoT
  prompt: demonstrations chunked into passages; the question is the task's final
  demonstration's input (held out of the passages), as in a real few-shot prompt.
* ``pydoc`` — Python's ``pydoc_data.topics``: paragraphs chunked into passages; every other
  passage gets the topic's heading as its instruction, the rest have no question (the
  teacher's reference is then the passage itself).
* ``man`` — ``/usr/share/man/man1`` pages (roff stripped), the NAME line as instruction for
  every other passage; module docstrings of the standard library when there are no man pages.

Documents (a task, a topic, a man page) never straddle the train/held-out split.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = ["Passage", "build_passages", "teacher_labels"]

MIN_TOKENS, MAX_TOKENS = 60, 160
_ROFF_ESC = re.compile(r"\\f[BIRP]|\\f\(..|\\s[+-]?\d|\\\(..|\\\*\(..|\\[&|^%]")


@dataclass(frozen=True)
class Passage:
    doc: str  # document id ("source:name"): the unit of the train/held-out split
    source: str
    text: str
    question: str | None

    @property
    def key(self) -> str:
        blob = json.dumps([self.text, self.question]).encode()
        return hashlib.sha256(blob).hexdigest()[:20]


def _chunks(paragraphs: Iterable[str], count: Callable[[str], int]) -> list[str]:
    """Greedy: join paragraphs into passages of MIN..MAX tokens; long paragraphs cut by words."""
    out: list[str] = []
    cur: list[str] = []
    cur_n = 0
    for para in paragraphs:
        para = para.strip()
        if not para:
            continue
        n = count(para)
        if n > MAX_TOKENS:  # cut a long paragraph into word runs
            words = para.split()
            step = max(1, len(words) * MAX_TOKENS // (n + 1))
            pieces = [" ".join(words[i : i + step]) for i in range(0, len(words), step)]
        else:
            pieces = [para]
        for piece in pieces:
            m = count(piece)
            if cur and cur_n + m > MAX_TOKENS:
                if cur_n >= MIN_TOKENS:
                    out.append("\n\n".join(cur))
                cur, cur_n = [], 0
            cur.append(piece)
            cur_n += m
    if cur and cur_n >= MIN_TOKENS:
        out.append("\n\n".join(cur))
    return out


def _fewshot(count: Callable[[str], int]) -> list[Passage]:
    import lm_eval
    import yaml

    tasks = Path(lm_eval.__file__).parent / "tasks"
    files = sorted((tasks / "bbh" / "cot_fewshot").glob("*.yaml"))
    files += sorted((tasks / "bbh" / "fewshot").glob("*.yaml"))
    files += [tasks / "gsm8k" / "gsm8k-cot.yaml"]
    out: list[Passage] = []
    for f in files:
        if not f.is_file() or f.name.startswith("_"):
            continue
        try:
            spec = yaml.safe_load(f.read_text())
        except yaml.YAMLError:
            continue
        samples = ((spec or {}).get("fewshot_config") or {}).get("samples") or []
        if not isinstance(samples, list) or len(samples) < 2:
            continue
        demos = []
        for s in samples:
            q = s.get("input", s.get("question"))
            a = s.get("target", s.get("answer"))
            if isinstance(q, str) and isinstance(a, str):
                demos.append((q.strip(), a.strip()))
        if len(demos) < 2:
            continue
        final_q = demos[-1][0]
        paras = [f"Q: {q}\nA: {a}" for q, a in demos[:-1]]
        doc = f"fewshot:{f.parent.name}/{f.stem}"
        out += [Passage(doc, "fewshot", t, final_q) for t in _chunks(paras, count)]
    return out


def _pydoc(count: Callable[[str], int]) -> list[Passage]:
    from pydoc_data.topics import topics

    out: list[Passage] = []
    for name in sorted(topics):
        body = topics[name]
        lines = body.strip().splitlines()
        title = lines[0].strip() if lines else name
        paras = re.split(r"\n\s*\n", body)
        for i, t in enumerate(_chunks(paras[1:] if len(paras) > 1 else paras, count)):
            out.append(Passage(f"pydoc:{name}", "pydoc", t, title if i % 2 == 0 else None))
    return out


def _roff_text(raw: str) -> tuple[str, list[str]]:
    """(NAME line, paragraphs) of a man page, formatting stripped (crude but sufficient)."""
    paras: list[str] = []
    cur: list[str] = []
    name_line = ""
    section = ""
    for line in raw.splitlines():
        if line.startswith((".", "'")):
            macro, _, rest = line[1:].partition(" ")
            if macro in ("SH", "SS"):
                section = rest.strip('"').upper()
            if macro in ("SH", "SS", "PP", "P", "LP", "TP", "IP", "sp", "br") and cur:
                paras.append(" ".join(cur))
                cur = []
            if macro in ("B", "I", "BR", "IR", "RB", "RI", "BI", "IB") and rest:
                cur.append(_ROFF_ESC.sub("", rest.replace('"', "")))
            continue
        text = _ROFF_ESC.sub("", line).replace("\\-", "-").replace("\\e", "\\").strip()
        if text:
            cur.append(text)
            if section == "NAME" and not name_line:
                name_line = text
    if cur:
        paras.append(" ".join(cur))
    return name_line, paras


def _man(count: Callable[[str], int], pages: int, seed: int) -> list[Passage]:
    root = Path("/usr/share/man/man1")
    files = sorted(p for p in root.glob("*.1.gz") if 3_000 < p.stat().st_size < 30_000)
    out: list[Passage] = []
    if files:
        for f in random.Random(seed).sample(files, min(pages, len(files))):
            try:
                raw = gzip.decompress(f.read_bytes()).decode("utf-8", "replace")
            except (OSError, EOFError):
                continue
            name_line, paras = _roff_text(raw)
            for i, t in enumerate(_chunks(paras, count)):
                q = name_line if (i % 2 == 0 and name_line) else None
                out.append(Passage(f"man:{f.name}", "man", t, q))
        return out
    import importlib

    for mod_name in ("argparse", "json", "logging", "pathlib", "subprocess", "typing"):
        doc = importlib.import_module(mod_name).__doc__ or ""
        for i, t in enumerate(_chunks(re.split(r"\n\s*\n", doc), count)):
            out.append(Passage(f"man:{mod_name}", "man", t, mod_name if i % 2 == 0 else None))
    return out


def build_passages(
    count: Callable[[str], int], n: int, seed: int, heldout_share: float = 0.25
) -> tuple[list[Passage], list[Passage]]:
    """``(train, heldout)``: ``n`` passages, 40/35/25 % fewshot/pydoc/man, split by doc.

    A source with fewer passages than its share gives all it has (at ``n=480``: 113 few-shot,
    168 pydoc, 120 man passages).
    """
    pools = {
        "fewshot": _fewshot(count),
        "pydoc": _pydoc(count),
        "man": _man(count, pages=60, seed=seed),
    }
    shares = {"fewshot": 0.40, "pydoc": 0.35, "man": 0.25}
    rng = random.Random(seed)
    chosen: list[Passage] = []
    for src, pool in pools.items():
        # at most 3 passages per document so that many documents are seen
        by_doc: dict[str, list[Passage]] = {}
        for p in pool:
            by_doc.setdefault(p.doc, []).append(p)
        docs = sorted(by_doc)
        rng.shuffle(docs)
        picked = [p for d in docs for p in by_doc[d][:3]]
        chosen += picked[: round(n * shares[src])]

    def held(p: Passage) -> bool:
        h = int(hashlib.sha256(f"{seed}|{p.doc}".encode()).hexdigest()[:8], 16)
        return h / 0xFFFFFFFF < heldout_share

    return [p for p in chosen if not held(p)], [p for p in chosen if held(p)]


def teacher_labels(
    passages: list[Passage],
    score: Callable[[Passage], np.ndarray],
    cache_dir: Path,
    tag: str,
    log: Callable[[str], None] = print,
) -> list[np.ndarray]:
    """Per-passage unit (word) scores from ``score``, cached as one JSON file per passage."""
    folder = cache_dir / f"teacher-{tag}"
    folder.mkdir(parents=True, exist_ok=True)
    out: list[np.ndarray] = []
    done = 0
    for i, p in enumerate(passages):
        path = folder / f"{p.key}.json"
        if path.is_file():
            out.append(np.asarray(json.loads(path.read_text())["scores"], dtype=np.float64))
            continue
        s = score(p)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"passage": asdict(p), "scores": s.tolist()}))
        tmp.replace(path)
        out.append(s)
        done += 1
        if done % 10 == 0:
            log(f"teacher: {i + 1}/{len(passages)} passages")
    return out
