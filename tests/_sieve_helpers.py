"""Small deterministic parts for sieve/adapter tests that are about plumbing, not quality.

``WordDropCompressor`` keeps the first share of each compressible text's words (a real,
if naive, compressor with the CompressorLike interface: no proxy to load).
``ScriptedGate`` answers fixed decisions and records what the sieve reports to it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from promptsieve.fidelity import Action, Decision, VerdictKey
from promptsieve.prompt import COMPRESSIBLE_ROLES, Message, TextPart


@dataclass(frozen=True)
class SimpleCompression:
    prompt: str | tuple[Message, ...]
    changed: bool


class WordDropCompressor:
    fingerprint = "worddrop-v1"

    def __init__(
        self,
        *,
        fail: bool = False,
        delay: float = 0.0,
        similarity_value: float | None = None,
    ) -> None:
        self.fail = fail
        self.delay = delay
        self.similarity_value = similarity_value
        self.calls = 0

    def compress(self, prompt: Any, *, ratio: float | None = None) -> SimpleCompression:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("compressor exploded")
        r = 0.5 if ratio is None else ratio
        if isinstance(prompt, str):
            out = _drop(prompt, r)
            return SimpleCompression(out, out != prompt)
        msgs: list[Message] = []
        changed = False
        for m in prompt:
            if m.role not in COMPRESSIBLE_ROLES:
                msgs.append(m)
                continue
            parts = []
            for p in m.parts:
                if isinstance(p, TextPart) and not p.protected:
                    new = _drop(p.text, r)
                    changed |= new != p.text
                    parts.append(TextPart(new))
                else:
                    parts.append(p)
            msgs.append(m.with_parts(parts) if tuple(parts) != m.parts else m)
        return SimpleCompression(tuple(msgs), changed)

    def similarity(self, a: str, b: str) -> float:
        if self.similarity_value is not None:
            return self.similarity_value
        wa, wb = set(a.split()), set(b.split())
        return len(wa & wb) / max(1, len(wa | wb))


def _drop(text: str, ratio: float) -> str:
    words = text.split(" ")
    if len(words) < 4:
        return text
    keep = max(1, round(len(words) * ratio))
    return " ".join(words[:keep])


class ScriptedGate:
    """Returns ``decision`` for every key; remembers decide() keys and record() calls."""

    def __init__(self, decision: Decision | None = None) -> None:
        self.decision = decision or Decision(Action.BYPASS)
        self.keys: list[VerdictKey] = []
        self.records: list[tuple[VerdictKey, float, bool | None]] = []
        self._lock = threading.Lock()
        self.recorded = threading.Event()

    def decide(self, key: VerdictKey) -> Decision:
        with self._lock:
            self.keys.append(key)
        return self.decision

    def record(self, key: VerdictKey, ratio: float, agreed: bool | None) -> None:
        with self._lock:
            self.records.append((key, ratio, agreed))
        self.recorded.set()


def shadow(ratio: float = 0.5) -> Decision:
    return Decision(Action.SHADOW, ratio=ratio)


def apply(ratio: float = 0.5, monitor: bool = False) -> Decision:
    return Decision(Action.APPLY, ratio=ratio, monitor=monitor)


LONG = (
    "The quarterly report covers revenue growth across all regions and several new product "
    "lines that launched during the period under review by the finance team this year."
)


def long_text(n: int = 1) -> str:
    return " ".join([LONG] * n)


def words(s: str) -> int:
    return len(s.split())


def texts_of(messages: Sequence[dict[str, Any]], role: str) -> list[Any]:
    return [m.get("content") for m in messages if m.get("role") == role]
