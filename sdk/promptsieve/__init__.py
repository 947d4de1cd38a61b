"""promptsieve: compress LLM prompts only where the target model was shown to answer the same.

Public names are re-exported here; everything else is private.
"""

from __future__ import annotations

from promptsieve._errors import (
    ConfigError,
    PromptSieveError,
    ScoringError,
    ScoringTimeout,
    StoreError,
    TargetError,
)
from promptsieve.prompt import Message, OpaquePart, Span, TextPart
from promptsieve.tokens import TokenCounter, count_tokens

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Message",
    "OpaquePart",
    "PromptSieveError",
    "ScoringError",
    "ScoringTimeout",
    "Span",
    "StoreError",
    "TargetError",
    "TextPart",
    "TokenCounter",
    "__version__",
    "count_tokens",
]
