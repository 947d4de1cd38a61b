"""One exception tree, rooted at :class:`PromptSieveError`.

::

    PromptSieveError
    ├── ConfigError (also ValueError)        bad settings or a missing extra, at construction
    ├── StoreError                           the verdict store is unreachable or corrupt
    ├── TargetError                          the target failed while screening offline
    ├── UnsupportedRequest (also ValueError) a request shape no converter can rebuild
    ├── SieveClosed (``_threads.py``)        the sieve is closed or the process is exiting
    └── JudgeError (``fidelity/judge.py``)   the judge gave no usable verdict

Configuration mistakes raise loudly at construction; on the request path every error is
caught, counted in ``SieveStats.errors`` and the original prompt goes through (fail open).
Scoring timeouts are not raised either: they are counted (``SieveStats.timeouts``).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "PromptSieveError",
    "StoreError",
    "TargetError",
    "UnsupportedRequest",
]


class PromptSieveError(Exception):
    """Base class of every error promptsieve raises."""


class ConfigError(PromptSieveError, ValueError):
    """Wrong configuration or a missing optional dependency (the message says what to install)."""


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
