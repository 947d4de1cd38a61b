"""Head scorer: the request-path scorer, one pass of the scorer graph per window batch.

The scorer graph (``_export.export_scorer_onnx``) is the proxy's first ``layers`` encoder
layers plus a trained query head (``heads/head-v2.safetensors``, trained by
``python -m benchmarks.train_head`` to reproduce the attribution scorer). Scores are
keep-probabilities, ``sigmoid(logit)`` computed inside the graph; the question, when given,
is encoded with the context in the second segment so the scores depend on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from promptsieve.proxy._runtime import Proxy
from promptsieve.proxy._scores import TokenScores

__all__ = ["HeadScorer"]

_VERSION = 1


class HeadScorer:
    """Per-token keep-probabilities in one onnxruntime pass (implements ``Scorer``).

    ``units`` is accepted for the protocol and ignored: the head scores every token and
    ``TokenScores.unit_scores`` averages them over any spans. The token states of the same
    pass come along for the instance guard (``TokenScores.pooled_states``).
    """

    name = "head"

    def __init__(self, proxy: Proxy, config: object | None = None) -> None:
        self.proxy = proxy
        proxy.scorer_session  # noqa: B018 - export/load now, so the fingerprint is known
        blob = f"{proxy.fingerprint}|{proxy.scorer_fingerprint}|{_VERSION}"
        self.fingerprint = hashlib.sha256(blob.encode()).hexdigest()[:16]

    def score(
        self,
        text: str,
        *,
        question: str | None = None,
        units: Sequence[tuple[int, int]] | None = None,
    ) -> TokenScores:
        out = self.proxy.keep_probs(text, question=question, states=True)
        return TokenScores(text, out.offsets, out.keep_probs, self.name, out.states)
