"""promptsieve: compress LLM prompts only where the target model was shown to answer the same.

Public names are re-exported here, flat; everything else is private. ``LocalTarget`` (the
embedded Gemma 3 270M server, extra ``local``) is imported on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from promptsieve._context import current_task, task
from promptsieve._errors import (
    ConfigError,
    PromptSieveError,
    StoreError,
    TargetError,
    UnsupportedRequest,
)
from promptsieve._events import ComparisonEvent, RequestEvent, SieveObserver
from promptsieve.compressor import Compression, Compressor, CompressorConfig
from promptsieve.convert import OpenAIRequest, from_openai
from promptsieve.demos import (
    CleanReport,
    CoalitionScorer,
    DemoAttribution,
    DemoAttributionConfig,
    DemoCompression,
    DemoCompressor,
    DemoFormat,
    Demonstration,
    ValidationExample,
    attribute_demos,
    clean_demos,
    label_with_target,
    load_demonstrations,
    load_validation,
)
from promptsieve.fidelity import (
    Action,
    Decision,
    Gate,
    GateConfig,
    HTTPTarget,
    JudgeError,
    LadderTest,
    NoiseFloor,
    NonInferiorityTest,
    RedisStore,
    ScreenConfig,
    ScreenResult,
    SequentialTest,
    SQLiteStore,
    TargetJudge,
    TargetOutput,
    Verdict,
    VerdictKey,
    VerdictState,
    VerdictStore,
    answer_match,
    auto_metric,
    e_bh,
    get_metric,
    load_samples,
    measure_noise_floor,
    noise_floor,
    screen,
    target_judge,
    token_f1,
)
from promptsieve.prompt import Message, OpaquePart, Prompt, Request, Span, TextPart
from promptsieve.proxy import (
    AttributionConfig,
    AttributionScorer,
    Proxy,
    ProxyConfig,
    Scorer,
    TokenScores,
)
from promptsieve.savings import SavingsLedger
from promptsieve.segment import SegmentConfig
from promptsieve.sieve import (
    Call,
    Comparison,
    CompressorLike,
    GateLike,
    Plan,
    Reason,
    Sieve,
    SieveConfig,
    SieveStats,
)
from promptsieve.tokens import TokenCounter, count_tokens

if TYPE_CHECKING:
    from promptsieve.local import LocalTarget, LocalTargetConfig

__version__ = "0.1.0"

__all__ = [
    "Action",
    "AttributionConfig",
    "AttributionScorer",
    "Call",
    "CleanReport",
    "CoalitionScorer",
    "Comparison",
    "ComparisonEvent",
    "Compression",
    "Compressor",
    "CompressorConfig",
    "CompressorLike",
    "ConfigError",
    "Decision",
    "DemoAttribution",
    "DemoAttributionConfig",
    "DemoCompression",
    "DemoCompressor",
    "DemoFormat",
    "Demonstration",
    "Gate",
    "GateConfig",
    "GateLike",
    "HTTPTarget",
    "JudgeError",
    "LadderTest",
    "LocalTarget",
    "LocalTargetConfig",
    "Message",
    "NoiseFloor",
    "NonInferiorityTest",
    "OpaquePart",
    "OpenAIRequest",
    "Plan",
    "Prompt",
    "PromptSieveError",
    "Proxy",
    "ProxyConfig",
    "Reason",
    "RedisStore",
    "Request",
    "RequestEvent",
    "SQLiteStore",
    "SavingsLedger",
    "Scorer",
    "ScreenConfig",
    "ScreenResult",
    "SegmentConfig",
    "SequentialTest",
    "Sieve",
    "SieveConfig",
    "SieveObserver",
    "SieveStats",
    "Span",
    "StoreError",
    "TargetError",
    "TargetJudge",
    "TargetOutput",
    "TextPart",
    "TokenCounter",
    "TokenScores",
    "UnsupportedRequest",
    "ValidationExample",
    "Verdict",
    "VerdictKey",
    "VerdictState",
    "VerdictStore",
    "__version__",
    "answer_match",
    "attribute_demos",
    "auto_metric",
    "clean_demos",
    "count_tokens",
    "current_task",
    "e_bh",
    "from_openai",
    "get_metric",
    "label_with_target",
    "load_demonstrations",
    "load_samples",
    "load_validation",
    "measure_noise_floor",
    "noise_floor",
    "screen",
    "target_judge",
    "task",
    "token_f1",
]


def __getattr__(name: str) -> Any:
    if name in ("LocalTarget", "LocalTargetConfig"):
        from promptsieve import local

        return getattr(local, name)
    raise AttributeError(f"module 'promptsieve' has no attribute {name!r}")
