"""Demonstration attribution, selection and cleaning, on the LM proxy.

This is the seed paper's own use of proxy explanations ("Revitalizing Black-Box
Interpretability", Liu et al., ACL 2026, arXiv 2505.12509): score each few-shot
demonstration's contribution with Kernel SHAP on a small proxy LM instead of on the target,
then

- *select*: remove the least useful demonstrations first (a ladder over how many are kept,
  confirmed against the target by the sieve's sequential test, see :class:`DemoCompressor`);
- *clean*: remove every demonstration that contributes negatively (poisoned or mislabelled
  examples, see :func:`clean_demos`).

The value of a set ``S`` of demonstrations is the proxy's mean log-probability (nats) of
the answers of a few validation requests, each asked after the demonstrations in ``S``:
``v(S) = mean_j log p_proxy(answer_j | header + demos(S) + query_j)``. The answer is the
gold one when the user supplies it (accuracy) or the target's own answer to the full prompt
(agreement, see :func:`label_with_target`). Shapley values of ``v`` are computed exactly for
``n <= 10`` demonstrations and by Kernel SHAP (Lundberg & Lee 2017) above; the values sum to
``v(all) - v(none)``.

Attribution runs once per task and is cached on disk per (demonstration set, validation set,
format, method, proxy fingerprint, :data:`DEMOS_VERSION`); a cache written by another proxy
or version is never reused. The cache holds values and hashes, never prompt text.

Cost: coalitions are evaluated in lexicographic order so that the proxy's KV cache is shared
along common prefixes (each demonstration is fed once per trie node, each validation query
once per coalition, the queries of one coalition as one batch).

Without an LM proxy (no export, no ``promptsieve[export]``), :class:`HeadDemoScorer` ranks
demonstrations by the MiniLM query head's mean keep-probability: a cheap fallback that can
rank but not attribute (its values are not Shapley values, and cleaning refuses it).
"""

from __future__ import annotations

from promptsieve._demo_attribution import attribute_demos
from promptsieve._demo_clean import CleanReport, clean_demos
from promptsieve._demo_compressor import (
    DemoCompression,
    DemoCompressor,
    demo_ladder,
    remove_demos,
    select_demos,
)
from promptsieve._demo_io import label_with_target, load_demonstrations, load_validation
from promptsieve._demo_scorers import HeadDemoScorer, LMDemoScorer
from promptsieve._demo_types import (
    DEMOS_VERSION,
    CoalitionScorer,
    DemoAttribution,
    DemoAttributionConfig,
    DemoFormat,
    Demonstration,
    ValidationExample,
)

__all__ = [
    "DEMOS_VERSION",
    "CleanReport",
    "CoalitionScorer",
    "DemoAttribution",
    "DemoAttributionConfig",
    "DemoCompression",
    "DemoCompressor",
    "DemoFormat",
    "Demonstration",
    "HeadDemoScorer",
    "LMDemoScorer",
    "ValidationExample",
    "attribute_demos",
    "clean_demos",
    "demo_ladder",
    "label_with_target",
    "load_demonstrations",
    "load_validation",
    "remove_demos",
    "select_demos",
]
