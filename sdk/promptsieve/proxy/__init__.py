"""The proxy model (ONNX, onnxruntime) and the scorers built on it.

Importing this package is torch-free; only exporting the ONNX graph on a cache miss needs
``promptsieve[export]``.
"""

from __future__ import annotations

from promptsieve.proxy._runtime import (
    Encoding,
    Proxy,
    ProxyConfig,
    ScorerOutput,
    default_head_path,
    select_providers,
)
from promptsieve.proxy._scores import Scorer, TokenScores
from promptsieve.proxy.attribution import AttributionConfig, AttributionScorer
from promptsieve.proxy.head_scorer import HeadScorer
from promptsieve.proxy.sentence import SentenceScorer

__all__ = [
    "AttributionConfig",
    "AttributionScorer",
    "Encoding",
    "HeadScorer",
    "Proxy",
    "ProxyConfig",
    "Scorer",
    "ScorerOutput",
    "SentenceScorer",
    "TokenScores",
    "default_head_path",
    "select_providers",
]
