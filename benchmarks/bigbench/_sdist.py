"""The ``bigbench==1.0.0`` sdist: fetched once, verified, and only the used task files extracted.

The sdist (≈ 360 MB on the package registry) carries every BIG-bench task's full example set
as ``bigbench/benchmark_tasks/<task>/task.json``. It is never pip-installed (that pulls heavy
dependencies) and never fetched at import time: :func:`task_examples` fetches it on first use
from the package index's JSON API (PEP 691; ``$PIP_INDEX_URL``, default PyPI) into
``<cache>/registry/bigbench-1.0.0/`` (or finds it under ``$PROMPTSIEVE_REGISTRY_DIR``),
checks its SHA-256, and extracts the task
files this benchmark reads into ``<cache>/bench/bigbench-1.0.0/``, with a manifest of their
hashes so that a damaged extracted file is noticed and extracted again.

Not ``pip download``: from pip 26.3 on it refuses this sdist while preparing its metadata
("Distributions from PyPI cannot declare direct URL dependencies", its ``bleurt`` requirement),
even with ``--no-deps``.

**Without the sdist.** Since 2026-12-05 the package index no longer lists
``bigbench-1.0.0.tar.gz`` (the simple page lists only 0.0.1; the JSON page of 1.0.0 answers
403), so only a cache or ``$PROMPTSIEVE_REGISTRY_DIR`` that already holds it has it.
``$PROMPTSIEVE_BIGBENCH_DIR`` names a folder of task folders instead, in the layout of the
BIG-bench repository's ``bigbench/benchmark_tasks`` (``<dir>/<task>/task.json``); those files
are read as they are, not checked against the 1.0.0 release (a warning says so); the
multi-document suites check that the committed split lists exactly their passages, or read
a split written for them (``benchmarks.bigbench.multidoc``'s ``$PROMPTSIEVE_BIGBENCH_SPLIT``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tarfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from promptsieve import ConfigError
from promptsieve._paths import cache_dir

__all__ = [
    "DIR_ENV",
    "SDIST_SHA256",
    "TASK_FILES",
    "sdist_path",
    "source",
    "task_examples",
    "task_json",
]

log = logging.getLogger(__name__)

REQUIREMENT = "bigbench==1.0.0"
SDIST_FILE = "bigbench-1.0.0.tar.gz"
SDIST_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
SDIST_SIZE = 358_249_635
_PREFIX = "bigbench-1.0.0/bigbench/benchmark_tasks/"
#: Names a folder of task folders read instead of the sdist (see the module docstring).
DIR_ENV = "PROMPTSIEVE_BIGBENCH_DIR"

#: Task name (as used here) → its folder under ``benchmark_tasks``.
TASK_FILES: dict[str, str] = {
    "disfl_qa": "disfl_qa",
    "vitaminc_fact_verification": "vitaminc_fact_verification",
    "causal_judgment": "causal_judgment",
    "date_understanding": "date_understanding",
    "disambiguation_qa": "disambiguation_qa",
    "geometric_shapes": "geometric_shapes",
    "hyperbaton": "hyperbaton",
    "logical_deduction_three_objects": "logical_deduction/three_objects",
    "logical_deduction_five_objects": "logical_deduction/five_objects",
    "movie_recommendation": "movie_recommendation",
    "navigate": "navigate",
    "reasoning_about_colored_objects": "reasoning_about_colored_objects",
    "ruin_names": "ruin_names",
    "snarks": "snarks",
    "sports_understanding": "sports_understanding",
    "temporal_sequences": "temporal_sequences",
    "tracking_shuffled_objects_three_objects": "tracking_shuffled_objects/three_objects",
    # MathQA-derived grade-school word problems (5 numeric options): the offline stand-in
    # for GSM8K in the demonstration benchmark (GSM8K's questions are not on the registry)
    "elementary_math_qa": "elementary_math_qa/question_only",
    # classification tasks for the poisoned-demonstration benchmark (#17 (b)): the paper
    # used SST; multiemo's English review sentences (positive/negative only) stand in for it
    "multiemo_sentence_en": "multiemo/all_sentence_en",
    "fever": "fact_checker/fever",
    "implicatures": "implicatures",
    "metaphor_boolean": "metaphor_boolean",
    "strategyqa": "strategyqa",
}


def _registry_dirs() -> list[Path]:
    env = os.environ.get("PROMPTSIEVE_REGISTRY_DIR", "")
    return [*(Path(d).expanduser() for d in env.split(os.pathsep) if d), _download_dir()]


def _download_dir() -> Path:
    return cache_dir() / "registry" / "bigbench-1.0.0"


def _extract_dir() -> Path:
    return cache_dir() / "bench" / "bigbench-1.0.0"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _find_sdist() -> Path | None:
    for root in _registry_dirs():
        if not root.is_dir():
            continue
        for d in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
            if (d / SDIST_FILE).is_file():
                return d / SDIST_FILE
    return None


def _index_url() -> str:
    return os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")


def _fetch() -> Path:
    """Download the sdist from the index named by its PEP 691 JSON page; the file only
    appears under its real name once all of it has arrived and its SHA-256 matches.

    Raises:
        OSError: the index or the file cannot be read.
        ValueError: the index does not list the file, or the bytes do not match.
    """
    page = f"{_index_url()}/bigbench/"
    req = urllib.request.Request(page, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        files = json.load(resp).get("files", [])
    entry = next((f for f in files if f.get("filename") == SDIST_FILE), None)
    if entry is None:
        raise ValueError(f"{page} does not list {SDIST_FILE}")
    dest = _download_dir() / SDIST_FILE
    part = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    url = urllib.parse.urljoin(page, entry["url"])
    with urllib.request.urlopen(url, timeout=60) as resp, part.open("wb") as out:
        while block := resp.read(1 << 22):
            h.update(block)
            out.write(block)
    if h.hexdigest() != SDIST_SHA256:
        part.unlink(missing_ok=True)
        raise ValueError(f"the downloaded {SDIST_FILE} does not match its pinned SHA-256")
    shutil.move(part, dest)
    return dest


def sdist_path(*, download: bool = True) -> Path:
    """The verified sdist; fetched from the package index when absent (see module docstring).

    Raises:
        ConfigError: it is missing and cannot be fetched, or its SHA-256 does not match
            (the message names the file to delete and where to fetch it from).
    """
    searched = ", ".join(f"{d}{'' if d.is_dir() else ' (missing)'}" for d in _registry_dirs())
    hint = (
        f"put {SDIST_FILE} ({SDIST_SIZE:,} bytes, SHA-256 {SDIST_SHA256}) in one of: "
        f"{searched} (the package index stopped listing it on 2026-12-05); or set ${DIR_ENV} "
        'to a folder of BIG-bench task folders, unverified (README: "The sdist is gone from '
        'the index")'
    )
    path = _find_sdist()
    if path is None:
        if not download:
            raise ConfigError(f"{SDIST_FILE} not found; {hint.replace(SDIST_FILE, 'it', 1)}")
        _download_dir().mkdir(parents=True, exist_ok=True)
        log.warning("%s is not here: fetching it (≈ 360 MB) into %s", REQUIREMENT, _download_dir())
        try:
            path = _fetch()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"could not fetch {REQUIREMENT} ({exc}); {hint}") from exc
    if path.stat().st_size != SDIST_SIZE or _sha256(path) != SDIST_SHA256:
        raise ConfigError(f"{path} is corrupt (sha256 mismatch); delete it and {hint}")
    return path


def _manifest() -> dict[str, str]:
    try:
        data = json.loads((_extract_dir() / "manifest.json").read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in data.items()}
    except (OSError, ValueError):
        return {}


def _extract_all() -> dict[str, str]:
    """Extract every task file in :data:`TASK_FILES` (one pass over the archive)."""
    src = sdist_path()
    out = _extract_dir()
    wanted = {_PREFIX + folder + "/task.json": name for name, folder in TASK_FILES.items()}
    manifest: dict[str, str] = {}
    log.warning("extracting %d BIG-bench task files from %s", len(wanted), src)
    with tarfile.open(src, "r:gz") as tar:
        for member in tar:
            name = wanted.get(member.name)
            if name is None or not member.isfile():
                continue
            fh = tar.extractfile(member)
            if fh is None:  # pragma: no cover - regular files always have data
                continue
            data = fh.read()
            dest = out / name / "task.json"
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_suffix(".partial")
            tmp.write_bytes(data)
            os.replace(tmp, dest)
            manifest[name] = hashlib.sha256(data).hexdigest()
    missing = sorted(set(wanted.values()) - set(manifest))
    if missing:
        raise ConfigError(f"{src} lacks the task files of {missing}; is it bigbench 1.0.0?")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


@functools.cache
def _unverified(folder: str) -> None:
    log.warning(
        "BIG-bench task files from $%s=%s: not checked against bigbench 1.0.0", DIR_ENV, folder
    )


def _folder() -> str | None:
    return os.environ.get(DIR_ENV) or None


def source() -> str:
    """Where the task files come from, for a results file's metadata: the verified sdist
    (``"bigbench==1.0.0 sdist, sha256 <hex>"``) or ``"unverified folder <path>"``."""
    folder = _folder()
    return (
        f"unverified folder {folder}" if folder else f"{REQUIREMENT} sdist, sha256 {SDIST_SHA256}"
    )


def task_json(task: str) -> Path:
    """Path of ``task``'s ``task.json``: from ``$PROMPTSIEVE_BIGBENCH_DIR`` when set, else
    extracted from the sdist on first use and hash-checked.

    Raises:
        ConfigError: an unknown task; the folder lacks the task's file; the sdist is missing
            or corrupt.
    """
    if task not in TASK_FILES:
        raise ConfigError(f"unknown BIG-bench task {task!r}; known: {sorted(TASK_FILES)}")
    if folder := _folder():
        path = Path(folder).expanduser() / TASK_FILES[task] / "task.json"
        if not path.is_file():
            raise ConfigError(f"${DIR_ENV}={folder} has no {TASK_FILES[task]}/task.json")
        _unverified(folder)
        return path
    path = _extract_dir() / task / "task.json"
    manifest = _manifest()
    if task not in manifest or not path.is_file() or _sha256(path) != manifest[task]:
        manifest = _extract_all()
    return path


def _read(task: str) -> dict[str, Any]:
    path = task_json(task)
    fix = "fix or replace it" if _folder() else f"delete {_extract_dir()} to re-extract"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); {fix}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
        raise ConfigError(f"{path} is not a BIG-bench task (no examples list); {fix}")
    if not data["examples"]:
        raise ConfigError(f"{path} has no examples; {fix}")
    return data


@functools.cache
def _load(task: str, folder: str | None) -> tuple[dict[str, Any], ...]:
    # keyed by the source as well: a process that changes $PROMPTSIEVE_BIGBENCH_DIR never
    # gets the other source's examples
    return tuple(_read(task)["examples"])


def task_meta(task: str) -> dict[str, Any]:
    """The task.json's top-level fields other than ``examples`` (prefixes, metrics)."""
    return {k: v for k, v in _read(task).items() if k != "examples"}


def task_examples(task: str) -> tuple[dict[str, Any], ...]:
    """All of ``task``'s BIG-bench examples, in file order (dicts as in task.json).

    Raises:
        ConfigError: see :func:`task_json`; or the file is not a BIG-bench task's JSON.
    """
    return _load(task, _folder())
