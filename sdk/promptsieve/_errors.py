"""One exception tree, rooted at :class:`PromptSieveError`.

Configuration mistakes raise loudly at construction; on the request path these are
caught and the original prompt goes through (fail open).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "PromptSieveError",
    "ScoringError",
    "ScoringTimeout",
    "StoreError",
    "TargetError",
    "UnsupportedRequest",
]


class PromptSieveError(Exception):
    """Base class of every error promptsieve raises."""


class ConfigError(PromptSieveError, ValueError):
    """Wrong configuration or a missing optional dependency (the message says what to install)."""


class ScoringError(PromptSieveError):
    """The proxy could not score a prompt."""


class ScoringTimeout(ScoringError, TimeoutError):
    """Scoring exceeded its time budget."""


class StoreError(PromptSieveError):
    """The verdict store is unreachable or corrupt."""


class TargetError(PromptSieveError):
    """The target model failed or timed out while screening."""


class UnsupportedRequest(PromptSieveError, ValueError):
    """A (compressed) prompt does not fit the original request's shape, or the request has a
    shape no converter handles. Adapters catch it and send the original request."""


def missing_extra(package: str, extra: str) -> ConfigError:
    """A ConfigError that names the pip command which fixes it."""
    return ConfigError(
        f"{package} is not installed; install it with: pip install 'promptsieve[{extra}]'"
    )
