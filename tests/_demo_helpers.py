"""Shared by the demonstration tests: a real value function on the MiniLM proxy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from promptsieve.demos import DemoFormat, Demonstration, ValidationExample

DEMOS = [
    Demonstration("What is the capital of France?", "Paris"),
    Demonstration("Which planet is known as the red planet?", "Mars"),
    Demonstration("What colour is a ripe banana?", "Yellow"),
    Demonstration("How many legs does a spider have?", "Eight"),
    Demonstration("What is the largest ocean on Earth?", "The Pacific Ocean"),
    Demonstration("Who wrote Romeo and Juliet?", "William Shakespeare"),
    Demonstration("What is the boiling point of water at sea level?", "100 degrees Celsius"),
]
VAL = [
    ValidationExample("What is the capital of Italy?", "Rome"),
    ValidationExample("Which planet is the largest in the solar system?", "Jupiter"),
]
FMT = DemoFormat(header="Answer the question.\n\n", chat=False)


class CosineScorer:
    """A CoalitionScorer on the MiniLM proxy (a real value function; counts its calls)."""

    def __init__(self, proxy: Any, tag: str = "minilm") -> None:
        self.proxy = proxy
        self.tag = tag
        self.calls = 0

    @property
    def fingerprint(self) -> str:
        return f"{self.tag}:{self.proxy.fingerprint}"

    def values(
        self,
        demos: Sequence[Demonstration],
        validation: Sequence[ValidationExample],
        fmt: DemoFormat,
        coalitions: Sequence[tuple[int, ...]],
    ) -> np.ndarray:
        self.calls += 1
        texts = [fmt.render([demos[i] for i in c], v.input) for c in coalitions for v in validation]
        answers = self.proxy.embed([v.answer for v in validation])
        emb = self.proxy.embed(texts).reshape(len(coalitions), len(validation), -1)
        return np.einsum("cvd,vd->cv", emb, answers).mean(axis=1)
