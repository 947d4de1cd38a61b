"""The proxy model (ONNX, onnxruntime) and the scorers built on it.

Importing this package is torch-free; only exporting the ONNX graph on a cache miss needs
``promptsieve[export]``.
"""

from __future__ import annotations

from promptsieve.proxy._runtime import Encoding, Proxy, ProxyConfig, select_providers
from promptsieve.proxy._scores import Scorer, TokenScores
from promptsieve.proxy.attribution import AttributionConfig, AttributionScorer

__all__ = [
    "AttributionConfig",
    "AttributionScorer",
    "Encoding",
    "Proxy",
    "ProxyConfig",
    "Scorer",
    "TokenScores",
    "select_providers",
]
