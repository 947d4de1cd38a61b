"""Reading demonstrations and validation requests (JSONL), and labelling validation
requests with the target's own answers (agreement mode)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from promptsieve._demo_types import DemoFormat, Demonstration, ValidationExample
from promptsieve._errors import ConfigError

__all__ = ["label_with_target", "load_demonstrations", "load_validation"]


def _read_jsonl(path: Path, what: str) -> list[tuple[int, Any]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start})") from exc
    rows: list[tuple[int, Any]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((lineno, json.loads(line)))
        except ValueError as exc:  # JSONDecodeError, or an integer past Python's digit limit
            raise ConfigError(f"{path}:{lineno}: not a JSON object: {_json_problem(exc)}") from exc
    return rows


def _json_problem(exc: ValueError) -> str:
    """What ``json.loads`` disliked, without its advice to raise Python's digit limit."""
    if isinstance(exc, json.JSONDecodeError):
        return exc.msg
    return str(exc).split("; use sys.", 1)[0]


_INPUT_KEYS = ("input", "question", "query", "prompt", "x")
_OUTPUT_KEYS = ("output", "answer", "label", "target", "y")


def _field(obj: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    for k in keys:
        v = obj.get(k)
        if isinstance(v, str):
            return v
        if isinstance(v, (int, float, bool)) and not isinstance(v, bool):
            return str(v)
    return None


def load_demonstrations(path: Path | str) -> list[Demonstration]:
    """Demonstrations from a JSONL file: one object a line with an input (``input``,
    ``question``, ``query``, ``prompt`` or ``x``) and an output (``output``, ``answer``,
    ``label``, ``target`` or ``y``), both strings (numbers are accepted as text).

    Raises :class:`ConfigError` naming the file and line of the first bad row.
    """
    return _load_pairs(
        Path(path),
        "demonstrations",
        f"a demonstration needs an input ({'/'.join(_INPUT_KEYS)}) "
        f"and an output ({'/'.join(_OUTPUT_KEYS)}) string",
    )


def load_validation(path: Path | str) -> list[ValidationExample]:
    """Validation requests from JSONL, same keys as :func:`load_demonstrations`.

    Raises :class:`ConfigError` naming the line of a row without an input or answer.
    """
    rows = _load_pairs(
        Path(path),
        "validation",
        "a validation request needs an input and an answer string "
        "(gold, or the target's own answer for agreement)",
    )
    return [ValidationExample(d.input, d.output) for d in rows]


def _load_pairs(path: Path, what: str, need: str) -> list[Demonstration]:
    """(input, output) rows of a JSONL file; ``need`` says what a bad row lacks."""
    out: list[Demonstration] = []
    for lineno, obj in _read_jsonl(path, what):
        d = _demo_from(obj)
        if d is None:
            raise ConfigError(f"{path}:{lineno}: {need}")
        out.append(d)
    return out


def _demo_from(obj: Any) -> Demonstration | None:
    if not isinstance(obj, Mapping):
        return None
    x, y = _field(obj, _INPUT_KEYS), _field(obj, _OUTPUT_KEYS)
    if x is None or y is None:
        return None
    return Demonstration(x, y)


def label_with_target(
    demos: Sequence[Demonstration],
    inputs: Iterable[str],
    ask: Callable[[Any], str],
    fmt: DemoFormat | None = None,
) -> list[ValidationExample]:
    """Validation examples labelled by the target itself (agreement mode).

    ``ask(prompt) -> answer`` sends the full prompt (all demonstrations) to the target once
    per input; its answer, stripped, becomes the answer the proxy scores. ``prompt`` is the
    user message ``fmt.render(demos, input)`` (a ``str``), or, with ``fmt.pairs``, the
    OpenAI-style message list :meth:`DemoFormat.messages` to pass as ``messages=``.
    """
    fmt = fmt or DemoFormat()
    return [ValidationExample(x, ask(_prompt(fmt, demos, x)).strip()) for x in inputs]


def _prompt(fmt: DemoFormat, demos: Sequence[Demonstration], x: str) -> Any:
    return fmt.messages(demos, x) if fmt.pairs else fmt.render(demos, x)
