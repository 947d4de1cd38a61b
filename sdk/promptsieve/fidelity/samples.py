"""Samples for offline screening: JSONL files of OpenAI request bodies, optionally labelled.

One JSON object per line: a request body with ``messages`` (chat) or ``prompt``
(completions). In labelled mode each line also carries the expected answer under a gold field
(``"gold"`` by default): a string, a number, or a list of acceptable answers. The gold field
is removed before the body is sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from promptsieve._errors import ConfigError

__all__ = ["Gold", "body_problem", "gold_problem", "load_samples", "split_gold"]

#: Acceptable answers of one labelled sample.
Gold = tuple[str, ...]


def load_samples(path: str | Path, *, gold_field: str | None = None) -> list[dict[str, Any]]:
    """Read a JSONL file of OpenAI request bodies (``messages`` or ``prompt``).

    ``gold_field``: labelled mode; every line must hold that field (a string, a number or a
    non-empty list of them). Blank lines are skipped; a malformed line, or a line without
    its gold answer, raises ConfigError naming the file and line number.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read samples file {p}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p} is not UTF-8 text (byte {exc.start})") from exc
    samples = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            body = json.loads(line)
        except json.JSONDecodeError as exc:
            msg = f"{p}:{lineno}: not valid JSON ({exc.msg}, column {exc.colno})"
            raise ConfigError(msg) from None
        except ValueError as exc:  # an integer past Python's digit limit (4300 by default)
            reason = str(exc).split("; use sys.", 1)[0]
            raise ConfigError(f"{p}:{lineno}: not valid JSON ({reason})") from None
        problem = body_problem(body)
        if problem is None and gold_field is not None:
            problem = gold_problem(body, gold_field)
        if problem:
            raise ConfigError(f"{p}:{lineno}: {problem}")
        samples.append(body)
    if not samples:
        raise ConfigError(f"{p}: no samples (expected one JSON request body per line)")
    return samples


def body_problem(body: Any) -> str | None:
    """What is wrong with a request body, or None when it can be screened."""
    if not isinstance(body, dict):
        return f"expected a JSON object (a request body), got {type(body).__name__}"
    if "messages" in body:
        msgs = body["messages"]
        if not isinstance(msgs, list) or not msgs:
            return "'messages' must be a non-empty list"
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                return f"messages[{i}] must be an object with a string 'role'"
        return None
    if "prompt" in body:
        if not isinstance(body["prompt"], str):
            return "'prompt' must be a string"
        return None
    return "a request body needs 'messages' (chat) or 'prompt' (completions)"


def gold_problem(body: Mapping[str, Any], gold_field: str) -> str | None:
    """What is wrong with a sample's gold answer, or None."""
    if gold_field not in body:
        return f"no {gold_field!r} field; labelled mode needs the expected answer on every line"
    gold = body[gold_field]
    items = gold if isinstance(gold, list) else [gold]
    if not items or not all(
        isinstance(g, str | int | float) and not isinstance(g, bool) and str(g).strip()
        for g in items
    ):
        return f"{gold_field!r} must be a non-empty string, a number, or a list of them"
    return None


def split_gold(sample: Mapping[str, Any], gold_field: str | None) -> tuple[dict[str, Any], Gold]:
    """``(body to send, acceptable answers)``; the gold field is removed from the body."""
    body = dict(sample)
    if gold_field is None or gold_field not in body:
        return body, ()
    gold = body.pop(gold_field)
    items = gold if isinstance(gold, list) else [gold]
    return body, tuple(str(g) for g in items)
