"""A LangChain example selector that keeps the demonstrations the LM proxy finds useful.

``SieveExampleSelector`` plugs into ``FewShotPromptTemplate`` and
``FewShotChatMessagePromptTemplate`` (``example_selector=...``). Attribution (Shapley values
of each example on the ONNX LM proxy, see :mod:`promptsieve.demos`) runs once per example
set, on first use or in :meth:`SieveExampleSelector.prepare`, and is cached on disk; each
``select_examples`` call then only picks from it. The selector holds a
:class:`promptsieve.demos.DemoCompressor` for its examples, so attribution and ranking are
the compressor's. Any failure returns every example (fail
open): a prompt is never broken by the selector.

Modes: ``keep=k`` (an int) keeps the ``k`` most useful examples, ``keep=f`` (a float in
(0, 1]) the most useful ``round(f * n)``, ``keep="clean"`` drops every example that
contributes negatively (poisoned or mislabelled ones; use gold validation answers).
To let a statistical test against the target choose how many to keep, wrap the chat model
(or the OpenAI client) with ``Sieve(compressor=promptsieve.demos.DemoCompressor(...))``:
the demonstrations may then stay in the prompt as text or as human/AI message pairs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.example_selectors import BaseExampleSelector

from promptsieve._errors import ConfigError
from promptsieve.demos import (
    CoalitionScorer,
    DemoAttribution,
    DemoAttributionConfig,
    DemoCompressor,
    DemoFormat,
    Demonstration,
    ValidationExample,
)

__all__ = ["SieveExampleSelector"]

log = logging.getLogger(__name__)


class SieveExampleSelector(BaseExampleSelector):
    """Select few-shot examples by their attribution on the LM proxy.

    Args:
        examples: the example dicts (as for any LangChain selector).
        validation: validation requests, as ``(input, answer)`` pairs, dicts with the same
            keys as the examples, or :class:`promptsieve.demos.ValidationExample`.
        input_key, output_key: the example keys holding the demonstration's input and
            output (default: the first and the last key of the first example).
        keep: an int, a float in (0, 1] or ``"clean"`` (see the module docstring).
        fmt: how the proxy lays the examples out (match your ``example_prompt``).
        config, scorer: passed to the :class:`promptsieve.demos.DemoCompressor` the
            selector holds (and so to :func:`promptsieve.demos.attribute_demos`).

    Raises :class:`promptsieve.ConfigError` for a bad ``keep``, keys missing from an
    example, or no validation request.
    """

    def __init__(
        self,
        examples: Sequence[Mapping[str, Any]],
        validation: Sequence[Any],
        *,
        input_key: str | None = None,
        output_key: str | None = None,
        keep: int | float | str = 0.5,
        fmt: DemoFormat | None = None,
        config: DemoAttributionConfig | None = None,
        scorer: CoalitionScorer | None = None,
    ) -> None:
        self.examples: list[dict[str, Any]] = [dict(e) for e in examples]
        if isinstance(keep, str) and keep != "clean":
            raise ConfigError(f"keep must be an int, a float in (0, 1] or 'clean', got {keep!r}")
        if isinstance(keep, float) and not 0 < keep <= 1:
            raise ConfigError(f"keep as a fraction must be in (0, 1], got {keep}")
        if isinstance(keep, int) and not isinstance(keep, bool) and keep < 1:
            raise ConfigError(f"keep must be at least 1, got {keep}")
        self.keep = keep
        first = self.examples[0] if self.examples else {}
        keys = list(first)
        self.input_key = input_key or (keys[0] if keys else "input")
        self.output_key = output_key or (keys[-1] if keys else "output")
        self.validation = [self._validation(v) for v in validation]
        if len(self.examples) >= 2 and not self.validation:
            raise ConfigError("SieveExampleSelector needs at least one validation request")
        for i, e in enumerate(self.examples):
            self._demo(e, i)
        self.fmt = fmt or DemoFormat()
        self.config = config or DemoAttributionConfig()
        self.scorer = scorer
        self._lock = threading.Lock()
        self._failed = False
        self._compressor = self._new_compressor()

    def _new_compressor(self) -> DemoCompressor:
        return DemoCompressor(self.demonstrations, self.validation, fmt=self.fmt,
                              config=self.config, scorer=self.scorer)  # fmt: skip

    def _demo(self, e: Mapping[str, Any], i: int) -> Demonstration:
        if self.input_key not in e or self.output_key not in e:
            raise ConfigError(
                f"example {i} lacks {self.input_key!r} or {self.output_key!r}: {sorted(e)}"
            )
        return Demonstration(str(e[self.input_key]), str(e[self.output_key]))

    def _validation(self, v: Any) -> ValidationExample:
        if isinstance(v, ValidationExample):
            return v
        if isinstance(v, Mapping):
            d = self._demo(v, -1)
            return ValidationExample(d.input, d.output)
        x, y = v
        return ValidationExample(str(x), str(y))

    @property
    def demonstrations(self) -> list[Demonstration]:
        return [self._demo(e, i) for i, e in enumerate(self.examples)]

    def add_example(self, example: dict[str, str]) -> None:
        """Add an example; the attribution is recomputed (or read from cache) on next use."""
        self._demo(example, len(self.examples))
        with self._lock:
            self.examples.append(dict(example))
            self._compressor, self._failed = self._new_compressor(), False

    def prepare(self) -> DemoAttribution:
        """Compute the attribution now (minutes on CPU at most once per example set)."""
        return self._compressor.prepare()

    @property
    def attribution(self) -> DemoAttribution | None:
        return self._compressor.attribution

    def _kept(self, attr: DemoAttribution, compressor: DemoCompressor) -> list[int]:
        n = attr.n
        if attr.method == "none":
            return list(range(n))
        if self.keep == "clean":
            neg = set(attr.negative())
            return [i for i in range(n) if i not in neg]
        if isinstance(self.keep, float):
            return attr.keep(compressor.keep_count(self.keep))
        return attr.keep(int(self.keep))

    def select_examples(self, input_variables: dict[str, str]) -> list[dict[str, Any]]:
        """The kept examples, in their original order (every example on any failure)."""
        examples = list(self.examples)
        if len(examples) < 2 or self._failed:
            return examples
        try:
            compressor = self._compressor
            attr = compressor.prepare()
            if attr.n != len(examples):  # an example was added meanwhile
                return examples
            return [examples[i] for i in self._kept(attr, compressor)]
        except Exception as exc:  # fail open: the prompt keeps every example
            self._failed = True
            # the type only: a message may quote the user's text (details at DEBUG)
            log.warning(
                "example attribution failed (%s); every example is kept", type(exc).__name__
            )
            log.debug("promptsieve: details", exc_info=exc)
            return examples
