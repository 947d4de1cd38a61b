"""Value functions for demonstration attribution: the ONNX LM proxy (sharing its KV cache
along coalition prefixes) and the MiniLM head's cheap ranking fallback."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from promptsieve._demo_types import DemoFormat, Demonstration, ValidationExample
from promptsieve._errors import ConfigError

__all__ = ["HeadDemoScorer", "LMDemoScorer"]


class LMDemoScorer:
    """:class:`CoalitionScorer` on the ONNX LM proxy, sharing its KV cache along prefixes.

    ``lm=None`` loads :class:`promptsieve.proxy.lm.LMProxy` with ``config`` on first use.
    """

    def __init__(self, lm: Any = None, config: Any = None) -> None:
        self._lm = lm
        self._config = config
        self._lock = threading.Lock()

    @property
    def lm(self) -> Any:
        with self._lock:
            if self._lm is None:
                from promptsieve.proxy.lm import LMProxy

                self._lm = LMProxy.load(self._config)
            return self._lm

    @property
    def fingerprint(self) -> str:
        return f"lm:{self.lm.fingerprint}"

    def values(
        self,
        demos: Sequence[Demonstration],
        validation: Sequence[ValidationExample],
        fmt: DemoFormat,
        coalitions: Sequence[tuple[int, ...]],
    ) -> np.ndarray:
        return self.matrix(demos, validation, fmt, coalitions).mean(axis=1)

    def matrix(
        self,
        demos: Sequence[Demonstration],
        validation: Sequence[ValidationExample],
        fmt: DemoFormat,
        coalitions: Sequence[tuple[int, ...]],
    ) -> np.ndarray:
        """``(len(coalitions), len(validation))`` answer log-probs (nats)."""
        lm = self.lm
        head = lm.encode(fmt.lm_prefix())
        demo_ids = [lm.encode(fmt.lm_demo(d)) for d in demos]
        conts = [
            (lm.encode(fmt.lm_query(v.input)), lm.encode(fmt.render_answer(v.answer)))
            for v in validation
        ]
        bad = [i for i, (_, t) in enumerate(conts) if len(t) == 0]
        if bad:
            raise ConfigError(f"validation answers {bad} are empty: the proxy cannot score them")
        out = np.empty((len(coalitions), len(validation)))
        stack: list[tuple[tuple[int, ...], Any]] = [((), lm.extend(None, head))]
        for i in sorted(range(len(coalitions)), key=lambda j: coalitions[j]):
            c = coalitions[i]
            while c[: len(stack[-1][0])] != stack[-1][0]:
                stack.pop()
            while len(stack[-1][0]) < len(c):
                prefix, state = stack[-1]
                nxt = c[len(prefix)]
                stack.append((c[: len(prefix) + 1], lm.extend(state, demo_ids[nxt])))
            out[i] = lm.score(stack[-1][1], conts)
        return out

    @property
    def tokens_run(self) -> int:
        return int(getattr(self._lm, "tokens_run", 0)) if self._lm is not None else 0


class HeadDemoScorer:
    """The cheap fallback: rank demonstrations by the MiniLM query head, no LM proxy.

    A demonstration's score is its mean keep-probability under the query head with each
    validation input as the question, averaged over inputs, centred on the mean over
    demonstrations. Not a Shapley value; :func:`clean_demos` refuses it.
    """

    def __init__(self, proxy: Any = None) -> None:
        self._proxy = proxy

    @property
    def proxy(self) -> Any:
        if self._proxy is None:
            from promptsieve.proxy import Proxy

            self._proxy = Proxy.load()
        return self._proxy

    @property
    def fingerprint(self) -> str:
        p = self.proxy
        _ = p.scorer_session
        return f"head:{p.scorer_fingerprint}"

    def scores(
        self,
        demos: Sequence[Demonstration],
        validation: Sequence[ValidationExample],
        fmt: DemoFormat,
    ) -> np.ndarray:
        s = np.zeros(len(demos))
        for v in validation:
            for i, d in enumerate(demos):
                out = self.proxy.keep_probs(fmt.render_demo(d), question=v.input)
                s[i] += float(out.keep_probs.mean()) if len(out.keep_probs) else 0.0
        s /= max(1, len(validation))
        return s - s.mean()
