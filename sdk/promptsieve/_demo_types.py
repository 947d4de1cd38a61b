"""The demonstration data types: demonstrations, validation requests, the prompt layout,
the attribution config and result, and the value-function protocol (see
:mod:`promptsieve.demos`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from promptsieve._config_types import check_field_types, check_instance
from promptsieve._errors import ConfigError

__all__ = [
    "DEMOS_VERSION",
    "CoalitionScorer",
    "DemoAttribution",
    "DemoAttributionConfig",
    "DemoFormat",
    "Demonstration",
    "ValidationExample",
]

#: Bump when the value function or the estimators change: older caches are then ignored.
DEMOS_VERSION = 1


@dataclass(frozen=True)
class Demonstration:
    """One few-shot demonstration: an input and its output (answer).

    Raises :class:`ConfigError` when a field is not a string.
    """

    input: str
    output: str

    def __post_init__(self) -> None:
        check_field_types(self)


@dataclass(frozen=True)
class ValidationExample:
    """A validation request and the answer whose log-probability is scored.

    ``answer``: the gold answer (accuracy), or the target's own answer to the full prompt
    (agreement, :func:`label_with_target`).
    """

    input: str
    answer: str

    def __post_init__(self) -> None:
        check_field_types(self)  # Raises ConfigError when a field is not a string


def checked_inputs(
    owner: str, demos: Sequence[Any], validation: Sequence[Any]
) -> tuple[tuple[Demonstration, ...], tuple[ValidationExample, ...]]:
    """``demos`` and ``validation`` as tuples, checked before any model runs.

    Raises :class:`ConfigError` (naming ``owner`` and the index) when an item is not a
    :class:`Demonstration` / :class:`ValidationExample`, or when there are at least two
    demonstrations (something to attribute) and no validation request, or a validation
    answer is empty (the proxy can only score a non-empty answer).
    """
    demos_t, validation_t = tuple(demos), tuple(validation)
    for name, items, cls in (
        ("demos", demos_t, Demonstration),
        ("validation", validation_t, ValidationExample),
    ):
        bad = [i for i, x in enumerate(items) if not isinstance(x, cls)]
        if bad:
            got = type(items[bad[0]]).__name__
            raise ConfigError(
                f"{owner}: {name} {bad} must be {cls.__name__} objects, got {got} "
                f"(promptsieve.demos.{cls.__name__}(...))"
            )
    if len(demos_t) >= 2:
        if not validation_t:
            raise ConfigError(f"{owner} needs at least one validation request with an answer")
        empty = [i for i, v in enumerate(validation_t) if not v.answer.strip()]
        if empty:
            raise ConfigError(
                f"{owner}: validation answers {empty} are empty: "
                "the proxy can only score a non-empty answer"
            )
    return demos_t, validation_t


@dataclass(frozen=True)
class DemoFormat:
    """How demonstrations are laid out in the prompt (the proxy sees the same layout).

    The prompt is ``header + demo(d_1) + ... + demo(d_k) + query(x)`` and the answer follows
    it. ``chat=True``: that prompt is one user turn in Qwen's ChatML template (as an instruct
    target receives it) and the answer is the assistant's reply; ``system`` is the system
    prompt (None: the model's default). Templates use ``{input}``, ``{output}``,
    ``{answer}``.

    ``pairs=True`` (needs ``chat=True``): each demonstration is a user message (its input)
    answered by an assistant message (its output), and the question is the last user
    message, as chat clients send few-shot examples (LangChain's
    ``FewShotChatMessagePromptTemplate``, the OpenAI "few-shot as turns" pattern). The
    ``demo`` and ``query`` templates are then not used, and ``header``, when set, ends the
    system message. The layout changes what an instruct target does with its examples
    (``benchmarks/README.md``: on Qwen2.5-Coder-1.5B-Instruct, demonstrations in one user
    message made it repeat the last label; as message pairs they helped and it followed
    their labels), so score them in the layout the target receives.
    """

    header: str = ""
    demo: str = "Q: {input}\nA: {output}\n\n"
    query: str = "Q: {input}\nA:"
    answer: str = "{answer}"
    chat: bool = True
    system: str | None = None
    pairs: bool = False

    def __post_init__(self) -> None:
        check_field_types(self)  # DemoFormat(header=5) fails here, not when rendering
        for name, fields in (("demo", ("input", "output")), ("query", ("input",))):
            tpl = getattr(self, name)
            for f in fields:
                if "{" + f + "}" not in tpl:
                    raise ConfigError(f"DemoFormat.{name} must contain {{{f}}}, got {tpl!r}")
        if "{answer}" not in self.answer:
            raise ConfigError("DemoFormat.answer must contain {answer}")
        if self.pairs and not self.chat:
            raise ConfigError("DemoFormat(pairs=True) needs chat=True (message pairs are chat)")

    def render_demo(self, d: Demonstration) -> str:
        return self.demo.replace("{input}", d.input).replace("{output}", d.output)

    def render_query(self, text: str) -> str:
        return self.query.replace("{input}", text)

    def render_answer(self, text: str) -> str:
        return self.answer.replace("{answer}", text)

    def render(self, demos: Sequence[Demonstration], query: str) -> str:
        """The user prompt: header, demonstrations in order, query (one user message; with
        ``pairs`` the messages are :meth:`lm_text`'s turns instead)."""
        return self.header + "".join(self.render_demo(d) for d in demos) + self.render_query(query)

    # -- the text a causal LM reads (Qwen's ChatML when ``chat``) -------------------------

    def lm_prefix(self) -> str:
        """Everything before the first demonstration."""
        if not self.chat:
            return self.header
        from promptsieve.proxy.lm import chatml, chatml_turn

        if not self.pairs:
            return chatml(self.system)[0] + self.header
        return chatml(self._pair_system())[0].removesuffix(chatml_turn("user", close=False))

    def lm_demo(self, d: Demonstration) -> str:
        """One demonstration (with ``pairs``: its user and assistant messages)."""
        if not self.pairs:
            return self.render_demo(d)
        from promptsieve.proxy.lm import chatml_turn

        return chatml_turn("user", d.input) + chatml_turn("assistant", d.output)

    def lm_query(self, text: str) -> str:
        """The question, up to where the answer starts."""
        if not self.chat:
            return self.render_query(text)
        from promptsieve.proxy.lm import chatml, chatml_turn

        closing = chatml(self.system)[1]
        if not self.pairs:
            return self.render_query(text) + closing
        return chatml_turn("user", text, close=False) + closing

    def lm_text(self, demos: Sequence[Demonstration], query: str) -> str:
        """The whole prompt as the target's chat template lays it out (``chat``), or as it
        is; the answer (:meth:`render_answer`) follows it."""
        return self.lm_prefix() + "".join(self.lm_demo(d) for d in demos) + self.lm_query(query)

    def messages(self, demos: Sequence[Demonstration], query: str) -> list[dict[str, str]]:
        """The prompt as an OpenAI-style message list, ``[{"role", "content"}, ...]`` (pass it
        as ``messages=`` to a chat API); :meth:`lm_text` is this list through Qwen2.5's chat
        template.

        With ``pairs``: a system message when ``system`` or ``header`` is set (``system``,
        then ``header``, one per line), one user/assistant pair per demonstration, and
        ``query`` as the last user message. Without: a system message when ``system`` is
        set, then one user message, :meth:`render`. Where no system message is sent, Qwen's
        chat template adds its default one, as :meth:`lm_text` does; other templates may not.

        Raises:
            ConfigError: ``chat=False`` (a completion prompt is :meth:`lm_text`, not messages).
        """
        if not self.chat:
            raise ConfigError("DemoFormat.messages needs chat=True; use lm_text() otherwise")
        if not self.pairs:
            head = [{"role": "system", "content": self.system}] if self.system is not None else []
            return [*head, {"role": "user", "content": self.render(demos, query)}]
        system = self._pair_system()
        msgs = [{"role": "system", "content": system}] if system is not None else []
        for d in demos:
            msgs += [
                {"role": "user", "content": d.input},
                {"role": "assistant", "content": d.output},
            ]
        return [*msgs, {"role": "user", "content": query}]

    def _pair_system(self) -> str | None:
        """The system message of the ``pairs`` layout (None: none is sent, and the chat
        template inserts its default, as ``chatml(None)`` does)."""
        return "\n".join(t for t in (self.system or "", self.header.strip()) if t) or None


@dataclass(frozen=True)
class DemoAttributionConfig:
    """How attribution is computed.

    ``method``: "auto" (exact Shapley for ``n <= exact_max``, else Kernel SHAP), "exact" or
    "kernel". ``samples``: Kernel SHAP coalitions (the paper uses 1,000 perturbations).
    ``max_validation``: validation requests used (the first ones). ``cache_dir=None``:
    ``<promptsieve cache>/demos``; ``cache=False`` neither reads nor writes it.
    ``fallback``: when no scorer is given and the LM proxy cannot be loaded (not exported and
    ``promptsieve[export]`` missing, or its GGUF unavailable), rank with the MiniLM head
    (:class:`HeadDemoScorer`) instead of raising. ``lm``: the
    :class:`promptsieve.proxy.lm.LMProxyConfig` of the default scorer (None: its defaults).
    """

    method: Literal["auto", "exact", "kernel"] = "auto"
    samples: int = 1000
    exact_max: int = 10
    seed: int = 0
    max_validation: int = 8
    cache: bool = True
    cache_dir: Path | None = None
    fallback: bool = True
    lm: Any = None

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.samples < 2:
            raise ConfigError("samples must be >= 2")
        if not 1 <= self.exact_max <= 16:
            raise ConfigError("exact_max must be in [1, 16] (2**n coalitions)")
        if self.max_validation < 1:
            raise ConfigError("max_validation must be >= 1")
        if self.lm is not None:  # imported only when given (its module pulls in the export)
            from promptsieve.proxy.lm import LMProxyConfig

            check_instance("DemoAttributionConfig", "lm", self.lm, LMProxyConfig)

    def resolved_method(self, n: int) -> Literal["exact", "kernel"]:
        if self.method == "auto":
            return "exact" if n <= self.exact_max else "kernel"
        return self.method


@dataclass(frozen=True)
class DemoAttribution:
    """Each demonstration's contribution to the value ``v`` (see module docstring).

    ``values[i]``: Shapley value of demonstration ``i`` in nats of mean answer log-prob
    (method "exact" / "kernel"), or the head's centred mean keep-probability (method "head",
    not a Shapley value); all zeros for method "none" (fewer than 2 demonstrations).
    """

    values: tuple[float, ...]
    empty_value: float
    full_value: float
    method: Literal["exact", "kernel", "head", "none"]
    evaluations: int  # coalitions valued on the proxy
    proxy: str  # fingerprint of the scorer (proxy) that produced the values
    key: str  # cache key
    seconds: float
    tokens: int  # proxy tokens run (0 when read from the cache)
    cached: bool = False

    @property
    def n(self) -> int:
        return len(self.values)

    def ranking(self) -> list[int]:
        """Demonstration indices, least useful first (ties: the later one first)."""
        return sorted(range(self.n), key=lambda i: (self.values[i], -i))

    def keep(self, k: int) -> list[int]:
        """Indices of the ``k`` most useful demonstrations, in their original order."""
        k = max(0, min(self.n, k))
        dropped = set(self.ranking()[: self.n - k])
        return [i for i in range(self.n) if i not in dropped]

    def negative(self, margin: float = 0.0) -> list[int]:
        """Indices whose value is below ``-margin`` (they lower the answers' likelihood)."""
        return [i for i, v in enumerate(self.values) if v < -margin]


class CoalitionScorer(Protocol):
    """What attribution needs from a model: values of many demonstration subsets at once.

    ``values`` returns ``(len(coalitions),)`` mean log-probabilities (nats) of the
    validation answers after ``header + demos(S) + query``; each coalition is a sorted tuple
    of demonstration indices. ``fingerprint`` names the model (part of the cache key).
    """

    @property
    def fingerprint(self) -> str: ...

    def values(
        self,
        demos: Sequence[Demonstration],
        validation: Sequence[ValidationExample],
        fmt: DemoFormat,
        coalitions: Sequence[tuple[int, ...]],
    ) -> np.ndarray: ...
